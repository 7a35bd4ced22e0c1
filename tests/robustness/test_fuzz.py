"""Fuzzing (hypothesis): config parsing and every data reader either succeed or raise KdkitError.

The contract (src/kdkit/errors.py, docs/errors.md): whatever a user hands kdkit (a config file,
`--set key=value`, a dataset folder, archive, pickle, IDX file, image or array) ends in a valid
result or in one `KdkitError` that the CLI prints as `error: ...` (exit 2). Any other exception
escaping is a bug: a traceback instead of a message.

Each property runs FUZZ_EXAMPLES examples (default 100: about 30 s for the whole file on one core).
A longer campaign (2000 each: about 8 minutes):

    KDKIT_FUZZ_EXAMPLES=2000 OMP_NUM_THREADS=1 python -m pytest -q tests/robustness/test_fuzz.py

Nothing is written into the repository (no .hypothesis database) and nothing is downloaded: every
example works in its own temporary folder, with $HOME / $KDKIT_CACHE pointing into it.
"""
import bz2
import gzip
import http.server
import io
import lzma
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdkit.config import (DistillConfig, TrainConfig, apply_overrides, fields_of, load_yaml,
                          parse_set, resolve, save_yaml, validate)
from kdkit.data import files, from_arrays, idx, load_dataset
from kdkit.data import download as download_module
from kdkit.data.cifar import safe_unpickle
from kdkit.data.dataset import RawData
from kdkit.data.longtail import long_tailed, parse_imbalance
from kdkit.errors import KdkitError

FUZZ_EXAMPLES = int(os.environ.get("KDKIT_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])
# Headers that claim terabytes must be refused before anything is allocated.
MAX_PEAK_BYTES = 64 * 2**20


@pytest.fixture(scope="module", autouse=True)
def sandbox(tmp_path_factory):
    """$HOME, $KDKIT_CACHE and the working directory inside a temporary folder; no $KDKIT_DATA."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "home").mkdir()
    (root / "cwd").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(root / "home"))
        mp.setenv("KDKIT_CACHE", str(root / "home" / "cache"))
        mp.delenv("KDKIT_DATA", raising=False)
        mp.chdir(root / "cwd")
        yield root


def scratch() -> tempfile.TemporaryDirectory:
    """A fresh folder per example (function-scoped fixtures are shared by all examples)."""
    return tempfile.TemporaryDirectory(prefix="kdkit-fuzz-")


def outcome(fn, *args, **kwargs):
    """fn's result, or the KdkitError it raised; any other exception fails the property."""
    try:
        return fn(*args, **kwargs)
    except KdkitError as error:
        message = str(error)
        assert message.strip(), f"{type(error).__name__} with an empty message"
        if os.environ.get("KDKIT_FUZZ_LOG"):
            with open(os.environ["KDKIT_FUZZ_LOG"], "a") as log:
                log.write(repr(message) + "\n")
        return error


# ====================================================================== byte mutations

@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """`valid` cut short, with bytes flipped, with junk inserted, emptied, or replaced."""
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "random", "empty", "tail"]))
    if kind == "truncate" or not valid:
        return valid[:draw(st.integers(0, max(len(valid) - 1, 0)))]
    if kind == "flip":
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "insert":
        position = draw(st.integers(0, len(valid)))
        return valid[:position] + draw(st.binary(min_size=1, max_size=32)) + valid[position:]
    if kind == "tail":
        return valid + draw(st.binary(min_size=1, max_size=64))
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=512))


# ====================================================================== 1. config parsing

FIELD_NAMES = sorted(fields_of(DistillConfig))
CONFIG_CLASSES = st.sampled_from([TrainConfig, DistillConfig])
YAML_FRAGMENTS = ["", " ", "none", "null", "~", "true", "off", "0", "-1", "1e400", "1.0e400", ".nan",
                  "-.inf", "0x1F", "0o17", "1_000", "2020-01-01", "[", "]", "{", "}", "[1, 2", "{a: 1",
                  "a: b", "- x", "@x", "`x", "%x", "|", ">", "*alias", "&a [*a]", "'", '"', "!!binary AAA",
                  "!!python/object/apply:os.system ['true']", "!!set {a, b}", "[[1]]", "{}", "[]",
                  "exp:100", "step:10", "exp:0.5", "cosine", "kd", "sgd", "adamw", "cnn", "0,1,2",
                  "[0, 1]", "a,b", "9" * 5000, "[" * 200 + "]" * 200]
KEYS = st.one_of(st.sampled_from(FIELD_NAMES),
                 st.sampled_from(FIELD_NAMES).map(lambda k: k.replace("_", "-")),
                 st.text(max_size=16))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**80, 2**80),
                    st.floats(), st.text(max_size=24), st.sampled_from(YAML_FRAGMENTS), st.dates())
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
ANY_KEY = st.one_of(KEYS, st.integers(-3, 3), st.none(), st.booleans(), st.floats(allow_nan=False))


