"""`kdkit predict`: run an exported student (.onnx + its JSON sidecar) on a folder of images, a
.npy array, or (a text model) a .txt file of sentences, with nothing else: no kdkit weights, no dataset.

    kdkit predict runs/demo/export/student.onnx images/ --top 3 --out preds.csv

    from kdkit.predict import predict
    rows = predict("runs/demo/export/student.onnx", "batch.npy", top=3)   # class, probability, top-k
"""
import csv
import re
from pathlib import Path

import numpy as np

from kdkit.data.images import opened, to_array
from kdkit.errors import KdkitError
from kdkit.export.onnx_file import INPUT_NAME, OUTPUT_NAME, load_sidecar, ort_session, require_onnx

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def predict(onnx_path, inputs, top: int = 3) -> list[dict]:
    """Class, probability and the top-k (name, probability) of every image in a folder (png/jpg) or
    row of a .npy array (N, C, H, W) or (N, H, W), using only the .onnx file and its sidecar."""
    if top < 1:
        raise KdkitError(f"--top must be at least 1, got {top}; e.g. --top 3")
    meta = _checked_sidecar(onnx_path)
    session = _session(onnx_path, meta)
    names, x = read_sentences(inputs, meta) if "tokenizer" in meta else read_inputs(inputs, meta)  # (N, L) ids, (N, C, H, W) floats
    logits = _run(session, x, onnx_path)  # (N, K)
    classes = meta["classes"]
    if logits.shape[1] != len(classes):
        raise KdkitError(f"'{onnx_path}' gives {logits.shape[1]} scores per input but its sidecar names {len(classes)} "
                         "classes; the sidecar belongs to another model: re-export it with kdkit export")
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    rows = []
    for name, p in zip(names, probs):
        order = np.argsort(-p)[:top]
        rows.append({"input": name, "class": classes[order[0]], "probability": float(p[order[0]]),
                     "top": [(classes[k], float(p[k])) for k in order]})
    return rows


def _checked_sidecar(onnx_path) -> dict:
    """The sidecar, with what predict reads from it checked: a hand-edited or foreign one gets a
    one-line error here instead of a KeyError or IndexError later."""
    meta = load_sidecar(onnx_path)
    side = Path(onnx_path).with_suffix(".json").name
    fix = "re-export the model with kdkit export"
    classes, shape = meta.get("classes"), meta.get("input_shape")
    if not isinstance(classes, list) or not classes:
        raise KdkitError(f"sidecar '{side}' has no 'classes' list; {fix}")
    if len(classes) < 2:
        raise KdkitError(f"sidecar '{side}' names 1 class ('classes': {str(classes)[:60]}); a classifier needs at "
                         f"least 2: {fix}")
    if "tokenizer" in meta:  # a text model: sentences -> word ids
        tokenizer = meta["tokenizer"]
        if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] > 0):
            raise KdkitError(f"sidecar '{side}' has no 'input_shape' [L] for token ids; {fix}")
        if not (isinstance(tokenizer, dict) and tokenizer.get("kind") == "words" and isinstance(tokenizer.get("words"), list)
                and all(isinstance(w, str) for w in tokenizer["words"]) and type(tokenizer.get("max_length")) is int):
            raise KdkitError(f"sidecar '{side}' has a 'tokenizer' that is not kdkit's word vocabulary (kind, words, "
                             f"max_length); {fix}")
        return meta
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
        raise KdkitError(f"sidecar '{side}' has no 'input_shape' [C, H, W]; {fix}")
    for key in ("mean", "std"):
        values = meta.get(key)
        if not (isinstance(values, list) and len(values) == shape[0]
                and all(isinstance(v, (int, float)) and (key == "mean" or v > 0) for v in values)):
            raise KdkitError(f"sidecar '{side}' has no '{key}' list with one number per input channel ({shape[0]}); {fix}")
    return meta


def _session(onnx_path, meta: dict):
    """An onnxruntime session, after checking the file loads and takes the sidecar's input shape."""
    require_onnx()  # missing packages get their own message, not "corrupt" from the except below
    try:
        session = ort_session(onnx_path)
    except Exception as e:  # noqa: BLE001 -- onnxruntime's errors (InvalidProtobuf, Fail, ...) share no base class
        raise KdkitError(f"model file '{onnx_path}' cannot be loaded by onnxruntime ({_ort_why(e, onnx_path)}); it is "
                         "truncated or corrupt; export it again with kdkit export") from None
    declared = session.get_inputs()[0].shape  # e.g. ['batch', 1, 8, 8]: names for free dimensions
    expected = meta["input_shape"]
    if len(declared) != len(expected) + 1 or any(isinstance(d, int) and d != e for d, e in zip(declared[1:], expected)):
        shown = ", ".join("N" if i == 0 or not isinstance(d, int) else str(d) for i, d in enumerate(declared))
        raise KdkitError(f"'{onnx_path}' takes input of shape ({shown}) but its sidecar "
                         f"{Path(onnx_path).with_suffix('.json').name} says {tuple(expected)}; the sidecar belongs to "
                         "another model: re-export it with kdkit export")
    return session


def _run(session, x: np.ndarray, onnx_path) -> np.ndarray:
    """(N, K) logits, or a one-line error when onnxruntime rejects the input."""
    try:
        return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    except Exception as e:  # noqa: BLE001 -- onnxruntime's errors share no base class
        raise KdkitError(f"onnxruntime cannot run '{onnx_path}' on inputs of shape {x.shape} ({_ort_why(e, onnx_path)}); "
                         "check that the model and its sidecar belong together, or re-export with kdkit export") from None


