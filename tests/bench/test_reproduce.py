"""The reproductions of published tables: Hinton et al. 2015 on MNIST (benchmarks/reproduce/
hinton_mnist.py) and the CRD CIFAR-100 recipes (configs/reproduce/cifar100/)."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from kdkit.config import DistillConfig, TrainConfig, apply_overrides, resolve
from kdkit.data import augment_batch, crop, from_arrays
from kdkit.errors import KdkitError
from kdkit.methods import METHODS
from kdkit.models import count_parameters, create_model, list_models

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "configs/reproduce/cifar100"
MNIST = ROOT.parent / "shared/data"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks/reproduce" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the Hinton et al. 2015 architectures -------------------------------------------------------


def test_hinton_teacher_is_784_1200_1200_10_with_dropout():
    model = create_model("hinton-teacher", num_classes=10, in_channels=1, image_size=28)
    assert count_parameters(model) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10  # 2,395,210
    assert model.input_dropout.p == 0.2
    assert [block[2].p for block in model.blocks] == [0.5, 0.5]


def test_hinton_student_is_784_800_800_10_without_regularisation():
    model = create_model("hinton-student", num_classes=10, in_channels=1, image_size=28)
    assert count_parameters(model) == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10  # 1,276,810
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert count_parameters(model) == count_parameters(create_model("mlp-800-800", 10, 1, 28))


# --- the teacher's jitter: translations by at most 2 pixels, zero fill ---------------------------


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: out[i, j] = image[i + dy, j + dx] inside the image, 0 outside, by explicit loops."""
    _, height, width = image.shape
    out = torch.zeros_like(image)
    for i in range(height):
        for j in range(width):
            if 0 <= i + dy < height and 0 <= j + dx < width:
                out[:, i, j] = image[:, i + dy, j + dx]
    return out


def test_crop_is_an_explicit_shift_with_zero_fill():
    image = torch.randint(1, 256, (1, 1, 6, 7), dtype=torch.uint8)  # no zeros: any 0 in the output is fill
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            out = crop(image, torch.tensor([[dy, dx]]), pad=2)[0]
            assert torch.equal(out, shifted(image[0], dy, dx))
            assert int((out == 0).sum()) == 6 * 7 - (6 - abs(dy)) * (7 - abs(dx))


def test_mnist_jitter_moves_each_image_by_at_most_2_pixels():
    from kdkit.data.registry import NAMED

    assert NAMED["mnist"].augment == "crop"
    images = torch.randint(1, 256, (400, 1, 8, 8), dtype=torch.uint8)
    out = augment_batch(images, torch.Generator().manual_seed(0), "crop")
    seen = set()
    for image, moved in zip(images, out):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(moved, shifted(image, dy, dx))]
        assert match, "an output is not a translation of its input by at most 2 pixels with zero fill"
        seen.add(match[0])
    assert len(seen) == 25  # every shift in [-2, 2] x [-2, 2] is drawn


# --- transfer_exclude: the "no 3s" transfer set --------------------------------------------------


@pytest.fixture
def ten_classes():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (400, 1, 4, 4), generator=g, dtype=torch.uint8).numpy()
    y = (torch.arange(400) % 10).numpy()
    return from_arrays(x, y, x[:100], y[:100], val_fraction=0.2)


def test_transfer_set_removes_exactly_the_class_from_train_and_val(ten_classes):
    from kdkit.data.prepare import transfer_set

    data = ten_classes
    kept = transfer_set(data, [3])
    for name in ("train", "val"):
        before, after = getattr(data, name), getattr(kept, name)
        assert 3 not in after.labels.tolist()
        mask = before.labels != 3
        assert torch.equal(after.labels, before.labels[mask]) and torch.equal(after.images, before.images[mask])
        assert torch.equal(after.index, before.index[mask])
    assert kept.test is data.test and kept.classes == data.classes and kept.mean == data.mean
    assert transfer_set(data, []) is data


def test_only_the_distilled_student_trains_without_the_class(tmp_path, digits, monkeypatch):
    import kdkit.recipes as recipes
    from kdkit.recipes import run_distill

    seen = {}
    original = recipes._fit_or_skip

    def spy(method, data, cfg, run_dir, meta, desc, **options):
        seen[Path(run_dir).parent.name if Path(run_dir).name.startswith("seed") else Path(run_dir).name] = data
        return original(method, data, cfg, run_dir, meta, desc, **options)

    monkeypatch.setattr(recipes, "_fit_or_skip", spy)
    cfg = apply_overrides(DistillConfig(), {"dataset": "digits", "teacher": "mlp-32", "student": "mlp-16", "epochs": 1,
                                            "batch_size": 64, "progress": False, "report": False, "amp": "off",
                                            "transfer_exclude": "3", "out": str(tmp_path / "run")})
    summary = run_distill(cfg, digits)
    assert set(seen) == {"teacher", "scratch", "student"}
    for phase in ("teacher", "scratch"):
        assert 3 in seen[phase].train.labels.tolist()
    assert 3 not in seen["student"].train.labels.tolist() and 3 not in seen["student"].val.labels.tolist()
    assert summary["rows"]["student"]["per_seed"][0]["per_class"]["3"]["support"] == int((digits.test.labels == 3).sum())