def check_valid_config(cfg, cls) -> None:
    """A config that parsed is of the right class, passes validate, and reloads from config.yaml."""
    assert isinstance(cfg, cls)
    validate(cfg)
    with scratch() as folder:
        path = Path(folder) / "config.yaml"
        save_yaml(cfg, path)
        again = resolve(cls, path)  # the run directory's config.yaml must always load back
        assert isinstance(again, cls)


@FUZZ
@given(cls=CONFIG_CLASSES, overrides=st.dictionaries(ANY_KEY, JUNK, max_size=6))
def test_config_overrides_of_any_key_and_value(cls, overrides):
    cfg = outcome(apply_overrides, cls(), overrides)
    if not isinstance(cfg, KdkitError):
        check_valid_config(cfg, cls)


@FUZZ
@given(cls=CONFIG_CLASSES, data=st.one_of(st.dictionaries(ANY_KEY, JUNK | st.binary(max_size=8),
                                                          max_size=6), JUNK))
def test_config_file_of_any_yaml_document(cls, data):
    with scratch() as folder:
        path = Path(folder) / "c.yaml"
        path.write_text(yaml.safe_dump(data))
        cfg = outcome(resolve, cls, path)
    if not isinstance(cfg, KdkitError):
        check_valid_config(cfg, cls)


YAML_LINES = st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", KEYS, st.sampled_from(YAML_FRAGMENTS) | st.text(max_size=12)),
    st.sampled_from(YAML_FRAGMENTS), st.text(max_size=30)), max_size=8).map("\n".join)


@FUZZ
@given(cls=CONFIG_CLASSES, text=st.one_of(YAML_LINES, st.text(max_size=200)),
       raw=st.none() | st.binary(max_size=64))
@example(cls=TrainConfig, text="[" * 5000, raw=None)
@example(cls=TrainConfig, text="epochs: " + "9" * 5000, raw=None)
@example(cls=TrainConfig, text="lr: " + "9" * 400, raw=None)
@example(cls=TrainConfig, text="1: 2", raw=None)
@example(cls=TrainConfig, text="out: 2024-13-01", raw=None)  # YAML date constructor: ValueError
@example(cls=TrainConfig, text="", raw=b"epochs: \xff\xfe")
def test_config_file_of_any_text_or_bytes(cls, text, raw):
    with scratch() as folder:
        path = Path(folder) / "c.yaml"
        if raw is None:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        else:
            path.write_bytes(raw)
        marker = Path(folder) / "pwned"
        cfg = outcome(resolve, cls, path)
        assert not marker.exists()
    if not isinstance(cfg, KdkitError):
        check_valid_config(cfg, cls)


SET_PAIRS = st.lists(st.one_of(
    st.builds(lambda k, sep, v: f"{k}{sep}{v}", KEYS, st.sampled_from(["=", " = ", "=="]),
              st.sampled_from(YAML_FRAGMENTS) | st.text(max_size=20)),
    st.text(max_size=20)), max_size=5)


@FUZZ
@given(cls=CONFIG_CLASSES, pairs=SET_PAIRS)
@example(cls=TrainConfig, pairs=["teacher=@run"])
@example(cls=TrainConfig, pairs=["lr=[0.1"])
@example(cls=TrainConfig, pairs=["out=2024-13-01"])
@example(cls=TrainConfig, pairs=["lr=" + "9" * 400])
@example(cls=TrainConfig, pairs=["epochs=" + "9" * 5000])
def test_config_set_pairs(cls, pairs):
    cfg = outcome(resolve, cls, None, None, pairs)
    if not isinstance(cfg, KdkitError):
        check_valid_config(cfg, cls)
        assert isinstance(parse_set(pairs), dict)


@FUZZ
@given(cls=CONFIG_CLASSES, flags=st.dictionaries(st.sampled_from(FIELD_NAMES) | KEYS, SCALARS, max_size=6),
       pairs=SET_PAIRS)
def test_config_flags_then_set(cls, flags, pairs):
    """What the CLI does: defaults < flags < --set (typer has already typed most flags)."""
    cfg = outcome(resolve, cls, None, flags, pairs)
    if not isinstance(cfg, KdkitError):
        check_valid_config(cfg, cls)


@FUZZ
@given(name=st.text(max_size=30))
@example(name="x" * 300)  # ENAMETOOLONG
@example(name="a\x00b")
@example(name=".")
def test_config_file_path_of_any_name(name):
    result = outcome(load_yaml, name)
    assert isinstance(result, (dict, KdkitError))


# ====================================================================== 2a. IDX (MNIST) files

