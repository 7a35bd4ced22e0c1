"""Tests for kdkit.evaluate: every metric against scikit-learn or a hand-computed value."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from kdkit import evaluate
from kdkit.errors import KdkitError
from kdkit.evaluate import PeakMemory, agreement, classification_metrics, model_facts, predict_logits


def _random_case(n=200, k=12, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2.0  # (N, K)
    labels = rng.integers(0, k, size=n)  # (N,)
    labels[:k] = np.arange(k)  # every class occurs at least once
    return logits, labels


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _assert_plain_python(value):
    """Only JSON types: no numpy scalars hiding inside."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_plain_python(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain_python(item)
    else:
        assert value is None or type(value) in (float, int, str, bool), type(value)


def _check_against_sklearn(logits, labels, out):
    k = logits.shape[1]
    classes = list(range(k))
    predicted = logits.argmax(axis=1)
    probs = _softmax(logits)
    assert out["n"] == len(labels)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, predicted))
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            labels, predicted, labels=classes, average=average, zero_division=0
        )
        assert out[f"precision_{average}"] == pytest.approx(p)
        assert out[f"recall_{average}"] == pytest.approx(r)
        assert out[f"f1_{average}"] == pytest.approx(f)
    p, r, f, s = skm.precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    for i in classes:
        assert out["per_class"][str(i)] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert out["confusion_matrix"] == skm.confusion_matrix(labels, predicted, labels=classes).tolist()
    assert out["nll"] == pytest.approx(skm.log_loss(labels, probs, labels=classes))
    present = s > 0
    assert out["worst_class_recall"] == pytest.approx(r[present].min())


def test_metrics_match_sklearn_on_random_logits():
    logits, labels = _random_case()
    out = classification_metrics(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels))
    _check_against_sklearn(logits.astype(np.float32).astype(np.float64), labels, out)
    probs = _softmax(logits)
    assert out["top5"] == pytest.approx(skm.top_k_accuracy_score(labels, probs, k=5, labels=list(range(12))))
    assert out["auc"] == pytest.approx(
        skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"), rel=1e-6
    )
    assert out["brier"] == pytest.approx(skm.brier_score_loss(labels, probs, labels=list(range(12))), rel=1e-5)
    _assert_plain_python(out)


def test_class_never_predicted_counts_as_zero_precision():
    logits, labels = _random_case(n=60, k=4, seed=1)
    logits[:, 3] -= 20.0  # class 3 is never predicted: precision 0/0 -> 0.0
    out = classification_metrics(logits, labels, class_names=["a", "b", "c", "d"])
    assert out["per_class"]["d"]["support"] > 0
    assert [row[3] for row in out["confusion_matrix"]] == [0, 0, 0, 0]
    assert out["per_class"]["d"]["precision"] == 0.0
    assert out["per_class"]["d"]["recall"] == 0.0
    assert out["worst_class_recall"] == 0.0 and out["worst_class"] == "d"
    assert "top5" not in out  # only for K >= 10
    out["per_class"] = {str(i): v for i, v in enumerate(out["per_class"].values())}
    _check_against_sklearn(logits, labels, out)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_class_absent_from_labels_gives_no_auc():
    logits, labels = _random_case(n=50, k=4, seed=2)
    labels[labels == 2] = 0  # class 2 never occurs
    out = classification_metrics(logits, labels)
    assert out["auc"] is None and "2" in out["auc_reason"]
    assert out["per_class"]["2"]["support"] == 0
    _check_against_sklearn(logits, labels, out)
    _assert_plain_python(out)


def test_binary_auc_uses_positive_class_probability():
    logits, labels = _random_case(n=80, k=2, seed=3)
    out = classification_metrics(logits, labels)
    assert out["auc"] == pytest.approx(skm.roc_auc_score(labels, _softmax(logits)[:, 1]))
    # Multi-class Brier sums both classes' squared errors: twice sklearn's binary Brier score.
    assert out["brier"] == pytest.approx(2 * skm.brier_score_loss(labels, _softmax(logits)[:, 1]))
    _check_against_sklearn(logits, labels, out)


