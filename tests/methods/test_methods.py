"""The conformance suite: every method in METHODS (and a composite) on kdkit's models and on a user
model given only by layer names. Loss values are checked against references in the per-loss tests
(test_losses, test_dkd, test_dist, test_feature_losses); here, the contract every method keeps."""
import pytest
import torch
from torch import nn

from kdkit.errors import KdkitError
from kdkit.methods import METHODS, Composite, create_method, defaults_of, hyperparameters_of
from kdkit.methods.base import Method
from kdkit.models import create_model

SHAPE = (1, 8, 8)
ALL = list(METHODS) + ["kd+fitnet", "dkd+at+crd"]


class UserNet(nn.Module):
    """A model kdkit knows nothing about: no feature_modules, features only inside a Sequential."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, x):
        return self.head(self.body(x))


def pair(kind: str):
    torch.manual_seed(0)
    if kind == "kdkit":
        return create_model("cnn", 10, 1, 8), create_model("cnn-tiny", 10, 1, 8), {}
    layers = {"student_layers": ["body.2", "body.4"], "teacher_layers": ["body.2", "body.4"]}
    return UserNet(32), UserNet(4), layers


def build(name, teacher, student, layers):
    kwargs = {"input_shape": SHAPE, "num_train": 64, "class_counts": [50, 30, 20, 10, 8, 6, 4, 3, 2, 1]} | layers
    known = set(hyperparameters_of(name)) | {"input_shape", "num_train", "class_counts"}
    return create_method(name, student, teacher, **{k: v for k, v in kwargs.items() if k in known})


def batch(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g), torch.arange(n)


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("kind", ["kdkit", "user"])
@pytest.mark.parametrize("name", ALL)
def test_method_contract(name, kind):
    teacher, student, layers = pair(kind)
    method = build(name, teacher, student, layers)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    x, y, index = batch()
    method.train()
    declared = {}  # the (weight, value) terms the method returns to the shared forward
    if type(method).forward is Method.forward:
        terms = method.terms
        method.terms = lambda *args: declared.update(terms(*args)) or dict(declared)
    out = method(x, y, index)
    assert torch.isfinite(out["loss"]) and out["logits"].shape == (16, 10)
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    # the teacher: no gradients, weights and BatchNorm statistics unchanged bit for bit, still in eval mode
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    if method.needs_teacher:  # (ce and dml ignore the teacher they are given)
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    # the student gets gradients; the teacher's parameters are not among the method's
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in method.parameters()}
    assert hooks(student) == 0 and hooks(teacher) == 0
    # every part is logged and the loss is their weighted sum (dml, its own forward: four parts of weight 1)
    parts = [k for k in out if k not in ("loss", "logits")]
    assert parts and all(torch.isfinite(out[k]) for k in parts)
    weights = {k: w for k, (w, _) in declared.items()} if declared else dict.fromkeys(parts, 1.0)
    assert set(weights) == set(parts)
    expected = sum(float(weights[k]) * out[k].double() for k in parts if weights[k] != 0)
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", [n for n in METHODS if n not in ("ce", "dml")])
def test_method_state_dict_holds_no_teacher_and_adapters_train(name):
    teacher, student, layers = pair("kdkit")
    method = build(name, teacher, student, layers)
    keys = method.state_dict().keys()
    assert not any(k.startswith("teacher.") for k in keys)
    extra = [n for n, _ in method.named_parameters() if not n.startswith("student.")]
    x, y, index = batch()
    method(x, y, index)["loss"].backward()
    for n, p in method.named_parameters():
        if n in extra:
            assert p.grad is not None, f"adapter parameter {n} got no gradient"


def test_loss_is_the_weighted_sum_of_the_logged_parts():
    teacher, student, _ = pair("kdkit")
    method = create_method("kd+fitnet", student, teacher, input_shape=SHAPE, alpha=0.7, temperature=2.0, feature_weight=10.0)
    x, y, index = batch()
    out = method(x, y, index)
    assert set(out) == {"loss", "logits", "ce", "kd", "hint"}
    # CE once, with KD's 1 - alpha; the hint over its first value (feature_scale=first_step): 10 at the first step
    assert out["loss"].item() == pytest.approx((0.3 * out["ce"] + 0.7 * out["kd"] + 10.0).item(), rel=1e-6)
    assert isinstance(method, Composite)
    paper = create_method("kd+fitnet", student, teacher, input_shape=SHAPE, alpha=0.7, temperature=2.0, feature_weight=0.5,
                          feature_scale="paper")
    out = paper(x, y, index)
    expected = 0.3 * out["ce"] + 0.7 * out["kd"] + 0.5 * 100.0 * out["hint"]  # the raw hint at FitNets' weight 100
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["fitnet", "at", "sp", "rkd", "pkt", "nst", "crd", "vector"])
def test_feature_scale_first_step_divides_by_the_first_value(name):
    """first_step: the feature term is w * L / L_0, L_0 the first step's value, kept as a buffer that
    state_dict holds (so a resumed run divides by the same number); paper: w * paper_weight * L."""
    teacher, student, _ = pair("kdkit")
    method = build(name, teacher, student, {})
    method.feature_weight = 3.0
    assert torch.isnan(method.first_value.value)
    method(*batch())
    first = method.first_value.value.item()
    assert first > 0 and "first_value.value" in method.state_dict()
    declared = {}
    terms = method.terms
    method.terms = lambda *args: declared.update(terms(*args)) or dict(declared)
    out = method(*batch(24))  # another batch: the same L_0
    assert method.first_value.value.item() == first
    key = next(k for k in ("hint", "at", "sp", "distance", "pkt", "nst", "crd", "vector") if k in out)
    if name == "rkd":  # one L_0 for the weighted sum of both parts
        assert float(declared["distance"][0]) == pytest.approx(3.0 * 25.0 / first, rel=1e-6)
        assert float(declared["angle"][0]) == pytest.approx(3.0 * 50.0 / first, rel=1e-6)
    else:
        assert float(declared[key][0]) == pytest.approx(3.0 / first, rel=1e-6)
    method.feature_scale = "paper"
    assert method.feature_term_weight(out[key]) == 3.0 * type(method).paper_weight


def test_pkt_at_paper_scale_is_repdistillers_loss_times_30000():
    """feature_scale=paper: PKT's term is RepDistiller's criterion (a float64 numpy transcription of its
    formula, tests/losses) on the pooled embeddings, times RepDistiller's weight 30000."""
    from test_feature_losses import np_pkt

    from kdkit.adapters import pool

    teacher, student, _ = pair("kdkit")
    method = create_method("pkt", student, teacher, input_shape=SHAPE, feature_scale="paper").eval()
    x, y, index = batch(32)
    out = method(x, y, index)
    s, t = method.run_student(x), method.run_teacher(x)
    (f_s, f_t), = method.pairs(s, t)
    want = 30000.0 * np_pkt(pool(f_s).detach().double().numpy(), pool(f_t).double().numpy())
    assert (out["loss"] - out["ce"]).item() == pytest.approx(want, rel=1e-4)