def idx_bytes(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    dtype = np.dtype(idx._TYPES[type_byte])
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_mnist(folder: Path, gz: bool, n_train: int = 12, n_test: int = 5) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    arrays = dict(train_images=rng.integers(0, 256, (n_train, 4, 4), dtype=np.uint8),
                  train_labels=np.arange(n_train, dtype=np.uint8) % 10,
                  test_images=rng.integers(0, 256, (n_test, 4, 4), dtype=np.uint8),
                  test_labels=np.arange(n_test, dtype=np.uint8) % 10)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, stem in idx.IDX_NAMES.items():
        data = idx_bytes(arrays[key])
        paths[key] = folder / (f"{stem}.gz" if gz else stem)
        paths[key].write_bytes(gzip.compress(data) if gz else data)
    return paths


def load_both_ways(folder: Path, name: str):
    """The folder as the named dataset (no download) and as a plain path."""
    outcome(load_dataset, name, data_dir=folder, download=False)
    outcome(load_dataset, str(folder))


@FUZZ
@given(which=st.sampled_from(list(idx.IDX_NAMES)), gz=st.booleans(), data=st.data())
def test_idx_files_cut_flipped_or_replaced(which, gz, data):
    with scratch() as folder:
        paths = write_mnist(Path(folder) / "mnist", gz)
        valid = paths[which].read_bytes()
        damaged = data.draw(mutated(valid) | mutated(gzip.decompress(valid) if gz else valid)
                            .map(lambda b: gzip.compress(b) if gz else b))
        paths[which].write_bytes(damaged)
        load_both_ways(Path(folder) / "mnist", "mnist")


@FUZZ
@given(type_byte=st.sampled_from(sorted(idx._TYPES)) | st.integers(0, 255),
       dims=st.lists(st.sampled_from([0, 1, 2, 3, 255, 2**16, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1),
                     max_size=8),
       ndim=st.none() | st.integers(0, 255), payload=st.binary(max_size=256), gz=st.booleans())
@example(type_byte=0x08, dims=[2**16] * 4, ndim=None, payload=b"", gz=False)  # 2**64 wraps to 0 in int64
@example(type_byte=0x0E, dims=[2**32 - 1] * 3, ndim=None, payload=b"", gz=True)
@example(type_byte=0x08, dims=[], ndim=None, payload=b"\x07", gz=False)
def test_idx_header_with_absurd_dimensions(type_byte, dims, ndim, payload, gz):
    """A header may claim any shape: refused (or read) without allocating what it claims."""
    ndim = len(dims) if ndim is None else ndim
    data = bytes([0, 0, type_byte, ndim]) + struct.pack(f">{len(dims)}I", *dims) + payload
    with scratch() as folder:
        path = Path(folder) / "train-images-idx3-ubyte"
        path.write_bytes(gzip.compress(data) if gz else data)
        tracemalloc.start()
        try:
            result = outcome(idx.read_idx, path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < MAX_PEAK_BYTES, f"read_idx allocated {peak} bytes for a {len(data)}-byte file"
    if isinstance(result, np.ndarray):
        assert result.nbytes <= len(data)


IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32,
              0x0E: np.float64}


@st.composite
def idx_arrays(draw, max_dims: int = 4):
    type_byte = draw(st.sampled_from(sorted(IDX_DTYPES)))
    array = draw(hnp.arrays(IDX_DTYPES[type_byte], hnp.array_shapes(min_dims=0, max_dims=max_dims,
                                                                     min_side=0, max_side=6)))
    return idx_bytes(array, type_byte)


@FUZZ
@given(which=st.sampled_from(list(idx.IDX_NAMES)), content=idx_arrays(), gz=st.booleans())
@example(which="train_labels", content=idx_bytes(np.full(12, 2**31 - 1, np.int32), 0x0C), gz=False)
@example(which="train_labels", content=idx_bytes(np.full(12, np.nan, np.float32), 0x0D), gz=False)
@example(which="train_labels", content=idx_bytes(np.full(12, -3, np.int8), 0x09), gz=False)
@example(which="train_labels", content=idx_bytes(np.zeros(0, np.uint8)), gz=False)
def test_idx_files_of_wrong_type_shape_or_values(which, content, gz):
    """Well-formed IDX files holding the wrong thing: float or negative labels, wrong ndim, ..."""
    with scratch() as folder:
        paths = write_mnist(Path(folder) / "mnist", gz)
        paths[which].write_bytes(gzip.compress(content) if gz else content)
        load_both_ways(Path(folder) / "mnist", "mnist")


# ====================================================================== 2b. CIFAR pickles

CIFAR_FILES = ["data_batch_1", "data_batch_2", "test_batch", "batches.meta"]


def write_cifar(folder: Path, protocol: int = 2, rows: int = 6) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for name in CIFAR_FILES[:3]:
        batch = {b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
                 b"labels": [i % 10 for i in range(rows)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol))


@FUZZ
@given(which=st.sampled_from(CIFAR_FILES), protocol=st.integers(0, 5), data=st.data())
def test_cifar_pickles_cut_flipped_or_replaced(which, protocol, data):
    with scratch() as folder:
        batches = Path(folder) / "cifar-10-batches-py"
        write_cifar(batches, protocol)
        marker = Path(folder) / "pwned"
        (batches / which).write_bytes(data.draw(mutated((batches / which).read_bytes())))
        load_both_ways(Path(folder), "cifar10")
        assert not marker.exists()


CIFAR_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=8),
    hnp.arrays(st.sampled_from([np.uint8, np.int64, np.float32, np.bool_, np.dtype("U3"), np.int8]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    st.sampled_from([np.zeros((2, 3072), np.uint8), np.zeros((6, 3072), np.uint8),
                     np.zeros((6, 3072), np.float32), np.zeros(3072, np.uint8), np.int64(3)]))
CIFAR_VALUES = st.recursive(CIFAR_LEAVES, lambda inner: st.lists(inner, max_size=6)
                            | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                            max_leaves=10)
CIFAR_KEYS = st.sampled_from([b"data", "data", b"labels", "labels", b"fine_labels", b"label_names",
                              "label_names", b"batch_label"]) | st.integers() | st.binary(max_size=4)


@FUZZ
@given(which=st.sampled_from(CIFAR_FILES), protocol=st.integers(0, 5),
       content=st.dictionaries(CIFAR_KEYS, CIFAR_VALUES, max_size=4) | CIFAR_VALUES)
@example(which="test_batch", protocol=2, content={b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, [1]]})
@example(which="test_batch", protocol=2, content={b"data": np.zeros((2, 3072), np.uint8), b"labels": [[0], [1]]})
@example(which="test_batch", protocol=2, content={b"data": np.zeros((1, 3072), np.uint8), b"labels": np.int64(3)})
@example(which="data_batch_1", protocol=2, content={b"data": np.zeros((0, 3072), np.uint8), b"labels": []})
def test_cifar_pickles_of_plain_but_wrong_data(which, protocol, content):
    """Unpicklable without code, but not a CIFAR batch: wrong keys, dtypes, shapes, label lists."""
    with scratch() as folder:
        batches = Path(folder) / "cifar-10-batches-py"
        write_cifar(batches)
        (batches / which).write_bytes(pickle.dumps(content, protocol))
        load_both_ways(Path(folder), "cifar10")


DANGEROUS_GLOBALS = [("os", "system"), ("posix", "system"), ("builtins", "exec"), ("builtins", "eval"),
                     ("__builtin__", "eval"), ("builtins", "open"), ("io", "open"), ("builtins", "__import__"),
                     ("builtins", "getattr"), ("subprocess", "getoutput"), ("subprocess", "Popen"),
                     ("pickle", "loads"), ("numpy", "load"), ("numpy.lib.npyio", "load"), ("shutil", "rmtree"),
                     ("numpy.core.multiarray", "scalar"), ("numpy", "frombuffer"), ("torch", "load"),
                     ("copyreg", "_reconstructor"), ("builtins", "object")]


def global_opcodes(module: str, name: str, protocol: int) -> bytes:
    """Pickle opcodes that push module.name: GLOBAL (text protocols) or STACK_GLOBAL (protocol 4+)."""
    if protocol < 4:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    unicode = lambda s: b"\x8c" + bytes([len(s.encode())]) + s.encode()  # SHORT_BINUNICODE
    return unicode(module) + unicode(name) + b"\x93"


def evil_pickle(module: str, name: str, marker: Path, protocol: int, wrap: bool) -> bytes:
    """A pickle calling module.name(argument) -- a command that would create `marker` -- at load time."""
    command = {"exec": f"with open({str(marker)!r}, 'w') as f: f.write('x')",
               "eval": f"open({str(marker)!r}, 'w').close()"}.get(name, f"touch {marker}")
    argument = command.encode()
    call = (global_opcodes(module, name, protocol) + b"("  # MARK
            + b"X" + struct.pack("<I", len(argument)) + argument + b"tR")  # BINUNICODE, TUPLE, REDUCE
    head = b"\x80" + bytes([max(protocol, 2)]) if protocol >= 2 else b""
    if wrap:  # inside the batch dict, as the value of b"data"
        key = b"C" + bytes([4]) + b"data"  # SHORT_BINBYTES
        return head + b"}" + key + call + b"s."  # EMPTY_DICT, key, value, SETITEM
    return head + call + b"."


NAME_CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\x00")  # encodable


@FUZZ
@given(target=st.sampled_from(DANGEROUS_GLOBALS)
       | st.tuples(st.text(NAME_CHARACTERS, min_size=1, max_size=12), st.text(NAME_CHARACTERS, min_size=1, max_size=12)),
       protocol=st.integers(0, 5), wrap=st.booleans(), which=st.sampled_from(CIFAR_FILES))
def test_cifar_pickle_naming_any_global_is_refused_and_never_run(target, protocol, wrap, which):
    module, name = target
    assume(len(module.encode()) < 256 and len(name.encode()) < 256)
    with scratch() as folder:
        marker = Path(folder) / "pwned"
        payload = evil_pickle(module, name, marker, protocol, wrap)
        error = outcome(safe_unpickle, payload, "evil")
        assert isinstance(error, KdkitError)
        batches = Path(folder) / "cifar-10-batches-py"
        write_cifar(batches)
        (batches / which).write_bytes(payload)
        error = outcome(load_dataset, "cifar10", data_dir=folder, download=False)
        assert isinstance(error, KdkitError)
        assert not marker.exists(), f"{module}.{name} was executed"
        if (module, name) in DANGEROUS_GLOBALS:
            assert "refusing to load" in str(error)


@pytest.mark.parametrize("claimed", [2**33, 2**40, 2**62])
def test_cifar_pickled_array_claiming_terabytes(claimed):
    """numpy's own pickles are allowed; one whose array claims a huge shape is refused without
    touching that memory (numpy may reserve it lazily; nothing is written into it)."""
    import resource

    valid = pickle.dumps(np.zeros(3, np.uint8), 2)
    assert valid[58:60] == b"K\x00"  # the (0,) placeholder shape passed to _reconstruct
    payload = valid[:58] + b"\x8a\x08" + claimed.to_bytes(8, "little") + valid[60:]  # LONG1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = outcome(safe_unpickle, payload, "batch")
    assert isinstance(result, (np.ndarray, KdkitError))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 2**10  # KiB


def test_evil_pickle_helper_builds_live_payloads(tmp_path):
    """The payloads above are real: plain pickle runs them."""
    marker = tmp_path / "pwned"
    pickle.loads(evil_pickle("builtins", "exec", marker, 4, wrap=True))
    assert marker.exists()
    marker.unlink()
    pickle.loads(evil_pickle("os", "system", marker, 0, wrap=False))
    assert marker.exists()


# ====================================================================== 2c. archives

def tar_bytes(source: Path, compression: str) -> bytes:
    """A tar of `source`, byte-identical on every call (hypothesis replays examples)."""
    def fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(source, arcname=source.name, filter=fixed)
    data = buffer.getvalue()
    compress = {"gz": lambda b: gzip.compress(b, mtime=0), "bz2": bz2.compress, "xz": lzma.compress,
                "": lambda b: b}[compression]
    return compress(data)


@FUZZ
@given(compression=st.sampled_from(["gz", "bz2", "xz", ""]),
       suffix=st.sampled_from([".tar.gz", ".tgz", ".tar"]), data=st.data())
def test_cifar_archive_cut_flipped_or_replaced(compression, suffix, data):
    with scratch() as folder:
        write_cifar(Path(folder) / "src" / "cifar-10-batches-py")
        valid = tar_bytes(Path(folder) / "src" / "cifar-10-batches-py", compression)
        archive = Path(folder) / f"cifar-10-python{suffix}"
        archive.write_bytes(data.draw(mutated(valid)))
        outcome(load_dataset, str(archive))
        outcome(load_dataset, "cifar10", data_dir=folder, download=False)


# ====================================================================== 2d. ImageFolder trees

def image_bytes(mode: str, size: tuple[int, int], fmt: str, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = {"RGB": (size[1], size[0], 3), "RGBA": (size[1], size[0], 4)}.get(mode, (size[1], size[0]))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA" if mode == "RGBA" else "RGB" if mode == "RGB" else "L")
    if mode not in ("RGB", "RGBA", "L"):
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


FORMATS = {".png": ("PNG", ["L", "RGB", "RGBA", "P", "1", "LA", "I;16"]), ".jpg": ("JPEG", ["L", "RGB", "CMYK"]),
           ".gif": ("GIF", ["L", "P"]), ".bmp": ("BMP", ["L", "RGB", "1"]),
           ".tiff": ("TIFF", ["L", "RGB", "F", "I;16", "CMYK", "LAB"]), ".webp": ("WEBP", ["RGB", "RGBA"]),
           ".ppm": ("PPM", ["L", "RGB"])}


@st.composite
def image_file(draw) -> tuple[str, bytes]:
    """(suffix, bytes): a real image, a damaged one, random bytes, or a non-image file."""
    suffix = draw(st.sampled_from(sorted(FORMATS) + [".jpeg", ".pgm", ".tif", ".PNG", ".txt", "", ".npy"]))
    fmt_suffix = {".jpeg": ".jpg", ".pgm": ".ppm", ".tif": ".tiff", ".PNG": ".png"}.get(suffix, suffix)
    if fmt_suffix not in FORMATS:
        return suffix, draw(st.binary(max_size=32))
    fmt, modes = FORMATS[fmt_suffix]
    size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    valid = image_bytes(draw(st.sampled_from(modes)), size, fmt, draw(st.integers(0, 3)))
    if draw(st.booleans()):
        return suffix, valid
    return suffix, draw(mutated(valid))


NAMES = st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_ ."), min_size=1,
                max_size=6).filter(lambda s: s not in (".", ".."))


@st.composite
def image_trees(draw) -> dict[str, bytes | None]:
    """{relative path: bytes, or None for an empty folder}, mostly ImageFolder-shaped."""
    tree = {}
    split_layout = draw(st.booleans())
    root = draw(st.sampled_from(["", "data/"]))
    for split in (["train/", "test/"] if split_layout else [""]):
        for name in draw(st.lists(NAMES, max_size=3, unique=True)):
            files_here = draw(st.lists(image_file(), max_size=3))
            if not files_here:
                tree[f"{root}{split}{name}"] = None
            for i, (suffix, content) in enumerate(files_here):
                tree[f"{root}{split}{name}/{i}{suffix}"] = content
    for path in draw(st.lists(st.lists(NAMES, min_size=1, max_size=4).map("/".join), max_size=2)):
        suffix, content = draw(image_file())
        tree[f"{path}{suffix}"] = content  # strays, at any depth
    return tree


def write_tree(root: Path, tree: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in tree.items():
        path = root / relative
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            pass  # a file where the tree has a folder, or the reverse: skip it


@FUZZ
@given(tree=image_trees(), archive=st.sampled_from([None, "gz", ""]))
def test_image_folder_trees(tree, archive):
    with scratch() as folder:
        root = Path(folder) / "pets"
        write_tree(root, tree)
        target = root
        if archive is not None:
            target = Path(folder) / ("pets.tar.gz" if archive else "pets.tar")
            target.write_bytes(tar_bytes(root, archive))
        ds = outcome(load_dataset, str(target))
        if not isinstance(ds, KdkitError):
            assert len(ds.train) + len(ds.val) + len(ds.test) > 0
            assert ds.train.images.dtype == torch.uint8 and ds.train.images.ndim == 4


# ====================================================================== 2e. decoded-array cache

@FUZZ
@given(data=st.data())
def test_damaged_decode_cache_is_rebuilt(data):
    """The cache is kdkit's own file: a damaged one is decoded again, never an error."""
    with scratch() as folder:
        raw = RawData(np.zeros((3, 1, 2, 2), np.uint8), np.array([0, 1, 0]), None, None, ["a", "b"], "x")
        source = Path(folder) / "src.tar"
        source.write_bytes(b"x")
        files.cached(source, lambda alloc: raw)
        folder = files.cache_root() / "decoded" / f"src.tar-{files.fingerprint(source)}"
        cache_file = folder / data.draw(st.sampled_from(["x_train.npy", "y_train.npy", "classes.npy"]))
        cache_file.write_bytes(data.draw(mutated(cache_file.read_bytes())))
        again = files.cached(source, lambda alloc: raw)
        assert isinstance(again, RawData)
        shutil.rmtree(folder, ignore_errors=True)


# ====================================================================== 2f. from_arrays

ARRAY_DTYPES = st.sampled_from([np.uint8, np.int8, np.int64, np.uint64, np.float16, np.float32, np.float64,
                                np.bool_, np.complex64, np.dtype("U2"), np.dtype("M8[D]")])
NP_ARRAYS = st.one_of(
    hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)),
    hnp.arrays(object, hnp.array_shapes(max_dims=2, max_side=3), elements=st.integers() | st.text(max_size=2)))