def test_ece_hand_computed():
    # 15 bins of width 1/15. Confidence and correctness of each sample, and its bin:
    #   A 0.95 correct -> bin (14/15, 1]      } acc 1/2, conf 0.95: 2/4 * 0.45 = 0.225
    #   B 0.95 wrong   -> bin (14/15, 1]      }
    #   C 0.55 correct -> bin (8/15, 9/15]      acc 1,  conf 0.55:  1/4 * 0.45 = 0.1125
    #   D 0.70 wrong   -> bin (10/15, 11/15]    acc 0,  conf 0.70:  1/4 * 0.70 = 0.175
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.30, 0.70]])
    labels = np.array([0, 0, 0, 0])
    out = classification_metrics(np.log(probs), labels)
    assert out["ece"] == pytest.approx(0.225 + 0.1125 + 0.175)
    assert out["accuracy"] == 0.5


def test_perfectly_calibrated_bin_has_zero_ece():
    probs = np.array([[0.75, 0.25]] * 4)  # confidence 0.75, 3 of 4 correct
    out = classification_metrics(np.log(probs), np.array([0, 0, 0, 1]))
    assert out["ece"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("bad", [3, -1])
def test_label_out_of_range_names_label_and_k(bad):
    labels = np.array([0, 1, bad])
    with pytest.raises(KdkitError, match=rf"label {bad} .*K=3"):
        classification_metrics(np.zeros((3, 3)), labels)


def test_bad_inputs_raise_kdkit_error():
    with pytest.raises(KdkitError, match="0 samples"):
        classification_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(KdkitError, match="shape"):
        classification_metrics(np.zeros((4, 3)), np.zeros(3, dtype=int))
    with pytest.raises(KdkitError, match="class_names"):
        classification_metrics(np.zeros((2, 3)), np.array([0, 1]), class_names=["a", "b"])


def test_agreement_matches_float64_reference():
    rng = np.random.default_rng(4)
    teacher, student = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    student[:10] = teacher[:10] * 3.0  # same argmax on at least these rows
    temperature = 2.0
    p, q = _softmax(teacher / temperature), _softmax(student / temperature)
    expected_kl = (p * (np.log(p) - np.log(q))).sum(axis=1).mean()
    expected_top1 = (teacher.argmax(1) == student.argmax(1)).mean()
    out = agreement(torch.tensor(teacher, dtype=torch.float32), student, temperature=temperature)
    assert out["top1_agreement"] == pytest.approx(expected_top1)
    assert out["mean_kl"] == pytest.approx(expected_kl, rel=1e-5)
    assert agreement(teacher, teacher)["mean_kl"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(KdkitError):
        agreement(teacher, student[:, :4])


def test_predict_logits_collects_and_restores_modes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model must stay frozen
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    batches = [(x[:4], y[:4], torch.arange(4)), (x[4:], y[4:])]
    logits, labels = predict_logits(model, batches)
    assert model.training and model[0].training and not model[1].training
    assert logits.shape == (10, 3) and logits.dtype == torch.float32
    assert labels.dtype == torch.int64 and torch.equal(labels, y)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(logits, model(x))


def test_model_facts_tiny_linear():
    model = nn.Sequential(nn.Linear(10, 5))
    model[0].bias.requires_grad_(False)
    facts = model_facts(model, (10,), repeats=3)
    assert facts["parameters"] == 55  # 10 * 5 weights + 5 biases
    assert facts["trainable_parameters"] == 50
    assert facts["flops_per_sample"] == 2 * 10 * 5  # one multiply-add = 2 FLOPs
    size_bytes = facts["size_mb"] * 1e6
    assert 4 * 55 < size_bytes < 4 * 55 + 256  # float32 data plus a small JSON header
    for batch_size in (1, 64):
        assert facts[f"latency_ms_b{batch_size}"] > 0
        assert facts[f"throughput_b{batch_size}"] == pytest.approx(batch_size / facts[f"latency_ms_b{batch_size}"] * 1000)
    assert model.training  # caller's model untouched
    _assert_plain_python(facts)


def test_model_facts_reads_the_sample_rows_it_is_given():
    """Token ids are timed on real rows (padding alone is one token to a model that drops it): each timed
    batch holds the next rows of the sample, cycling; FLOPs are the mean per row of the first 64."""
    seen = []

    class Lengths(nn.Module):  # FLOPs grow with the real tokens of the row: 2 * 3 per non-pad id
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(1, 3)

        def forward(self, ids):
            seen.append(ids.clone())
            real = (ids != 0).sum(dim=1, keepdim=True)  # (B, 1)
            return self.linear(torch.ones(int(real.sum()), 1)).sum(0, keepdim=True).expand(len(ids), 3)

    sample = torch.tensor([[5, 6, 0], [7, 0, 0], [8, 9, 4]])  # 2, 1 and 3 real tokens
    facts = model_facts(Lengths(), (3,), repeats=2, batch_sizes=(2,), sample=sample)
    assert facts["flops_per_sample"] == 2 * 3 * (2 + 1 + 3) // 3
    timed = seen[-2:]  # after the FLOP count and the warm-up
    assert timed[0].tolist() == [[5, 6, 0], [7, 0, 0]] and timed[1].tolist() == [[8, 9, 4], [5, 6, 0]]
    assert all(x.dtype == torch.int64 for x in seen)


def test_model_facts_times_with_one_thread_and_restores_the_count():
    seen = []

    class Probe(nn.Linear):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return super().forward(x)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        facts = model_facts(Probe(4, 2), (4,), repeats=2, batch_sizes=(1,))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert facts["latency_threads"] == 1
    assert seen[1:] == [1] * 5  # 3 warm-up + 2 timed forwards (seen[0] is the FLOP count's)
    assert after == 2


def test_model_facts_tied_weights_saved_once():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight
    facts = model_facts(model, (4,), repeats=1, batch_sizes=(2,))
    assert facts["parameters"] == 16
    untied = model_facts(nn.Sequential(nn.Linear(4, 4, bias=False)), (4,), repeats=1, batch_sizes=(2,))
    assert facts["size_mb"] == untied["size_mb"]  # same single "0.weight" entry
    assert set(facts) >= {"latency_ms_b2", "throughput_b2"}


def test_peak_memory_sees_big_allocation():
    with PeakMemory("cpu") as peak:
        big = torch.ones(20_000_000)  # 80 MB, written so the pages are resident
        del big
    result = peak.result
    assert result["peak_memory_kind"] == "cpu_rss"
    assert result["peak_memory_mb"] > 0
    if "peak_memory_note" not in result:  # the peak was reset at entry: the block's 80 MB shows
        assert result["peak_memory_mb"] - result["start_memory_mb"] > 60
    _assert_plain_python(result)


def test_peak_memory_falls_back_to_lifetime_peak(monkeypatch):
    monkeypatch.setattr(evaluate, "_reset_peak_rss", lambda: False)
    with PeakMemory() as peak:
        pass
    assert peak.result["peak_memory_mb"] > 0
    assert "lifetime" in peak.result["peak_memory_note"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_memory_cuda():
    with PeakMemory("cuda") as peak:
        big = torch.ones(10_000_000, device="cuda")  # 40 MB
        del big
    assert peak.result["peak_memory_kind"] == "cuda_allocated"
    assert peak.result["peak_memory_mb"] - peak.result["start_memory_mb"] >= 40 - 1e-6


def test_a_training_checkpoint_is_named_as_such(tmp_path, digits, tiny):
    """checkpoints/state-NNNNNN.safetensors has a sidecar, but it describes a training position,
    not a model: evaluate and export say so and point at the run's weights (issue 20)."""
    from kdkit.config import TrainConfig, apply_overrides
    from kdkit.recipes import run_train
    from kdkit.weights import load_model
    from test_cli import kdkit, one_line_error

    run = tmp_path / "run"
    run_train(apply_overrides(TrainConfig(), tiny | {"model": "mlp", "epochs": 1}), digits)
    state = sorted((run / "checkpoints").glob("state-*.safetensors"))[-1]
    assert state.with_suffix(".json").is_file()
    pattern = (rf"'{state}' is a training checkpoint \(the state --resume continues from\), not model weights; "
               rf"use best.safetensors or last.safetensors of the run '{run}'")
    with pytest.raises(KdkitError, match=pattern):
        load_model(state)
    one_line_error(kdkit("evaluate", state), pattern)