def test_first_value_skips_zero_and_non_finite_values():
    from kdkit.methods.features import FirstValue

    first = FirstValue()
    assert first(torch.tensor(0.0)).item() == 1.0 and torch.isnan(first.value)  # features already equal: not yet
    assert first(torch.tensor(float("nan"))).item() == 1.0 and torch.isnan(first.value)
    assert first(torch.tensor(0.25)).item() == 0.25
    assert first(torch.tensor(4.0)).item() == 0.25  # kept from then on
    restored = FirstValue()
    restored.load_state_dict(first.state_dict())
    assert restored(torch.tensor(9.0)).item() == 0.25


def test_composite_registers_the_student_once():
    teacher, student, _ = pair("kdkit")
    method = create_method("fitnet+crd", student, teacher, input_shape=SHAPE, num_train=64)
    names = list(method.state_dict())
    assert sum(k.startswith("student.") for k in names) == len(student.state_dict())
    assert any(k.startswith("fitnet_regressors") for k in names) and any(k.startswith("crd_crd") for k in names)


def test_fitnet_two_stages():
    teacher, student, _ = pair("kdkit")
    method = create_method("fitnet", student, teacher, input_shape=SHAPE, hint_epochs=1.0, alpha=0.5, feature_weight=2.0)
    assert method.student_layers == ["stage2"] and method.teacher_layers == ["stage2"]
    x, y, index = batch()
    method.epoch = 0.5  # stage 1: the hint alone trains the student up to the guided layer
    out = method(x, y, index)
    assert out["loss"].item() == pytest.approx(2.0, rel=1e-6)  # the hint over its first value, times 2
    out["loss"].backward()
    assert student.fc.weight.grad is None and student.stage1[0].weight.grad is not None
    method.epoch = 1.0  # stage 2: KD
    out = method(x, y, index)
    assert out["loss"].item() == pytest.approx((0.5 * out["ce"] + 0.5 * out["kd"]).item(), rel=1e-6)


