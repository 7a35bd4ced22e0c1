"""Teacher-output cache (offline KD), augmentation replay, the vectorised augmentation against a
per-sample reference, and the fast-path pieces of fit (compile, steady-state throughput) on CPU."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdkit.config import DistillConfig, apply_overrides
from kdkit.data import BatchLoader, from_arrays
from kdkit.data.augment import PADDING, apply, augment_batch, draw
from kdkit.data.loader import seeded_generator
from kdkit.errors import KdkitError
from kdkit.losses import kd_loss
from kdkit.methods import create_method
from kdkit.recipes import run_distill
from kdkit.taps import Taps
from kdkit.teachers.cache import TeacherCache


def _data(n=96, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g).numpy()
    y = (torch.arange(n) % classes).numpy()
    return from_arrays(x, y, x[:32], y[:32], val_fraction=0.25, augment="crop_flip")


def build_teacher(classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, classes)).eval()


def _reference_augment(images: torch.Tensor, params: torch.Tensor, augment: str) -> torch.Tensor:
    """One image at a time, by padding and slicing (the textbook random crop + flip)."""
    out = []
    for image, (dy, dx, f) in zip(images, params.tolist()):
        if augment in PADDING:
            p = PADDING[augment]
            padded = F.pad(image, (p, p, p, p))
            h, w = image.shape[1:]
            image = padded[:, p + dy:p + dy + h, p + dx:p + dx + w]
        if augment in ("flip", "crop_flip") and f:
            image = image.flip(2)
        out.append(image)
    return torch.stack(out)


@pytest.mark.parametrize("augment", ["crop", "crop_flip", "flip"])
def test_vectorised_augmentation_matches_a_per_sample_reference(augment):
    images = torch.randint(0, 256, (64, 3, 9, 7), dtype=torch.uint8)
    params = draw(64, seeded_generator(1, 2), augment)
    assert torch.equal(apply(images, params, augment), _reference_augment(images, params, augment))
    # draw + apply is what augment_batch does with the same generator state
    assert torch.equal(augment_batch(images, seeded_generator(1, 2), augment), apply(images, params, augment))
    assert params[:, :2].abs().max() <= PADDING.get(augment, 0)


def test_recorded_views_replay_identical_tensors():
    data = _data()
    views = torch.stack([draw(len(data.train), seeded_generator(5, k), "crop_flip") for k in range(3)])  # (K, N, 3)
    make = lambda seed: BatchLoader(data.train, 16, shuffle=True, seed=seed, augment="crop_flip", views=views)  # noqa: E731
    first, other = make(0), make(7)
    first.set_epoch(1)
    other.set_epoch(4)  # another order (another seed and epoch) but the same slot: 4 % 3 == 1
    seen = {}
    for x, _, idx in first:
        seen.update({int(i): row for i, row in zip(idx, x)})
    for x, _, idx in other:
        for i, row in zip(idx, x):
            assert torch.equal(seen[int(i)], row)  # each sample is the same view in both
    # and that view is the recorded one applied to the raw image
    raw = data.train.images[:5]
    expected = apply(raw, views[1, :5], "crop_flip").float() * (1 / 255)  # as the loader scales
    assert torch.equal(seen[0], expected[0]) and torch.equal(seen[4], expected[4])


def _build(tmp_path, teacher, data, **kw):
    settings = dict(augment="crop_flip", views=3, seed=0, mean=data.mean, std=data.std, dtype="float32", log=lambda m: None)
    return TeacherCache.build(teacher, data.train, tmp_path / "cache", **(settings | kw))


def _side_by_side(online, offline, cache, data, epochs=4, channels_last=False):
    """Each epoch (slots 0, 1, 2, 0 for 3 views), the whole train split as one batch of the slot's
    recorded views through both methods: yields their outputs."""
    loader = BatchLoader(data.train, len(data.train), shuffle=False, augment="crop_flip", mean=data.mean, std=data.std,
                         views=cache.views, channels_last=channels_last)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        cache.set_epoch(epoch)
        offline.epoch = online.epoch = epoch
        (x, y, idx), = list(loader)
        yield online(x, y, idx), offline(x, y, idx)


def test_cached_kd_loss_equals_online_kd_loss_bitwise(tmp_path):
    data, teacher = _data(), build_teacher()
    cache = _build(tmp_path, teacher, data, batch_size=len(data.train))
    student = build_teacher(seed=1)
    online = create_method("kd", student, teacher, temperature=4.0, alpha=0.9)
    offline = create_method("kd", student, cache, temperature=4.0, alpha=0.9)
    for a, b in _side_by_side(online, offline, cache, data):
        assert torch.equal(a["loss"], b["loss"]) and torch.equal(a["kd"], b["kd"])


def test_cache_in_a_shuffled_epoch_serves_each_samples_own_view(tmp_path):
    data, teacher = _data(), build_teacher()
    cache = _build(tmp_path, teacher, data, dtype="float16")
    loader = BatchLoader(data.train, 16, shuffle=True, seed=3, augment="crop_flip", mean=data.mean, std=data.std,
                         views=cache.views)
    loader.set_epoch(5)
    cache.set_epoch(5)
    for x, _, idx in loader:
        with torch.no_grad():
            torch.testing.assert_close(cache(x, idx), teacher(x), rtol=2e-3, atol=2e-3)  # float16 storage


def test_topk_cache_keeps_the_top_classes_and_the_rest_mass(tmp_path):
    data, teacher = _data(classes=4), build_teacher(classes=4)
    cache = _build(tmp_path, teacher, data, topk=2, augment="none")
    (x, _, idx), = BatchLoader(data.train, len(data.train), shuffle=False, mean=data.mean, std=data.std)
    with torch.no_grad():
        exact = torch.log_softmax(teacher(x), 1).numpy().astype(np.float64)  # (N, 4)
    got = cache(x, idx).numpy()
    for row, ref in zip(got, exact):
        top = np.argsort(-ref)[:2]
        np.testing.assert_allclose(row[top], ref[top], atol=2e-3)  # float16 log-probabilities
        rest = [c for c in range(4) if c not in top]
        share = (1 - np.exp(ref[top]).sum()) / 2
        np.testing.assert_allclose(np.exp(row[rest]), [share, share], rtol=1e-4, atol=1e-6)
    assert np.allclose(np.exp(got).sum(1), 1, atol=5e-3)


def test_cache_is_reused_only_when_nothing_changed(tmp_path):
    data, teacher = _data(), build_teacher()
    first = _build(tmp_path, teacher, data)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    again = _build(tmp_path, teacher, data)
    assert again.path == first.path and len(calls) == 1  # only the shape probe ran
    with torch.no_grad():
        teacher[1].weight.add_(0.01)  # another teacher -> another cache
    assert _build(tmp_path, teacher, data).path != first.path
    assert _build(tmp_path, build_teacher(), data, views=2).path != first.path
    (first.path / "meta.json").unlink()  # a build cut off before it finished
    rebuilt = _build(tmp_path, build_teacher(), data)
    assert rebuilt.path == first.path and (rebuilt.path / "meta.json").is_file()
    with pytest.raises(KdkitError, match="cache_topk must be in 0..3"):
        _build(tmp_path, teacher, data, topk=4)


def test_cached_kd_through_the_pipeline(tmp_path, digits):
    base = {"dataset": "digits", "teacher": "mlp-64", "student": "mlp-32", "epochs": 3, "teacher_epochs": 3, "lr": 0.1,
            "batch_size": 64, "progress": False, "out": str(tmp_path / "run"), "amp": "off", "report": False,
            "augment": "flip", "teacher_cache": True, "cache_views": 2, "baseline": False}
    summary = run_distill(apply_overrides(DistillConfig(), base), digits)
    fit = json.loads((tmp_path / "run/student/seed0/fit.json").read_text())
    assert summary["rows"]["student"]["metrics"]["accuracy"]["mean"] > 0.75  # online KD: 0.85, teacher 0.89
    caches = list((tmp_path / "run/teacher_cache").iterdir())
    assert len(caches) == 1 and json.loads((caches[0] / "meta.json").read_text())["views"] == 2
    assert fit["train_images_per_second"] > 0
    # a second student of the same run reuses the cache (same teacher, data, views, seed)
    base |= {"out": str(tmp_path / "run"), "student": "mlp-16"}
    run_distill(apply_overrides(DistillConfig(), base), digits)
    assert len(list((tmp_path / "run/teacher_cache").iterdir())) == 1


def test_teacher_cache_refuses_feature_methods_before_training(tmp_path, digits):
    cfg = apply_overrides(DistillConfig(), {"dataset": "digits", "teacher": "cnn-tiny", "method": "fitnet",
                                            "teacher_cache": True, "out": str(tmp_path / "run"), "progress": False})
    with pytest.raises(KdkitError, match="method fitnet needs more than the teacher's logits and pooled features"):
        run_distill(cfg, digits)
    with pytest.raises(KdkitError, match="--teacher sklearn:logistic,cnn-tiny is not one torch model"):
        run_distill(apply_overrides(cfg, {"method": "kd", "teacher": "sklearn:logistic,cnn-tiny"}), digits)
    assert not (tmp_path / "run/teacher").exists() and not (tmp_path / "run/teacher2").exists()


def test_compile_runs_on_cpu(tmp_path):
    from kdkit.train import fit

    data = _data()
    cfg = apply_overrides(DistillConfig(), {"epochs": 1, "batch_size": 16, "progress": False, "amp": "off",
                                            "compile": "reduce-overhead", "out": str(tmp_path)})  # CUDA graphs: skipped on CPU
    method = create_method("kd", build_teacher(seed=1), build_teacher(), temperature=4.0, alpha=0.9)
    result = fit(method, data, cfg, tmp_path)
    assert hasattr(method.student, "_compiled_call_impl") and method.student._compiled_call_impl is not None
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():  # the compiled student computes what its eager forward computes
        torch.testing.assert_close(method.student.eval()(x), method.student.forward(x), rtol=1e-4, atol=1e-4)
    assert result.train_images_per_second > 0


def test_bad_cache_and_compile_settings_are_one_line_errors(tmp_path):
    with pytest.raises(KdkitError, match=r"config key .cache_views. must be in \[1, "):
        apply_overrides(DistillConfig(), {"cache_views": 0})
    with pytest.raises(KdkitError, match="config key 'compile' must be one of off, default, reduce-overhead"):
        apply_overrides(DistillConfig(), {"compile": "fast"})
    with pytest.raises(KdkitError, match="no complete teacher cache in .* rebuild it with --teacher-cache"):
        TeacherCache(tmp_path)


# ---------------------------------------------------------------- pooled teacher features in the cache

def _convnet(classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)).eval()


@pytest.mark.parametrize("method,kw", [("crd", {"nce_k": 8}), ("rkd", {}), ("pkt", {}), ("vector", {}), ("kd+crd", {"nce_k": 8})])
def test_cached_pooled_feature_losses_equal_online_bitwise(tmp_path, method, kw):
    """CRD, RKD, PKT and the distillation vector use the teacher's features only pooled: from a cache
    holding pool(feature) of the same views, every loss term is bitwise the online one."""
    data, teacher = _data(), _convnet()
    layers = {"student_layers": ["1", "3"], "teacher_layers": ["1", "3"]}
    cache = _build(tmp_path, teacher, data, batch_size=len(data.train), layers=["1", "3"])
    assert cache.shapes == {"1": (6,), "3": (8,)}
    student = _convnet(seed=1)
    context = dict(input_shape=(3, 8, 8), num_train=len(data.train), **kw, **layers)
    torch.manual_seed(5)
    online = create_method(method, student, teacher, **context)
    torch.manual_seed(5)
    offline = create_method(method, student, cache, **context)
    for epoch, (a, b) in enumerate(_side_by_side(online, offline, cache, data)):
        assert a.keys() == b.keys()
        for name in a:
            if name != "logits":
                assert torch.equal(a[name], b[name]), (method, epoch, name)


def test_cached_losses_equal_online_bitwise_in_the_channels_last_layout(tmp_path):
    """fit keeps models and batches channels_last on CPU and CUDA (train.uses_channels_last): a cache
    built in that layout gives bitwise the online losses of a channels_last teacher, and gives the
    teacher back in the default layout."""
    data, teacher = _data(), _convnet()
    cache = _build(tmp_path, teacher, data, batch_size=len(data.train), layers=["3"], channels_last=True)
    assert teacher[0].weight.is_contiguous()  # in the default layout again
    student = _convnet(seed=1).to(memory_format=torch.channels_last)
    context = dict(input_shape=(3, 8, 8), num_train=len(data.train), nce_k=8, student_layers=["3"], teacher_layers=["3"])
    torch.manual_seed(5)
    online = create_method("kd+crd", student, teacher.to(memory_format=torch.channels_last), **context)
    torch.manual_seed(5)
    offline = create_method("kd+crd", student, cache, **context)
    for a, b in _side_by_side(online, offline, cache, data, channels_last=True):
        for name in a.keys() - {"logits"}:
            assert torch.equal(a[name], b[name]), name
    nchw = _build(tmp_path / "nchw", teacher.to(memory_format=torch.contiguous_format), data, layers=["3"])
    assert torch.allclose(torch.from_numpy(np.array(cache.arrays["logits"])),
                          torch.from_numpy(np.array(nchw.arrays["logits"])), atol=1e-5)  # same outputs, other kernels


def test_cached_features_are_the_pooled_teacher_features(tmp_path):
    data, teacher = _data(), _convnet()
    cache = _build(tmp_path, teacher, data, layers=["3"], dtype="float16")
    loader = BatchLoader(data.train, 32, shuffle=True, augment="crop_flip", mean=data.mean, std=data.std, views=cache.views)
    for epoch in (0, 2):
        loader.set_epoch(epoch)
        cache.set_epoch(epoch)
        for x, _, idx in loader:
            with torch.no_grad(), Taps(teacher, ["3"]) as taps:
                teacher(x)
            expected = taps.outputs["3"].mean(dim=(2, 3))  # (B, 8): global average pooling, by hand
            assert torch.allclose(cache.features(idx, ["3"])["3"], expected, rtol=2e-3, atol=2e-3)  # float16 storage


def test_pooled_feature_methods_through_the_pipeline(tmp_path, digits):
    base = {"dataset": "digits", "teacher": "cnn-tiny", "student": "cnn-tiny", "epochs": 2, "teacher_epochs": 2,
            "batch_size": 64, "progress": False, "out": str(tmp_path / "run"), "amp": "off", "report": False,
            "augment": "flip", "teacher_cache": True, "cache_views": 2, "baseline": False, "method": "crd"}
    summary = run_distill(apply_overrides(DistillConfig(), base), digits)
    assert summary["rows"]["student"]["metrics"]["accuracy"]["mean"] > 0.3
    caches = list((tmp_path / "run/teacher_cache").iterdir())
    meta = json.loads((caches[0] / "meta.json").read_text())
    assert len(caches) == 1 and meta["layers"] and len(meta["feature_sizes"]) == len(meta["layers"])
    # vector taps every stage: another set of layers, another cache; kd needs none: a third
    run_distill(apply_overrides(DistillConfig(), base | {"method": "vector"}), digits)
    run_distill(apply_overrides(DistillConfig(), base | {"method": "kd"}), digits)
    metas = [json.loads((c / "meta.json").read_text()) for c in (tmp_path / "run/teacher_cache").iterdir()]
    counts = sorted(len(m["layers"]) for m in metas)
    assert len(metas) == 3 and counts[0] == 0 and counts[1] == len(meta["layers"]) == 1 < counts[2]


def test_a_cache_without_the_features_a_method_needs_is_a_one_line_error(tmp_path):
    data, teacher = _data(), _convnet()
    context = dict(input_shape=(3, 8, 8), num_train=len(data.train), student_layers=["3"], teacher_layers=["3"])
    bare = _build(tmp_path / "a", teacher, data)
    with pytest.raises(KdkitError, match="the teacher cache holds no teacher features, and method crd needs them pooled"):
        create_method("crd", _convnet(seed=1), bare, **context)
    with pytest.raises(KdkitError, match="method fitnet needs the teacher's feature maps, which a teacher cache does not hold"):
        create_method("fitnet", _convnet(seed=1), bare, **context)
    other = _build(tmp_path / "b", teacher, data, layers=["1"])
    with pytest.raises(KdkitError, match=r"teacher layer '3' is not in the teacher cache, which holds \['1'\]"):
        create_method("rkd", _convnet(seed=1), other, **context)


def test_a_teacher_with_a_features_attribute_is_not_taken_for_a_cache():
    """torchvision's VGG / MobileNet name their trunk `features`: such a teacher runs online."""
    class VGGLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.classifier = nn.Linear(8, 4)

        def forward(self, x):
            return self.classifier(self.features(x).mean(dim=(2, 3)))

    online = create_method("crd", _convnet(seed=1), VGGLike(), input_shape=(3, 8, 8), num_train=96, nce_k=8,
                           student_layers=["3"], teacher_layers=["features.1"])
    out = online(torch.randn(4, 3, 8, 8), torch.arange(4), torch.arange(4))
    assert torch.isfinite(out["loss"]) and out["crd"] > 0