def _ort_why(error: Exception, onnx_path) -> str:
    """onnxruntime's message without its '[ONNXRuntimeError] : 7 :' prefix and the repeated path."""
    text = " ".join(str(error).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text).replace(f"Load model from {onnx_path} failed:", "")
    return text[:100] or type(error).__name__


def read_sentences(inputs, meta: dict) -> tuple[list[str], np.ndarray]:
    """(names, (N, L) int64 word ids) of a .txt file's sentences, one per line (blank lines skipped),
    read with the model's vocabulary (its sidecar) and padded or cut to its input width L."""
    from kdkit.data.text import WordVocabulary, sentence_lines

    path = Path(inputs)
    numbered = sentence_lines(path, f"inputs '{path}'", "this model reads sentences: pass a .txt file of one sentence per line")
    tokenizer = meta["tokenizer"]
    ids = WordVocabulary(tokenizer["words"], tokenizer["max_length"]).encode([line for _, line in numbered]).numpy()
    width = meta["input_shape"][0]
    out = np.zeros((len(ids), width), dtype=np.int64)  # padding (id 0), cut at the model's width
    out[:, :min(width, ids.shape[1])] = ids[:, :width]
    return [f"{path.name}:{n}" for n, _ in numbered], out


def read_inputs(inputs, meta: dict) -> tuple[list[str], np.ndarray]:
    """(names, (N, C, H, W) float32 normalised with the sidecar's mean/std)."""
    path = Path(inputs)
    if path.suffix.lower() == ".npy":
        names, x = _read_npy(path, meta)
    elif path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        names, x = _read_images(path, meta)
    else:
        raise KdkitError(f"inputs '{path}' are neither a folder of png/jpg images nor a .npy array; pass one of those")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(x.size - np.isfinite(x).sum())
        raise KdkitError(f"'{path}' holds {bad} NaN/inf values; replace them (the model's outputs for them are meaningless)")
    pixels = meta.get("input_dtype", "uint8") == "uint8"  # trained on uint8 images, scaled to [0, 1]
    if pixels and x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif pixels and x.size and float(np.abs(x).max()) > 1.5:
        raise KdkitError(f"float inputs in '{path}' reach {float(np.abs(x).max()):.1f} but this model takes images in "
                         "[0, 1]; save uint8 pixels (0..255) or divide by 255")
    mean = np.asarray(meta["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta["std"], np.float32).reshape(1, -1, 1, 1)
    return names, ((x.astype(np.float32) - mean) / std).astype(np.float32)


def _read_npy(path: Path, meta: dict) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise KdkitError(f"array file '{path}' not found; check the path")
    with path.open("rb") as f:
        is_npy = f.read(6) == b"\x93NUMPY"
    try:
        if not is_npy:  # np.load would take it for a pickle
            raise ValueError("no .npy header")
        x = np.load(path, allow_pickle=False)  # never unpickle
    except Exception as e:  # noqa: BLE001 -- object arrays, pickles, text, cut or garbled headers (TokenError)
        why = " ".join(str(e).split()).split(". ")[0][:80] or type(e).__name__
        raise KdkitError(f"'{path}' is not a plain numeric .npy array ({why}); kdkit never unpickles: save the "
                         "images with np.save as uint8 or float32") from None
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise KdkitError(f"'{path}' holds {kind} values, not numbers; save the images with np.save as uint8 or float32")
    c, h, w = meta["input_shape"]
    shape = tuple(x.shape)
    if x.ndim == 3 and c == 1:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
        grey = f" or (N, {h}, {w})" if c == 1 else ""
        raise KdkitError(f"'{path}' holds an array of shape {shape} but the model takes (N, {c}, {h}, {w}){grey}; "
                         "reshape it, or pass a folder of images (they are resized)")
    return [f"{path.name}[{i}]" for i in range(len(x))], x


def _read_images(path: Path, meta: dict) -> tuple[list[str], np.ndarray]:
    """png/jpg files (a folder, searched recursively, in sorted order), converted to the model's
    channels (L or RGB) and resized to its input size when they differ."""
    from PIL import Image

    c, h, w = meta["input_shape"]
    if c not in (1, 3):
        raise KdkitError(f"the model takes {c}-channel input; images work for 1 or 3 channels, pass a .npy array")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise KdkitError(f"no .png/.jpg images in '{path}'; pass a folder of images or a .npy array")
    images = []
    for file in files:
        with opened(file, str(file)) as source:  # size checked from the header; truncated files refused
            image = Image.fromarray(to_array(source, str(file), "L" if c == 1 else "RGB"))
        if image.size != (w, h):
            image = image.resize((w, h), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)  # (H, W) or (H, W, 3)
        images.append(pixels[None] if c == 1 else pixels.transpose(2, 0, 1))
    return [str(f.relative_to(path)) if path.is_dir() else f.name for f in files], np.stack(images)  # (N, C, H, W)


def write_predictions(rows: list[dict], out) -> Path:
    """CSV: input, prediction, probability, then top{i} and p{i} for each of the top-k."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    k = max((len(r["top"]) for r in rows), default=0)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["input", "prediction", "probability"] + [c for i in range(1, k + 1) for c in (f"top{i}", f"p{i}")])
        for r in rows:
            writer.writerow([r["input"], r["class"], f"{r['probability']:.6f}"] + [v for name, p in r["top"] for v in (name, f"{p:.6f}")])
    return out