def test_default_layer_picks():
    teacher, student, _ = pair("kdkit")
    assert create_method("at", student, teacher, input_shape=SHAPE).student_layers == ["stage1", "stage2"]
    assert create_method("rkd", student, teacher, input_shape=SHAPE).teacher_layers == ["hidden"]
    vector = create_method("vector", student, teacher, input_shape=SHAPE)
    assert vector.student_layers == ["stage1", "stage2", "hidden"]
    # slices of the concatenated vector: 8 + 16 + 32 pooled channels on the student side
    assert vector.segments["student"] == [("stage1", 0, 8), ("stage2", 8, 24), ("hidden", 24, 56)]


def test_dml_trains_the_peer_and_saves_only_the_student():
    torch.manual_seed(0)
    student = create_model("cnn-tiny", 10, 1, 8)
    method = create_method("dml", student)
    x, y, index = batch()
    out = method(x, y, index)
    out["loss"].backward()
    assert all(p.grad is not None for p in method.peer.parameters())
    expected = out["ce"] + out["mutual"] + out["peer_ce"] + out["peer_mutual"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert not torch.equal(method.peer.fc.weight, student.fc.weight)  # a fresh initialisation


def test_errors_are_one_line_and_helpful():
    teacher, student, _ = pair("kdkit")
    with pytest.raises(KdkitError, match="did you mean 'fitnet'"):
        create_method("fitnte", student, teacher)
    with pytest.raises(KdkitError, match="closest: stage2"):
        create_method("fitnet", student, teacher, input_shape=SHAPE, student_layers=["stage_2"], teacher_layers=["stage2"])
    with pytest.raises(KdkitError, match="2 student layers .* but 1 teacher"):
        create_method("at", student, teacher, input_shape=SHAPE, student_layers=["stage1", "stage2"], teacher_layers=["stage2"])
    with pytest.raises(KdkitError, match="no hyper-parameter 'temprature'; did you mean 'temperature'"):
        create_method("kd", student, teacher, temprature=4.0)
    with pytest.raises(KdkitError, match="does not list its stage outputs"):
        create_method("at", UserNet(4), UserNet(8), input_shape=SHAPE)
    with pytest.raises(KdkitError, match="cannot be composed"):
        create_method("kd+dml", student, teacher)
    with pytest.raises(KdkitError, match="needs a teacher"):
        create_method("kd", student)


def test_defaults_of_a_composite_take_each_parts_own():
    defaults = defaults_of("kd+at")
    assert defaults["temperature"] == 4.0 and defaults["feature_weight"] == 1.0 and defaults["feature_scale"] == "first_step"
    assert defaults_of("dist+fitnet")["temperature"] == 1.0 and defaults_of("fitnet+dist")["temperature"] == 4.0
    assert defaults_of("at+kd")["alpha"] == 0.9


def test_composite_moves_its_parts_buffers():
    teacher, student, _ = pair("kdkit")
    method = create_method("bkd+at", student, teacher, input_shape=SHAPE, class_counts=[5] * 10)
    method.to(torch.float64)
    assert method.parts["bkd"].class_weights.dtype == torch.float64
    assert next(student.parameters()).dtype == torch.float64


def test_capabilities_come_from_the_method_classes():
    """What the recipes and the tuner ask of a method, answered by its class (no name tested in an if)."""
    from types import SimpleNamespace

    from kdkit.methods import needs_peer, used_hyperparameters

    assert [name for name in METHODS if needs_peer(name)] == ["dml"] and needs_peer("kd+dml") and not needs_peer("kd")
    one_stage, two_stage = SimpleNamespace(hint_epochs=0.0), SimpleNamespace(hint_epochs=2.0)
    assert set(hyperparameters_of("fitnet")) - set(used_hyperparameters("fitnet", one_stage)) == {"temperature", "alpha"}
    assert used_hyperparameters("fitnet", two_stage) == hyperparameters_of("fitnet")
    assert used_hyperparameters("kd+fitnet", one_stage) == hyperparameters_of("kd+fitnet")  # kd reads them
    assert all(used_hyperparameters(name, one_stage) == hyperparameters_of(name) for name in METHODS if name != "fitnet")


HARD_LABEL_TERMS = ("ce", "distiller", "peer_ce")  # the terms that read labels (vector's head, dml's peer)


@pytest.mark.parametrize("name", ALL)
def test_unlabelled_samples_never_reach_a_hard_label_term(name):
    """Samples marked UNLABELED: the hard-label terms are plain CE over the labelled samples only; every
    other term is what it is when those samples carry the teacher's predicted class (the one DKD's and
    BKD's class-dependent terms use); gradients are finite, and a batch without labels is fine. (In eval
mode, so BatchNorm does not make a sample's logits depend on the rest of its batch.)"""
    from kdkit.losses.labels import UNLABELED

    x, y, index = batch()
    hidden = y.clone()
    hidden[::3] = UNLABELED
    labelled = hidden != UNLABELED
    teacher, student, layers = pair("kdkit")
    out = build(name, teacher, student, layers).eval()(x, hidden, index)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    if "ce" in out and name in ("kd", "dkd", "dist", "fitnet", "at", "crd"):  # plain CE, written out
        expected = torch.nn.functional.cross_entropy(out["logits"].detach()[labelled].float(), y[labelled])
        assert out["ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    teacher, student, layers = pair("kdkit")  # the same models and adapters, on the labelled samples alone
    alone = build(name, teacher, student, layers).eval()(x[labelled], y[labelled], index[labelled])
    for term in set(HARD_LABEL_TERMS) & set(out):
        assert out[term].item() == pytest.approx(alone[term].item(), rel=1e-5), term
    teacher, student, layers = pair("kdkit")  # the same models and adapters again
    with torch.no_grad():
        predicted = torch.where(labelled, hidden, teacher.eval()(x).argmax(1))
    known = build(name, teacher, student, layers).eval()(x, predicted, index)
    for term in set(out) - set(HARD_LABEL_TERMS) - {"loss", "logits"}:
        assert torch.equal(out[term], known[term]), term
    teacher, student, layers = pair("kdkit")
    none = build(name, teacher, student, layers).eval()(x, torch.full_like(y, UNLABELED), index)
    assert torch.isfinite(none["loss"]) and all(none[t].item() == 0.0 for t in set(HARD_LABEL_TERMS) & set(none))


@pytest.mark.parametrize("name", ALL)
def test_every_hard_label_term_takes_the_mixed_target(name):
    """On a mixed batch (fit sets `method.mixing`), every hard-label term is lam * (the term with the
    samples' own labels) + (1 - lam) * (the term with the partners' labels), checked with one lam for
    the batch (per-sample lams: tests/losses/test_label_losses.py); every other term is the one of a
    batch labelled with the larger share's labels, here the partners' (lam < 1/2), as DKD's and BKD's
    class-dependent terms take them. In eval mode, so BatchNorm sees the same batch every run."""
    from kdkit.data.mix import Mixing

    x, y, index = batch()
    partner = torch.roll(index, 3)
    other = (y + 1 + torch.arange(16) % 9) % 10  # a different class for every sample
    runs = {}
    for key, labels in (("own", y), ("partner", other)):
        teacher, student, layers = pair("kdkit")
        runs[key] = build(name, teacher, student, layers).eval()(x, labels, index)
    teacher, student, layers = pair("kdkit")
    method = build(name, teacher, student, layers).eval()
    method.mixing = Mixing(partner, other, torch.full((16,), 0.3))
    mixed = method(x, y, index)
    terms = set(HARD_LABEL_TERMS) & set(mixed)
    assert terms
    for term in terms:
        expected = 0.3 * runs["own"][term].double() + 0.7 * runs["partner"][term].double()
        assert mixed[term].item() == pytest.approx(expected.item(), rel=1e-5), term
        assert mixed[term].item() != pytest.approx(runs["own"][term].item(), rel=1e-3), term
    for term in set(mixed) - set(HARD_LABEL_TERMS) - {"loss", "logits"}:
        assert torch.equal(mixed[term], runs["partner"][term]), term


@pytest.mark.parametrize("balance", ["class_balanced", "balanced_softmax", "logit_adjusted"])
def test_balanced_cross_entropy_takes_the_mixed_target(balance):
    """The scratch student's and a teacher's long-tail losses on a mixed batch: lam L(y) + (1 - lam) L(y')."""
    from kdkit.data.mix import Mixing

    x, y, index = batch()
    other = (y + 3) % 10
    counts = [50, 30, 20, 10, 8, 6, 4, 3, 2, 1]
    method = create_method("ce", create_model("cnn-tiny", 10, 1, 8), balance=balance, tau=0.5, class_counts=counts).eval()
    own, partner = method(x, y, index)["ce"], method(x, other, index)["ce"]
    method.mixing = Mixing(index, other, torch.full((16,), 0.3))
    assert method(x, y, index)["ce"].item() == pytest.approx((0.3 * own + 0.7 * partner).item(), rel=1e-5)