ARRAYS = st.one_of(
    NP_ARRAYS,
    st.lists(st.integers(-3, 3) | st.lists(st.integers(0, 3), max_size=2), max_size=4),  # ragged
    st.none(), st.integers(), st.floats())
LABELS = st.one_of(
    hnp.arrays(st.sampled_from([np.int64, np.int8, np.uint64, np.float32, np.bool_]),
               hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6)),
    hnp.arrays(np.int64, st.integers(0, 6), elements=st.integers(-2, 9)),
    hnp.arrays(np.int64, st.integers(1, 6), elements=st.sampled_from([0, 1, 2**31, 2**62, -1])),
    hnp.arrays(np.float64, st.integers(1, 6), elements=st.sampled_from([0.0, 1.0, np.nan, np.inf, -1.0])),
    st.lists(st.integers(-1, 4) | st.text(max_size=1) | st.none(), max_size=6))


@st.composite
def image_arrays(draw):
    """Mostly (N, C, H, W)-like with N matching the labels, sometimes anything at all."""
    n = draw(st.integers(0, 6))
    shape = draw(st.sampled_from([(n, 1, 3, 3), (n, 3, 2, 2), (n, 2, 2, 3), (n, 4), (n, 3, 3), (n, 5, 2, 2),
                                  (n,), (n, 1, 1, 1, 1)]))
    dtype = draw(ARRAY_DTYPES)
    x = draw(hnp.arrays(dtype, shape))
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(-1, 4)) | LABELS)
    return x, labels


