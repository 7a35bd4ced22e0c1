"""The catalogue of bad input (docs/errors.md): one test per row not tested elsewhere, each asserting
the exact message (or its distinctive part), exit code 2 and no traceback.

CLI cases call the real entry point `kdkit.cli.main` in-process (sys.argv patched, SystemExit
caught), so the file stays fast; tests/test_cli.py runs a few of the same paths in a subprocess.
"""
import sys

import numpy as np
import pytest

from kdkit.errors import KdkitError

FAST = ["--epochs", "1", "--set", "progress=false", "--set", "batch_size=64"]


def cli(*args, monkeypatch, capsys, cwd=None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `kdkit ARGS`, run in this process."""
    from kdkit.cli import main

    monkeypatch.setattr(sys, "argv", ["kdkit", *[str(a) for a in args]])
    monkeypatch.setattr(sys, "path", list(sys.path))  # (a test may add a folder of user hooks)
    if cwd is not None:
        monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def error_line(result) -> str:
    """The one `error: ...` line of a failed command (exit code 2, no traceback), without `error: `."""
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0][len("error: "):]


@pytest.fixture
def run(monkeypatch, capsys, tmp_path):
    """run(*args) -> the error message of `kdkit ARGS` (asserted to be one line, exit 2)."""
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))  # decoded datasets stay in tmp
    monkeypatch.setenv("KDKIT_DATA", str(tmp_path / "no-data"))

    def go(*args, cwd=None):
        return error_line(cli(*args, monkeypatch=monkeypatch, capsys=capsys, cwd=cwd))

    return go


@pytest.fixture(scope="module")
def train_run(tmp_path_factory, digits):
    """A finished one-epoch `kdkit train` run on digits (cnn-tiny)."""
    from kdkit.config import TrainConfig, apply_overrides
    from kdkit.recipes import run_train

    out = tmp_path_factory.mktemp("bad") / "train"
    cfg = apply_overrides(TrainConfig(), {"dataset": "digits", "model": "cnn-tiny", "epochs": 1, "batch_size": 64,
                                          "progress": False, "amp": "off", "out": str(out)})
    run_train(cfg, digits)
    return out


@pytest.fixture(scope="module")
def onnx_model(train_run):
    """The train run exported with `kdkit export` (RUN/export/model.onnx + sidecar)."""
    pytest.importorskip("onnxruntime")
    from kdkit.export import export_run

    return export_run(train_run, repeats=1)["onnx"]


def save_teacher(path, arch="cnn-tiny", weights_of=None, weight_sizes=None, **meta):
    """Weights + sidecar as kdkit writes them, for digits; the tensors may come from another
    architecture (`weights_of`) or other sizes (`weight_sizes`) than the sidecar says; `meta`
    overrides sidecar keys."""
    from kdkit.checkpoint import save_weights
    from kdkit.data import load_dataset
    from kdkit.models import create_model

    sizes = {"num_classes": 10, "in_channels": 1, "image_size": 8}
    model = create_model(weights_of or arch, **(sizes | (weight_sizes or {})))
    classes = list(load_dataset("digits").classes)
    save_weights(path, model.state_dict(), {"arch": arch, **sizes, "classes": classes, "dataset": "digits"} | meta)
    return path


def image_folder(root, classes, sizes=None):
    """An ImageFolder tree train/<class>/*.png + test/<class>/*.png of 8x8 grey images."""
    from PIL import Image

    for c in classes:
        for split in ("train", "test"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                size = (sizes or {}).get((split, c, i), 8)
                Image.fromarray(np.full((size, size), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")
    return root


# ---- rows of the original table that had no test asserting their message --------------------------------

def test_bad_seeds(run, tmp_path):
    assert run("distill", "--seeds", "a,b", "--out", tmp_path / "o") == \
        "--seeds expects comma-separated integers, got 'a,b'; e.g. --seeds 0,1,2"


def test_config_file_missing_or_not_yaml(run, tmp_path):
    assert run("train", "--config", "nope.yaml", cwd=tmp_path) == "config file 'nope.yaml' not found; check the path"
    (tmp_path / "c.yaml").write_text("lr: 0.1\nepochs: : 2\n")
    assert run("train", "--config", "c.yaml", cwd=tmp_path) == "config file 'c.yaml' is not valid YAML at line 2; fix the syntax"


def test_teacher_class_order_differs(run, tmp_path):
    save_teacher(tmp_path / "t" / "best.safetensors", classes=[str(9 - i) for i in range(10)])
    assert run("distill", "--dataset", "digits", "--teacher", tmp_path / "t", *FAST, "--out", tmp_path / "o") == \
        "teacher class 0 is '9' but the dataset's is '0'; the teacher was trained with another class order or dataset"


def test_pickled_object_array_as_teacher_outputs(run, tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    message = run("distill", "--dataset", "digits", "--teacher", tmp_path / "x.npy", *FAST, "--out", tmp_path / "o")
    assert message.startswith(f"teacher file '{tmp_path / 'x.npy'}' cannot be read without unpickling (")
    assert message.endswith("); save a plain float array with np.save")


# ---- command line ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,expected", [
    (["trian"], "No such command 'trian'. Did you mean 'train'? See `kdkit --help`"),
    (["train", "--bogus", "1"], "No such option: --bogus"),
    (["train", "--epochs", "ten"], "Invalid value for '--epochs': "),
    (["distill", "--epochs"], "Option '--epochs' requires an argument; see `kdkit distill --help`"),
    (["export"], "Missing argument 'source'; see `kdkit export --help`"),
], ids=["unknown-command", "unknown-option", "flag-type", "flag-without-value", "missing-argument"])
def test_usage_errors_are_one_line(run, args, expected):
    message = run(*args)
    assert message.startswith(expected)
    assert message.endswith("--help`")


@pytest.mark.parametrize("sets,expected", [
    (["epochs=0"], "config key 'epochs' must be in [1, 2147483647], got 0; e.g. --set epochs=10"),
    (["batch_size=-4"], "config key 'batch_size' must be in [1, 2147483647], got -4; e.g. --set batch_size=128"),
    (["lr=0"], "config key 'lr' must be in (0, inf), got 0.0; e.g. --set lr=0.05"),
    (["temperature=-1"], "config key 'temperature' must be in (0, inf), got -1.0; e.g. --set temperature=4"),
    (["val_fraction=1"], "config key 'val_fraction' must be in [0, 1), got 1.0; e.g. --set val_fraction=0.1"),
    (["lr"], "--set expects key=value, got 'lr'; e.g. --set lr=0.1"),
    (["seeds="], "config key 'seeds' is empty; give at least one seed, e.g. --seeds 0,1,2"),
    (["generations=0"], "config key 'generations' must be in [1, 2147483647], got 0; e.g. --set generations=1"),
    (["imbalance=exp"], "imbalance 'exp' is not profile:factor; write it as exp:100 or step:10"),
], ids=["epochs", "batch_size", "lr", "temperature", "val_fraction", "set-without-equals", "seeds", "generations",
        "imbalance"])
def test_bad_config_values(run, tmp_path, sets, expected):
    args = [a for s in sets for a in ("--set", s)]
    assert run("distill", "--dataset", "digits", "--teacher", "cnn-tiny", *args, "--out", tmp_path / "o") == expected
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_config_file_not_a_mapping(run, tmp_path):
    (tmp_path / "c.yaml").write_text("- lr: 0.1\n- epochs: 2\n")
    assert run("train", "--config", "c.yaml", cwd=tmp_path).startswith(
        "config file 'c.yaml' must be a mapping of key: value, got list; write one key: value per line, e.g. epochs: 10")


@pytest.mark.parametrize("command", ["train", "evaluate", "report"])
def test_unknown_device(run, tmp_path, command, train_run):
    args = {"train": ["train", "--dataset", "digits", "--model", "cnn-tiny", *FAST, "--out", tmp_path / "o"],
            "evaluate": ["evaluate", train_run], "report": ["report", train_run]}[command]
    assert run(*args, "--device", "gpu") == "unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps, e.g. --device cpu"


def test_out_is_a_file(run, tmp_path):
    (tmp_path / "f").write_text("x")
    base = ["train", "--dataset", "digits", "--model", "cnn-tiny", *FAST]
    assert run(*base, "--out", "f", cwd=tmp_path) == "--out 'f' is a file, not a run directory; choose a folder (new, empty or an earlier `kdkit train` run)"
    assert run(*base, "--out", "f/run", cwd=tmp_path) == "--out 'f/run' is inside 'f', which is a file; choose another path"
    assert run("distill", "--dataset", "digits", "--teacher", "cnn-tiny", *FAST, "--out", "f", cwd=tmp_path).startswith(
        "--out 'f' is a file, not a run directory")


@pytest.mark.parametrize("command,folder,example", [
    ("evaluate", "d", "metrics.json"), ("predict", "d", "predictions.csv"), ("compare", "d", "compare.html"),
    ("export", "d.onnx", "student.onnx")])
def test_out_file_is_a_folder(run, tmp_path, command, folder, example, train_run):
    if command == "export":
        pytest.importorskip("onnxruntime")
    (tmp_path / folder).mkdir()
    args = {"evaluate": ["evaluate", train_run], "predict": ["predict", "m.onnx", "x.npy"],
            "compare": ["compare", train_run], "export": ["export", train_run]}[command]
    assert run(*args, "--out", folder, cwd=tmp_path) == f"--out '{folder}' is a folder; name a file, e.g. --out {folder}/{example}"


def test_ensemble_of_one(run, tmp_path):
    assert run("ensemble", "--dataset", "digits", "--teacher", "cnn-tiny", "--members", "1", "--out", tmp_path / "o") == \
        "an ensemble needs at least 2 members, got --members 1; use --members 2 or more, or list the architectures: " \
        "--teacher cnn,resnet8"


def test_model_hook_with_a_parameter_kdkit_cannot_fill(run, tmp_path):
    (tmp_path / "kdkit_bad_hook.py").write_text(
        "import torch\n\ndef make_net(num_classes, depth):\n    return torch.nn.Linear(64, num_classes)\n")
    message = run("train", "--dataset", "digits", "--model", "kdkit_bad_hook:make_net", *FAST, "--out", "o", cwd=tmp_path)
    assert message == ("cannot find module 'kdkit_bad_hook' for model hook 'kdkit_bad_hook:make_net'; kdkit does not "
                       "import from the working directory on its own: run with PYTHONPATH=. (or install the module)")
    sys.path.insert(0, str(tmp_path))  # PYTHONPATH=. (cli() restores sys.path)
    message = run("train", "--dataset", "digits", "--model", "kdkit_bad_hook:make_net", *FAST, "--out", "o", cwd=tmp_path)
    assert message == ("model hook 'kdkit_bad_hook:make_net' cannot be called as make_net(num_classes=...): missing a "
                       "required argument: 'depth'; give the argument in model_kwargs (e.g. --set model_kwargs='{name: "
                       "value}') or a default (kdkit passes num_classes, in_channels and image_size to parameters of those names)")


# ---- data --------------------------------------------------------------------------------------------------

def test_dataset_path_does_not_exist(run, tmp_path):
    assert run("train", "--dataset", "no/such/folder", *FAST, cwd=tmp_path) == \
        "dataset path 'no/such/folder' does not exist; check the path"


def test_data_file_as_dataset(run, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 8, 8), np.uint8))
    assert run("train", "--dataset", "x.npy", *FAST, cwd=tmp_path) == \
        "x.npy is neither a folder nor a .tar.gz/.tgz/.tar archive; give a dataset folder or archive"
    np.savetxt(tmp_path / "x.csv", np.zeros((10, 5)), delimiter=",")  # a table (docs/data.md), but with no label column
    assert run("train", "--dataset", "x.csv", *FAST, cwd=tmp_path).startswith(
        "the training table has no label column 'label'; its columns are ")


def test_image_folder_without_images(run, tmp_path):
    (tmp_path / "imgs" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "train" / "cat" / "readme.txt").write_text("no images here")
    assert run("train", "--dataset", "imgs", *FAST, cwd=tmp_path) == \
        "no images found in imgs; expected train/<class>/<image> and test/<class>/<image>, or <class>/<image>"


def test_image_folder_with_one_class(run, tmp_path):
    image_folder(tmp_path / "imgs", ["cat"])
    assert run("train", "--dataset", "imgs", "--model", "cnn-tiny", *FAST, "--out", "o", cwd=tmp_path) == \
        "dataset 'imgs' has 1 class (cat); a classifier needs at least 2: add a train/<class>/ and test/<class>/ folder per class"
    assert not (tmp_path / "o").exists()  # refused before training


def test_image_folder_with_images_of_different_sizes(run, tmp_path):
    image_folder(tmp_path / "imgs", ["a", "b"], sizes={("train", "b", 2): 16})
    assert run("train", "--dataset", "imgs", *FAST, cwd=tmp_path) == \
        "imgs: images differ in size (test/a/0.png is 8x8, train/b/2.png is 16x16); set image_size=N (--set image_size=N) to resize every image to N x N as it loads"


# ---- teachers, weights and run directories -----------------------------------------------------------------

def test_teacher_path_that_does_not_exist(run, tmp_path):
    assert run("distill", "--dataset", "digits", "--teacher", "runs/nope", *FAST, "--out", "o", cwd=tmp_path) == \
        "teacher 'runs/nope' not found: no such run directory or weights file; check the path, or name an architecture (`kdkit models`)"


def test_no_teacher(run, tmp_path):
    assert run("distill", "--dataset", "digits", "--set", "teacher=", *FAST, "--out", tmp_path / "o") == \
        "no teacher given; --teacher names weights, an architecture, saved outputs or sklearn:NAME"


def test_teacher_weights_of_another_architecture(run, tmp_path):
    save_teacher(tmp_path / "mlp" / "best.safetensors", weights_of="mlp")  # sidecar says cnn-tiny
    save_teacher(tmp_path / "rgb" / "best.safetensors", weight_sizes={"in_channels": 3})  # sidecar says 1 channel
    base = ["distill", "--dataset", "digits", *FAST, "--out", "o"]
    message = run(*base, "--teacher", "mlp", cwd=tmp_path)
    assert message.startswith("weights 'mlp/best.safetensors' do not fit architecture 'cnn-tiny' that its sidecar "
                              "'best.json' names (16 tensors missing, e.g. 'stage1.0.weight'; ")
    assert message.endswith("they belong to another model: point at the weights the sidecar describes")
    assert "(1 of another shape, e.g. 'stage1.0.weight' is (8, 3, 3, 3) in the file, (8, 1, 3, 3) in the model)" in \
        run(*base, "--teacher", "rgb", cwd=tmp_path)


def test_damaged_teacher_outputs(run, tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((5, 10), np.float32))
    (tmp_path / "t.npy").write_bytes((tmp_path / "t.npy").read_bytes()[:90])  # cut inside the header
    base = ["distill", "--dataset", "digits", *FAST, "--out", "o"]
    message = run(*base, "--teacher", "t.npy", cwd=tmp_path)
    assert message.startswith("teacher file 't.npy' is damaged or not a .npy file (EOF: reading array header")
    assert message.endswith("); save the outputs again with np.save")
    pytest.importorskip("pyarrow")
    (tmp_path / "t.parquet").write_bytes(b"PAR1 not really")
    message = run(*base, "--teacher", "t.parquet", cwd=tmp_path)
    assert message.startswith("teacher file 't.parquet' is not a readable parquet file (ArrowInvalid: ")
    assert message.endswith("); save it again, e.g. with pandas.DataFrame.to_parquet")


def test_weights_without_sidecar(run, tmp_path, train_run):
    (tmp_path / "w.safetensors").write_bytes((train_run / "best.safetensors").read_bytes())
    assert run("evaluate", "w.safetensors", cwd=tmp_path) == (
        "'w.safetensors' has no sidecar 'w.json' naming its architecture; save weights with kdkit, or, for a "
        "teacher, name its architecture: --teacher ARCH --set teacher_state_dict=w.safetensors")


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_folder_without_weights(run, tmp_path, command):
    (tmp_path / "empty").mkdir()
    assert run(command, "empty", cwd=tmp_path) == ("no weights in run directory 'empty' (expected best.safetensors); "
                                                   "point at a `kdkit train` run or a .safetensors file")


def test_weights_file_not_found(run, tmp_path):
    assert run("evaluate", "nope.safetensors", cwd=tmp_path) == "weights file 'nope.safetensors' not found; check the path"


def test_resume_with_other_settings(run, tmp_path, digits):
    from kdkit.config import TrainConfig, apply_overrides
    from kdkit.recipes import run_train

    cfg = apply_overrides(TrainConfig(), {"dataset": "digits", "model": "cnn-tiny", "epochs": 2, "batch_size": 64,
                                          "max_steps": 2, "progress": False, "out": str(tmp_path / "r")})
    assert run_train(cfg, digits)["stopped_early"]
    message = run("train", "--config", tmp_path / "r" / "config.yaml", "--batch-size", "32", "--resume")
    assert message == (f"--resume: the run in '{tmp_path / 'r'}' was made with other settings "
                       "(batch_size: 64 -> 32); rerun with the original values, or drop --resume (or use another --out) "
                       "to start over")


# ---- report, export, predict -------------------------------------------------------------------------------

def test_report_of_a_folder_that_is_not_a_run(run, tmp_path):
    (tmp_path / "empty").mkdir()
    expected = "no summary.json in 'empty'; point at a finished `kdkit distill` run directory"
    assert run("report", "empty", cwd=tmp_path) == expected
    assert run("compare", "empty", cwd=tmp_path) == expected


def test_report_of_a_train_run(run, train_run):
    assert run("report", train_run) == (f"'{train_run}' is a `kdkit train` run; reports compare teacher, scratch and "
                                        "student, so point at a `kdkit distill` run")


def test_report_samples_below_one(run, tmp_path):
    assert run("report", tmp_path, "--samples", "0") == \
        "--samples must be at least 1, got 0; e.g. --samples 1000 (or --no-importance to skip the analysis)"


def test_export_unknown_format_or_quantisation(run, train_run):
    assert run("export", train_run, "--format", "tflite") == "unknown export format 'tflite'; choose from: onnx"
    pytest.importorskip("onnxruntime")
    assert run("export", train_run, "--quantize", "int4") == "unknown quantisation 'int4'; did you mean 'int8'?"


def test_export_opset_out_of_range(run, train_run):
    pytest.importorskip("onnxruntime")
    from kdkit.export import opset_range

    low, high = opset_range()
    assert run("export", train_run, "--opset", "3") == \
        f"--opset 3 is outside the {low}..{high} that the ONNX exporter supports; the default 17 runs on onnxruntime"


def test_export_out_not_onnx(run, train_run):
    pytest.importorskip("onnxruntime")
    assert run("export", train_run, "--out", "x.txt") == "--out must name a .onnx file, got 'x.txt'; e.g. --out student.onnx"


def test_predict_with_something_else_than_an_exported_model(run, tmp_path, train_run, onnx_model):
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.uint8))
    assert run("predict", train_run, "x.npy", cwd=tmp_path) == \
        f"'{train_run}' is a folder; pass the .onnx file that kdkit export wrote, e.g. {onnx_model}"
    assert run("predict", "empty", "x.npy", cwd=tmp_path) == \
        "'empty' is a folder without an exported model; run `kdkit export RUN_DIR` first and pass the .onnx file it writes"
    weights = train_run / "best.safetensors"
    assert run("predict", weights, "x.npy", cwd=tmp_path) == \
        f"'{weights}' is not an exported .onnx model; run `kdkit export {weights}` first and pass the .onnx file it writes"
    assert run("predict", "nope.onnx", "x.npy", cwd=tmp_path) == \
        "model file 'nope.onnx' not found; check the path (kdkit export writes RUN/export/student.onnx, or model.onnx for a train run)"


def test_predict_array_of_the_wrong_shape(run, tmp_path, onnx_model):
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 16, 16), np.float32))
    assert run("predict", onnx_model, "x.npy", cwd=tmp_path) == (
        "'x.npy' holds an array of shape (3, 1, 16, 16) but the model takes (N, 1, 8, 8) or (N, 8, 8); reshape it, "
        "or pass a folder of images (they are resized)")


@pytest.mark.parametrize("kind,why", [
    ("object", "Object arrays cannot be loaded when allow_pickle=False"),
    ("text", "no .npy header"),
    ("truncated", "EOF: reading array header, expected"),
])
def test_predict_array_that_is_not_a_plain_npy(run, tmp_path, onnx_model, kind, why):
    path = tmp_path / "x.npy"
    if kind == "object":
        np.save(path, np.array([{"a": 1}] * 2, dtype=object), allow_pickle=True)
    elif kind == "text":
        path.write_text("0,1,2\n")
    else:
        np.save(path, np.zeros((2, 8, 8), np.uint8))
        path.write_bytes(path.read_bytes()[:100])
    message = run("predict", onnx_model, "x.npy", cwd=tmp_path)
    assert message.startswith(f"'x.npy' is not a plain numeric .npy array ({why}")
    assert message.endswith("); kdkit never unpickles: save the images with np.save as uint8 or float32")


def test_predict_array_of_strings(run, tmp_path, onnx_model):
    np.save(tmp_path / "x.npy", np.array([["a"] * 8] * 8))
    assert run("predict", onnx_model, "x.npy", cwd=tmp_path) == \
        "'x.npy' holds <U1 values, not numbers; save the images with np.save as uint8 or float32"


def test_predict_nan_inputs(run, tmp_path, onnx_model):
    x = np.full((2, 8, 8), 0.5, np.float32)
    x[0, 0, :3] = np.nan
    np.save(tmp_path / "x.npy", x)
    assert run("predict", onnx_model, "x.npy", cwd=tmp_path) == \
        "'x.npy' holds 3 NaN/inf values; replace them (the model's outputs for them are meaningless)"


def test_predict_inputs_of_another_kind(run, tmp_path, onnx_model):
    (tmp_path / "x.csv").write_text("0,1\n")
    assert run("predict", onnx_model, "x.csv", cwd=tmp_path) == \
        "inputs 'x.csv' are neither a folder of png/jpg images nor a .npy array; pass one of those"


def test_predict_top_below_one(run, tmp_path, onnx_model):
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.uint8))
    assert run("predict", onnx_model, "x.npy", "--top", "0", cwd=tmp_path) == "--top must be at least 1, got 0; e.g. --top 3"


def test_messages_are_kdkit_errors_in_python_too(tmp_path):
    """The same checks guard the Python API (the CLI only prints them)."""
    from kdkit.train import parse_device
    from kdkit.rundir import check_run_dir

    with pytest.raises(KdkitError, match="unknown device 'gpu'"):
        parse_device("gpu")
    (tmp_path / "f").write_text("x")
    with pytest.raises(KdkitError, match="is a file, not a run directory"):
        check_run_dir(tmp_path / "f", "train")
    assert check_run_dir(tmp_path / "new" / "run", "train") == tmp_path / "new" / "run"


@pytest.mark.parametrize("pair", ["lr=.nan", "lr=.inf", "alpha=.nan", "grad_clip=.inf"])
def test_nan_or_inf_config_values(pair):
    from kdkit.config import DistillConfig, resolve

    key = pair.split("=")[0]
    with pytest.raises(KdkitError, match=rf"config key '{key}' must be in [\[(]0, (1|inf)[\])], got (nan|inf); e.g. --set {key}="):
        resolve(DistillConfig, sets=[pair])
