"""Data that looks fine but is not (issue 20): 16-bit images, images too large to decode, truncated
files, a decoded cache that outlives its images, NaN arrays, teacher outputs for other data, and
`kdkit predict` on a damaged model or sidecar. Each test writes its own tiny files under tmp_path."""
import io
import json
import os
import re
import resource

import numpy as np
import pytest
import torch

from kdkit.data import from_arrays, load_dataset
from kdkit.errors import KdkitError
from kdkit.teachers import FileTeacher, HybridTeacher, teacher_from_spec
from test_bad_inputs import cli, error_line


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """No test sees the developer's cache or a pixel limit set in the shell."""
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KDKIT_MAX_PIXELS", raising=False)
    return tmp_path / "cache"


def save_image(path, image, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


# ---------------------------------------------------------------- 16-bit images


def test_16_bit_pngs_are_scaled_to_8_bits(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for name, low in (("dark", 0), ("bright", 30000)):  # both above 255: both read as 255 before
        for i in range(5):
            pixels = rng.integers(low + 300, low + 30000, (6, 6), dtype=np.uint16)
            save_image(tmp_path / "deep" / name / f"{i}.png", Image.fromarray(pixels))
            written[(name, i)] = (pixels >> 8).astype(np.uint8)
    assert Image.open(tmp_path / "deep" / "dark" / "0.png").mode == "I;16"
    data = load_dataset(str(tmp_path / "deep"), val_fraction=0.0)
    expected = {bytes(v.tobytes()) for v in written.values()}
    decoded = torch.cat([data.train.images, data.test.images])[:, 0].numpy()  # (10, 6, 6)
    assert {bytes(x.tobytes()) for x in decoded} == expected


def test_32_bit_integer_and_float_images(tmp_path):
    from PIL import Image

    pixels = np.arange(36, dtype=np.int32).reshape(6, 6) * 1800  # 0..63000: 16-bit values in mode I
    for i, name in enumerate(("a", "b")):
        save_image(tmp_path / "ints" / name / "0.tif", Image.fromarray(pixels + i * 256))
        save_image(tmp_path / "ints" / name / "1.tif", Image.fromarray(pixels + i * 512))
    assert Image.open(tmp_path / "ints" / "a" / "0.tif").mode == "I"
    data = load_dataset(str(tmp_path / "ints"), val_fraction=0.0)
    decoded = {bytes(x.tobytes()) for x in torch.cat([data.train.images, data.test.images]).numpy()}
    assert decoded == {bytes(((pixels + s) >> 8).astype(np.uint8).tobytes()) for s in (0, 256, 512)}
    save_image(tmp_path / "wide" / "a" / "0.tif", Image.fromarray(pixels * 2))  # up to 126000: not 16-bit
    save_image(tmp_path / "wide" / "b" / "0.tif", Image.fromarray(pixels))
    with pytest.raises(KdkitError, match=r"wide/a/0.tif holds 32-bit values outside 0..65535 \(mode I\)"):
        load_dataset(str(tmp_path / "wide"))
    save_image(tmp_path / "floats" / "a" / "0.tif", Image.fromarray(np.full((6, 6), 0.5, np.float32)))
    save_image(tmp_path / "floats" / "b" / "0.tif", Image.fromarray(np.full((6, 6), 0.7, np.float32)))
    with pytest.raises(KdkitError, match=r"floats/a/0.tif holds 32-bit float pixels \(mode F\).*convert .* to 8 "
                                         r"or 16-bit"):
        load_dataset(str(tmp_path / "floats"))


def test_predict_reads_16_bit_pngs(tmp_path):
    from PIL import Image

    from kdkit.predict import read_inputs

    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    save_image(tmp_path / "in" / "x.png", Image.fromarray(pixels))
    meta = {"input_shape": [1, 8, 8], "mean": [0.0], "std": [1.0], "input_dtype": "uint8"}
    _, x = read_inputs(tmp_path / "in", meta)
    assert np.allclose(x[0, 0] * 255, pixels >> 8)


# ---------------------------------------------------------------- images too large to decode


@pytest.fixture(scope="module")
def bomb_png():
    """A 10000x10000 1-bit PNG: 12 kB on disk, 100 million pixels (300 MB as RGB) decoded."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, "PNG")
    return buffer.getvalue()


def test_huge_images_are_refused_from_the_header(tmp_path, bomb_png, monkeypatch):
    from PIL import ImageFile

    for name in ("a", "b"):
        (tmp_path / "big" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "big" / name / f"{i}.png").write_bytes(bomb_png)
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with pytest.raises(KdkitError, match=r"image .*big/a/0.png is 10000x10000 \(100 million pixels\), above the "
                                         r"limit of 50000000 pixels; resize .* KDKIT_MAX_PIXELS=100000000"):
        load_dataset(str(tmp_path / "big"))
    assert decoded == []  # refused from the header: no image's pixels were decoded
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100_000  # and hundreds of MB


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    from PIL import Image

    for name in ("a", "b"):
        save_image(tmp_path / "small" / name / "0.png", Image.new("L", (8, 8), 9))
    monkeypatch.setenv("KDKIT_MAX_PIXELS", "63")
    with pytest.raises(KdkitError, match=r"is 8x8 \(64 pixels\), above the limit of 63 pixels"):
        load_dataset(str(tmp_path / "small"))
    monkeypatch.setenv("KDKIT_MAX_PIXELS", "50M")
    with pytest.raises(KdkitError, match="KDKIT_MAX_PIXELS must be a whole number of pixels, got '50M'; e.g. 50000000"):
        load_dataset(str(tmp_path / "small"))
    monkeypatch.setenv("KDKIT_MAX_PIXELS", "64")
    assert load_dataset(str(tmp_path / "small")).input_shape == (1, 8, 8)


# ---------------------------------------------------------------- truncated images


def jpeg_folder(root, per_class=10, cut=()):
    """Random 48x48 JPEGs in two classes; the files named in `cut` lose their last quarter (in the
    scan data, past the headers: Pillow's LOAD_TRUNCATED_IMAGES would fill it with grey)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        for i in range(per_class):
            path = save_image(root / name / f"{i}.jpg", Image.fromarray(rng.integers(0, 256, (48, 48, 3), np.uint8)))
            if f"{name}/{i}.jpg" in cut:
                path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])


def test_truncated_images_are_counted_and_named(tmp_path):
    jpeg_folder(tmp_path / "photos", cut=("a/3.jpg", "b/0.jpg", "b/7.jpg"))
    with pytest.raises(KdkitError, match=r"^3 of 20 images in .*photos are truncated or damaged \(first: a/3.jpg: "
                                         r".+\); replace or remove them"):
        load_dataset(str(tmp_path / "photos"))


def test_truncated_images_are_refused_even_when_pillow_is_told_to_load_them(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as many training scripts set it
    jpeg_folder(tmp_path / "photos", cut=("b/4.jpg",))
    with pytest.raises(KdkitError, match=r"cannot decode image .*photos/b/4.jpg \(.+\); the file is truncated or damaged"):
        load_dataset(str(tmp_path / "photos"))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was


# ---------------------------------------------------------------- the decoded-image cache


def test_cache_sees_an_image_replaced_with_the_same_size_and_mtime(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        for i in range(3):
            save_image(tmp_path / "pets" / name / f"{i}.bmp", Image.new("L", (4, 4), 10 * i + 100 * (name == "b")))
    first = load_dataset(str(tmp_path / "pets"), val_fraction=0.0)
    assert 222 not in torch.cat([first.train.images, first.test.images]).unique()
    target = tmp_path / "pets" / "a" / "1.bmp"
    before = target.stat()
    replacement = io.BytesIO()
    Image.new("L", (4, 4), 222).save(replacement, "BMP")
    assert len(replacement.getvalue()) == before.st_size
    target.write_bytes(replacement.getvalue())  # same inode, same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime restored
    second = load_dataset(str(tmp_path / "pets"), val_fraction=0.0)
    assert 222 in torch.cat([second.train.images, second.test.images]).unique()


# ---------------------------------------------------------------- arrays


def test_from_arrays_refuses_nan_and_inf():
    x = np.random.default_rng(0).normal(size=(40, 1, 4, 4)).astype(np.float32)
    y = np.arange(40) % 2
    bad = x.copy()
    bad[3, 0, :3] = np.nan
    bad[9, 0, 0, 0] = np.inf
    with pytest.raises(KdkitError, match=r"^x_train has 13 NaN/inf values \(first in sample 3\); replace them"):
        from_arrays(bad, y, x[:10], y[:10])
    with pytest.raises(KdkitError, match=r"^x_test has 16 NaN/inf values \(first in sample 2\)"):
        from_arrays(x, y, np.where(np.arange(40)[:, None, None, None] == 2, -np.inf, x)[:10], y[:10])
    with pytest.raises(KdkitError, match=r"^x_train has 1 NaN/inf values"):
        from_arrays(torch.tensor([[0.0, float("nan")]] + [[1.0, 2.0]] * 9), torch.arange(10) % 2, x[:4], y[:4])


# ---------------------------------------------------------------- saved teacher outputs


def test_teacher_outputs_with_more_rows_than_the_training_set(tmp_path, digits):
    logits = np.random.default_rng(0).normal(size=(5000, 10))
    np.save(tmp_path / "more.npy", logits)
    with pytest.raises(KdkitError, match=r"teacher file '.*more.npy' has 5000 rows but the dataset's original training "
                                         r"set has 1797 samples; save exactly one row per sample of the original training set \(positions 0..1796\)$"):
        teacher_from_spec(str(tmp_path / "more.npy"), digits)
    with pytest.raises(KdkitError, match="has 5000 rows but the dataset's original training set has 1797 samples"):
        HybridTeacher([FileTeacher(tmp_path / "more.npy")]).prepare(digits)
    np.save(tmp_path / "exact.npy", logits[:1797])
    assert teacher_from_spec(str(tmp_path / "exact.npy"), digits).table.shape == (1797, 10)
    np.save(tmp_path / "fewer.npy", logits[:1000])
    with pytest.raises(KdkitError, match=r"lacks \d+ of the \d+ samples of the train split"):
        teacher_from_spec(str(tmp_path / "fewer.npy"), digits)


def test_teacher_parquet_index_beyond_the_training_set(tmp_path, digits):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    logits = np.random.default_rng(0).normal(size=(1797, 10))
    columns = {"index": np.arange(1797) + 3} | {str(k): logits[:, k] for k in range(10)}  # 0..2 missing, 3 past the end
    pq.write_table(pa.table(columns), tmp_path / "shifted.parquet")
    with pytest.raises(KdkitError, match=r"'index' goes up to 1799 but the dataset's original training set has 1797 "
                                         r"samples; save exactly one row per sample of the original training set \(positions 0..1796\)"):
        teacher_from_spec(str(tmp_path / "shifted.parquet"), digits)


def test_csv_teacher_outputs_say_how_to_convert(tmp_path, digits):
    from kdkit.config import DistillConfig, apply_overrides
    from kdkit.recipes import run_distill

    np.savetxt(tmp_path / "logits.csv", np.zeros((1797, 10)), delimiter=",")
    message = (r"teacher file '.*logits.csv' is text \(.csv\); saved outputs are read from .npy, .parquet or "
               r".safetensors: convert it with np.save\('logits.npy', np.loadtxt\('logits.csv', delimiter=','\)\)")
    with pytest.raises(KdkitError, match=message):
        FileTeacher(tmp_path / "logits.csv")
    cfg = apply_overrides(DistillConfig(), {"dataset": "digits", "teacher": str(tmp_path / "logits.csv"),
                                            "student": "cnn-tiny", "epochs": 1, "progress": False,
                                            "out": str(tmp_path / "run")})
    with pytest.raises(KdkitError, match=message):
        run_distill(cfg, digits)


# ---------------------------------------------------------------- kdkit predict


@pytest.fixture
def exported(tmp_path):
    """A tiny ONNX model (1x8x8 -> 3 classes) with its sidecar, and a matching .npy input."""
    pytest.importorskip("onnxruntime")
    from kdkit.export import ONNX_FORMAT, export_onnx

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    path = export_onnx(model, tmp_path / "m.onnx", (1, 8, 8))
    sidecar = {"format": ONNX_FORMAT, "classes": ["a", "b", "c"], "mean": [0.5], "std": [0.25],
               "input_shape": [1, 8, 8], "input_dtype": "uint8"}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.uint8))
    return path, sidecar


def test_predict_checks_the_sidecar(exported, tmp_path):
    from kdkit.predict import predict

    path, sidecar = exported
    assert [r["class"] for r in predict(path, tmp_path / "x.npy", top=2)] != []
    cases = [({k: v for k, v in sidecar.items() if k != "classes"}, r"has no 'classes' list"),
             (sidecar | {"classes": ["a"]}, r"names 1 class \('classes': \['a'\]\); a classifier needs at least 2"),
             (sidecar | {"classes": "abc"}, r"has no 'classes' list"),
             ({k: v for k, v in sidecar.items() if k != "std"}, r"has no 'std' list with one number per input channel \(1\); re-export"),
             (sidecar | {"input_shape": [8, 8]}, r"has no 'input_shape' \[C, H, W\]; re-export the model"),
             (sidecar | {"classes": ["a", "b"]}, r"m.onnx' gives 3 scores per input but its sidecar names 2 classes")]
    for side, pattern in cases:
        path.with_suffix(".json").write_text(json.dumps(side))
        with pytest.raises(KdkitError) as error:
            predict(path, tmp_path / "x.npy")
        message = str(error.value)
        assert re.search(pattern, message) and "\n" not in message and len(message) < 300, message


def test_predict_input_the_model_does_not_take(exported, tmp_path):
    from kdkit.predict import predict

    path, sidecar = exported
    path.with_suffix(".json").write_text(json.dumps(sidecar | {"input_shape": [1, 4, 4]}))  # not the model's
    np.save(tmp_path / "small.npy", np.zeros((2, 1, 4, 4), np.uint8))
    with pytest.raises(KdkitError, match=r"m.onnx' takes input of shape \(N, 1, 8, 8\) but its sidecar m.json says "
                                         r"\(1, 4, 4\); the sidecar belongs to another model: re-export"):
        predict(path, tmp_path / "small.npy")


def test_predict_input_rejected_while_running(exported, tmp_path):
    import warnings

    from kdkit.predict import predict

    path, sidecar = exported
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}  # H, W not fixed in the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes=axes, dynamo=False)
    path.with_suffix(".json").write_text(json.dumps(sidecar | {"input_shape": [1, 4, 4]}))
    np.save(tmp_path / "small.npy", np.zeros((2, 1, 4, 4), np.uint8))
    with pytest.raises(KdkitError, match=r"^onnxruntime cannot run '.*m.onnx' on inputs of shape \(2, 1, 4, 4\) \(.+\); "
                                         r"check that the model and its sidecar belong together"):
        predict(path, tmp_path / "small.npy")


def test_predict_truncated_onnx_file(exported, tmp_path, monkeypatch, capsys):
    path, _ = exported
    path.write_bytes(path.read_bytes()[:200])
    message = error_line(cli("predict", path, tmp_path / "x.npy", monkeypatch=monkeypatch, capsys=capsys))
    assert message.startswith(f"model file '{path}' cannot be loaded by onnxruntime (INVALID_PROTOBUF")
    assert message.endswith("it is truncated or corrupt; export it again with kdkit export")


def test_predict_decompression_bomb_is_one_line(exported, tmp_path, monkeypatch, capsys):
    from PIL import Image

    path, _ = exported
    save_image(tmp_path / "in" / "bomb.png", Image.new("1", (20_000, 20_000)))  # over Pillow's own limit too
    message = error_line(cli("predict", path, tmp_path / "in", monkeypatch=monkeypatch, capsys=capsys))
    assert message == (f"image {tmp_path / 'in' / 'bomb.png'} is 20000x20000 (400 million pixels), above the limit "
                       "of 50000000 pixels; resize it, or raise the limit with KDKIT_MAX_PIXELS=400000000")