@FUZZ
@given(train=image_arrays() | st.tuples(ARRAYS, LABELS), test=image_arrays() | st.tuples(ARRAYS, LABELS),
       classes=st.none() | st.lists(st.text(max_size=3), max_size=6),
       val_fraction=st.sampled_from([0.0, 0.1, 0.5, 0.99]) | st.floats(), tensors=st.booleans())
@example(train=(np.zeros((4, 1, 2, 2), np.uint8), np.array([0, 1, 0, 2**62])),
         test=(np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 1])), classes=None, val_fraction=0.1,
         tensors=False)
def test_from_arrays_of_any_arrays(train, test, classes, val_fraction, tensors):
    (x_train, y_train), (x_test, y_test) = train, test
    if tensors:  # torch tensors are accepted too, for the dtypes torch has (float32 as bfloat16)
        x_train, y_train, x_test, y_test = (
            (torch.from_numpy(a).bfloat16() if a.dtype == np.float32 else torch.from_numpy(a))
            if isinstance(a, np.ndarray) and a.dtype.kind in "iufb" and a.dtype != np.uint64
            else a for a in (x_train, y_train, x_test, y_test))
    ds = outcome(from_arrays, x_train, y_train, x_test, y_test, classes=classes, val_fraction=val_fraction)
    if not isinstance(ds, KdkitError):
        assert ds.train.images.ndim in (2, 4) and ds.train.labels.dtype == torch.int64