@pytest.mark.parametrize("method,sets", [("crd", {}), ("vector", {}), ("kd+crd", {}), ("rkd+vector", {}),
                                         ("vector", {"student_layers": ["stage2"]}),
                                         ("crd", {"student_layers": ["stage1", "stage2", "hidden"]}),  # teacher: every stage
                                         ("pkt", {"student_layers": ["hidden"], "teacher_layers": ["stage1"]})])
def test_the_cache_holds_exactly_the_layers_the_online_method_taps(method, sets):
    from kdkit.models.registry import create_model
    from kdkit.recipes import cached_layers

    torch.manual_seed(0)
    teacher, student = create_model("cnn-tiny", 10, 1, 28).eval(), create_model("cnn-tiny", 10, 1, 28)
    cfg = apply_overrides(DistillConfig(), {"method": method, **sets})
    online = create_method(method, student, teacher, input_shape=(1, 28, 28), num_train=96,
                           student_layers=cfg.student_layers, teacher_layers=cfg.teacher_layers)
    layers = cached_layers(cfg, teacher, (1, 28, 28))
    assert layers and set(layers) == set(online.teacher_layers)


def test_full_disk_while_building_the_cache_is_a_one_line_error(tmp_path, monkeypatch):
    import os

    from test_large_data import _no_space  # posix_fallocate as on a full disk

    monkeypatch.setattr(os, "posix_fallocate", _no_space)
    with pytest.raises(KdkitError, match=r"cannot write the 0\.0 GB teacher cache in .*No space left.*cache_views=K"):
        _build(tmp_path, build_teacher(), _data())