@pytest.mark.parametrize("value, message", [("10", "classes 0..9"), ("0,1,2,3,4,5,6,7,8,9", "no class")])
def test_transfer_exclude_is_checked_before_training(tmp_path, digits, value, message):
    from kdkit.recipes import run_distill

    cfg = apply_overrides(DistillConfig(), {"dataset": "digits", "teacher": "mlp-32", "student": "mlp-16",
                                            "transfer_exclude": value, "out": str(tmp_path / "run")})
    with pytest.raises(KdkitError, match=message):
        run_distill(cfg, digits)
    assert not (tmp_path / "run/teacher").exists()


# --- the benchmark driver ------------------------------------------------------------------------


def test_soft_plus_hard_maps_onto_alpha_and_lr():
    alpha, lr = _script("hinton_mnist").alpha_and_lr(0.1, 0.05)
    # (1 + w) * ((1 - alpha) * hard + alpha * soft) == soft + w * hard, and the factor goes into lr
    assert (1 + 0.1) * alpha == pytest.approx(1.0) and (1 + 0.1) * (1 - alpha) == pytest.approx(0.1)
    assert lr == pytest.approx(0.055)


def test_best_shift_counts_errors_by_hand():
    import torch

    best_shift = _script("hinton_mnist").best_shift
    # three samples of class 1 whose logit trails class 0's by 0.25, 0.55 and 2.0; one of class 0 leading by 0.5
    logits = torch.tensor([[0.25, 0.0], [0.55, 0.0], [2.0, 0.0], [0.5, 0.0]])
    labels = torch.tensor([1, 1, 1, 0])
    # errors per shift of class 1's logit: 0 -> 3; 0.3 -> 2 (the 0.25 one right); 0.6 -> 1 + 1 (the class-0
    # sample turns wrong past 0.5); 2.1 -> 0 + 1
    assert best_shift(logits, labels, 1, [0.0, 0.3, 0.6, 2.1]) == 2.1
    assert best_shift(logits, labels, 1, [0.0, 0.3, 0.6]) == 0.3  # a tie at 2 errors: the smaller shift
    assert best_shift(logits, labels, 1, [0.0]) == 0.0


def test_quick_mode_runs_every_row_and_writes_the_results(tmp_path):
    hinton = _script("hinton_mnist")
    out = tmp_path / "results.json"
    data_dir = ["--data-dir", str(MNIST)] if (MNIST / "mnist").is_dir() else []
    assert hinton.main(["--quick", "--jobs", "1", "--runs-dir", str(tmp_path / "runs"), "--json", str(out), *data_dir]) == 0
    result = json.loads(out.read_text())["budgets"]["t2-s2-tlr0.02"]
    assert result["missing"] == []
    assert set(result["rows"]) == {"teacher", "scratch", "kd_soft", "kd_soft_hard", "kd_no3", "kd_no3_bias",
                                   "kd_no3_bias_train", "kd_no3_bias_test"}
    for row in result["rows"].values():
        seed = row["per_seed"][0]
        assert 0 <= seed["errors_on_3"] <= seed["errors"] <= result["test_size"]
        assert seed["epochs"] == 2 and seed["train_seconds"] > 0
    # raising class 3's bias can only turn wrong 3s right: never more errors on 3s
    assert result["rows"]["kd_no3_bias"]["per_seed"][0]["errors_on_3"] <= result["rows"]["kd_no3"]["per_seed"][0]["errors_on_3"]
    # the shift chosen on test is the best on test: no fixed or train-chosen shift beats it there
    best = result["rows"]["kd_no3_bias_test"]["per_seed"][0]
    assert best["errors"] <= min(result["rows"][r]["per_seed"][0]["errors"] for r in ("kd_no3", "kd_no3_bias", "kd_no3_bias_train"))
    assert result["rows"]["kd_no3_bias"]["per_seed"][0]["bias_shift"] == 3.5
    config = (tmp_path / "runs/t2-s2/kd_no3-lrkd0.03-tlr0.02/seed0/config.yaml").read_text()  # the lrs name the row
    assert "transfer_exclude:\n- 3" in config


# --- the CIFAR-100 recipes -----------------------------------------------------------------------


PAIRS = ["resnet32x4-resnet8x4", "wrn_40_2-wrn_16_2", "resnet56-resnet20", "resnet110-resnet32", "vgg13-vgg8"]


def test_every_recipe_config_loads_and_names_known_models():
    files = sorted(RECIPES.glob("*.yaml"))
    assert {f.stem for f in files} == set(PAIRS) | {f"teacher-{p.split('-')[0]}" for p in PAIRS}
    for path in files:
        cfg = resolve(TrainConfig if path.stem.startswith("teacher-") else DistillConfig, path)
        assert cfg.dataset == "cifar100" and cfg.epochs == 240 and cfg.batch_size == 64
        assert cfg.milestones == [150, 180, 210] and cfg.weight_decay == 5e-4 and cfg.val_fraction == 0
        for model in (cfg.model,) if path.stem.startswith("teacher-") else (cfg.student,):
            assert model in list_models()
    for pair in PAIRS:
        cfg = resolve(DistillConfig, RECIPES / f"{pair}.yaml")
        teacher = resolve(TrainConfig, RECIPES / f"teacher-{pair.split('-')[0]}.yaml")
        assert cfg.teacher == teacher.out  # each student reads its teacher's run
        assert cfg.feature_scale == "paper"  # the feature methods' raw losses at the papers' weights
        for method in _script("crd_cifar").METHODS:
            assert method in METHODS
            resolve(DistillConfig, RECIPES / f"{pair}.yaml", {"method": method})