# ====================================================================== 2g. imbalance specs

SPECS = st.one_of(
    st.text(max_size=20),
    st.builds(lambda p, sep, f: f"{p}{sep}{f}", st.sampled_from(["exp", "step", "EXP", " step ", "lin", ""]),
              st.sampled_from([":", "::", "=", " : "]),
              st.sampled_from(["100", "1", "0.5", "-1", "nan", "inf", "1e308", "1e999", "1_0", "", "x",
                               "9" * 400]) | st.floats().map(str)),
    st.integers(), st.floats(), st.none())


@FUZZ
@given(spec=SPECS)
def test_parse_imbalance_of_any_spec(spec):
    result = outcome(parse_imbalance, spec)
    if not isinstance(result, KdkitError):
        profile, factor = result
        assert profile in ("exp", "step") and factor >= 1 and np.isfinite(factor)
        small = from_arrays(np.zeros((30, 1, 2, 2), np.uint8), np.arange(30) % 3,
                            np.zeros((6, 1, 2, 2), np.uint8), np.arange(6) % 3)
        outcome(long_tailed, small, spec, seed=0)


# ====================================================================== 2h. dataset names and --data-dir

PATHISH = st.one_of(
    st.text(max_size=20),
    st.builds(lambda prefix, rest: prefix + rest,
              st.sampled_from(["", "./", "~/", "~nosuchuser-kdkit/", "~", "x.tar.gz", "a/b/"]),
              st.text(st.characters(blacklist_characters="/"), max_size=12)),
    st.sampled_from(["digits", "mnist", "cifar10", "cifar100", "fashion_mnist", "MNIST", "x" * 300,
                     "a\x00b", "~nosuchuser-kdkit", ""]))