def test_cache_built_with_workers_equals_cache_built_without(tmp_path):
    data, teacher = _data(), build_teacher()
    plain = _build(tmp_path / "plain", teacher, data)
    threaded = _build(tmp_path / "threaded", teacher, data, workers=2)
    for name in ("logits.npy", "views.npy"):
        assert np.array_equal(np.load(plain.path / name), np.load(threaded.path / name)), name


class _Recording(nn.Module):
    """A teacher that keeps every batch it is given (for comparing with what the student gets later)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


def _normalised(images, data):
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    return (images.float() * (1 / 255) - mean) / std


@pytest.mark.parametrize("mix, augment", [("mixup", "crop_flip"), ("cutmix", "crop_flip"), ("cutmix", "none")])
def test_mixed_views_replay_bit_for_bit_and_the_cache_holds_the_teacher_on_them(tmp_path, mix, augment):
    """With mix, a recorded view is the sample's own recorded view mixed with its recorded partner's;
    a shuffled training epoch rebuilds exactly the inputs the teacher labelled, whatever batch a
    sample lands in, and the stored logits are the teacher's on them."""
    data = _data()
    teacher = _Recording(build_teacher())
    cache = _build(tmp_path, teacher, data, augment=augment, mix=mix, mix_alpha=1.0, batch_size=len(data.train))
    recorded = teacher.inputs[1:]  # (after the probe) one batch per slot: (N, C, H, W) in train order
    assert len(recorded) == len(cache.views) == 3 and cache.mix == mix  # 3 slots, with or without augmentation
    rows = cache.mix_rows
    assert rows["partner"].shape == (3, len(data.train)) and bool((rows["lam"] < 1).any())
    for k, i in [(0, 0), (1, 5), (2, 17)]:  # the recorded input, rebuilt sample by sample from the files
        j = int(rows["partner"][k, i])
        own = _normalised(_reference_augment(data.train.images[i:i + 1], cache.views[k, i:i + 1], augment), data)[0]
        other = _normalised(_reference_augment(data.train.images[j:j + 1], cache.views[k, j:j + 1], augment), data)[0]
        if mix == "mixup":
            lam = float(rows["lam"][k, i])
            torch.testing.assert_close(recorded[k][i], lam * own + (1 - lam) * other, rtol=0, atol=1e-5)
        else:
            y0, y1, x0, x1 = rows["box"][k, i].tolist()
            expected = own.clone()
            expected[:, y0:y1, x0:x1] = other[:, y0:y1, x0:x1]
            assert torch.equal(recorded[k][i], expected)
    loader = BatchLoader(data.train, 16, shuffle=True, seed=3, augment=augment, mean=data.mean, std=data.std,
                         views=cache.views, mix=mix, mix_rows=cache.mix_rows)
    for epoch in (4, 5, 6):  # slots 1, 2, 0, in fresh orders
        loader.set_epoch(epoch)
        cache.set_epoch(epoch)
        slot = epoch % 3
        for x, _, idx, mixing in loader:
            assert torch.equal(x, recorded[slot][idx])  # bit for bit
            assert torch.equal(mixing.partner, rows["partner"][slot][idx]) and torch.equal(mixing.lam, rows["lam"][slot][idx])
            assert torch.equal(mixing.partner_labels, data.train.labels[mixing.partner])
            with torch.no_grad():
                torch.testing.assert_close(cache(x, idx), teacher.model(x), rtol=1e-6, atol=1e-6)
        everyone = torch.arange(len(data.train))  # the whole slot as the one batch it was labelled in: bitwise
        with torch.no_grad():
            assert torch.equal(cache(recorded[slot], everyone), teacher.model(recorded[slot]))


def test_a_cache_and_a_run_with_other_mixing_are_refused(tmp_path):
    from kdkit.config import TrainConfig
    from kdkit.train import fit

    data, teacher = _data(), build_teacher()
    plain, mixed = _build(tmp_path, teacher, data), _build(tmp_path, teacher, data, mix="mixup")
    assert "mix" not in plain.meta and plain.mix == "none" and plain.mix_rows is None  # a cache built before mix keeps its key
    assert mixed.path != plain.path and mixed.meta["mix"] == "mixup"
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False, device="cpu")
    for cache, mix in ((plain, "cutmix"), (mixed, "none"), (mixed, "cutmix")):
        method = create_method("kd", build_teacher(seed=1), cache)
        with pytest.raises(KdkitError, match=f"the teacher cache was recorded with mix={cache.mix}, but this run has mix={mix}; "
                                             f"build the cache with mix={mix}"):
            fit(method, data, apply_overrides(cfg, {"mix": mix}), tmp_path / "run")