def harmless(path: str | None) -> bool:
    """Never let a random name read a real folder outside the sandbox (/, ~root, ..)."""
    if path is None:
        return True
    text = str(path)
    return not text.startswith("/") and ".." not in text and not (text.startswith("~") and not (
        text == "~" or text.startswith("~/") or text.startswith("~nosuchuser")))


@FUZZ
@given(name=PATHISH, data_dir=st.none() | PATHISH)
@example(name="~nosuchuser-kdkit/pets", data_dir=None)
@example(name="cifar10", data_dir="~nosuchuser-kdkit/data")
@example(name="x" * 300, data_dir=None)
@example(name="mnist", data_dir="x" * 300)
def test_load_dataset_of_any_name_and_data_dir(name, data_dir):
    assume(harmless(name) and harmless(data_dir))
    assume(name.strip().lower() not in ("fashion-mnist",))  # this machine may hold the real one
    outcome(load_dataset, name, data_dir=data_dir, download=False)


# ====================================================================== 2i. downloads

class _Server:
    """A local HTTP 'server' answering every request with whatever bytes the test sets."""

    def __init__(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one_request(self):
                self.raw_requestline = self.rfile.readline(65537)
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                self.wfile.write(server.response)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.response = b""
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/f.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def http_server():
    server = _Server()
    yield server
    server.close()


RESPONSES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda status, length, body: f"HTTP/1.1 {status} X\r\nContent-Length: {length}\r\n\r\n".encode() + body,
              st.sampled_from([200, 404, 500, 301, 999, -1]), st.sampled_from(["5", "1000", "-3", "x", ""]),
              st.binary(max_size=20)),
    st.builds(lambda body: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
              st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"ffff\r\nab", b""])))


@FUZZ
@given(response=RESPONSES)
@example(response=b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort")
@example(response=b"garbage\r\n\r\n")
def test_download_of_any_server_answer(http_server, response):
    http_server.response = response
    with scratch() as folder:
        result = outcome(download_module.fetch, "f.gz", "0" * 32, (http_server.url,), Path(folder) / "d")
        assert isinstance(result, KdkitError)  # the md5 never matches
        assert "\n" not in str(result) and "\r" not in str(result)
        assert list((Path(folder) / "d").iterdir()) == []  # no partial file left behind


# ====================================================================== 3. teacher outputs and predict inputs
# Readers outside kdkit.data (kdkit/teachers/sources.py, kdkit/predict.py). np.load on a damaged
# file raises ValueError, EOFError or tokenize.TokenError; pyarrow ArrowInvalid or OSError.

def npy_with_unclosed_header() -> bytes:
    """A .npy whose header dict lost its closing brace: numpy's legacy-header fallback raises
    tokenize.TokenError, which is not a ValueError."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 3), np.float32))
    return buffer.getvalue().replace(b"), }", b"),  ", 1)


@st.composite
def npy_files(draw) -> bytes:
    array = draw(NP_ARRAYS | hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=4)))
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    valid = buffer.getvalue()
    return valid if draw(st.booleans()) else draw(mutated(valid))


@FUZZ
@given(content=npy_files())
@example(content=b"")
@example(content=npy_with_unclosed_header())
def test_teacher_npy_file_of_any_bytes(content):
    from kdkit.teachers.sources import FileTeacher

    with scratch() as folder:
        path = Path(folder) / "logits.npy"
        path.write_bytes(content)
        outcome(FileTeacher, path)


@FUZZ
@given(content=npy_files(), channels=st.sampled_from([1, 3]))
@example(content=b"", channels=1)
@example(content=npy_with_unclosed_header(), channels=1)
def test_predict_npy_inputs_of_any_bytes(content, channels):
    from kdkit.predict import read_inputs

    meta = {"input_shape": [channels, 2, 2], "mean": [0.5] * channels, "std": [0.25] * channels,
            "input_dtype": "uint8"}
    with scratch() as folder:
        path = Path(folder) / "x.npy"
        path.write_bytes(content)
        outcome(read_inputs, path, meta)


@FUZZ
@given(data=st.data())
def test_teacher_parquet_file_of_any_bytes(data):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from kdkit.teachers.sources import FileTeacher

    columns = data.draw(st.dictionaries(st.sampled_from(["index", "cat", "dog", "emu"]),
                                        st.sampled_from(["float", "int", "str", "nan", "neg"]), max_size=4))
    values = {"float": [0.1, 0.2, 0.3], "int": [0, 1, 2], "str": ["a", "b", "c"],
              "nan": [float("nan"), 1.0, 2.0], "neg": [-1, 0, 0]}
    buffer = io.BytesIO()
    pq.write_table(pa.table({name: values[kind] for name, kind in columns.items()}), buffer)
    content = buffer.getvalue()
    if data.draw(st.booleans()):
        content = data.draw(mutated(content))
    with scratch() as folder:
        path = Path(folder) / "logits.parquet"
        path.write_bytes(content)
        outcome(FileTeacher, path)


@FUZZ
@given(data=st.data())
def test_teacher_safetensors_file_of_any_bytes(data):
    from safetensors.numpy import save

    from kdkit.teachers.sources import FileTeacher

    tensors = data.draw(st.dictionaries(st.sampled_from(["logits", "probs", "other"]),
                                        hnp.arrays(st.sampled_from([np.float32, np.int64, np.float16]),
                                                   hnp.array_shapes(min_dims=0, max_dims=3, max_side=3)),
                                        max_size=2))
    metadata = data.draw(st.none() | st.dictionaries(st.sampled_from(["classes", "x"]),
                                                     st.sampled_from(['["a", "b"]', "[", "3", '[1, "a"]', ""])))
    content = save(tensors, metadata=metadata)
    if data.draw(st.booleans()):
        content = data.draw(mutated(content))
    with scratch() as folder:
        path = Path(folder) / "logits.safetensors"
        path.write_bytes(content)
        outcome(FileTeacher, path)
