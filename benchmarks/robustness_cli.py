"""The command-line robustness grid (issue 20): every option and argument of every `kdkit` command x
probe values (wrong type, empty, zero, negative, huge, NaN/inf, very long, unicode, and paths that
are missing, files, folders, symlinks, dangling or looping links, inside a file, unwritable).

Each cell runs `kdkit COMMAND ...` in this process with one value replaced. The other inputs are
chosen so that a value kdkit accepts fails right after, on data that does not exist (or on a model
file that is not one), so nothing trains or is written. A cell must end with exit code 2 and one
`error: ...` line under 300 characters, never a traceback; the listing commands (models, datasets, docs)
may exit 0, but only for a value their parameter can use (judged apart: else a silent accept); and
no file of the probe folder (the files and links the probes point at) may change.

    python benchmarks/robustness_cli.py           # every cell (a minute or two on 2 cores); writes the JSON
    python benchmarks/robustness_cli.py --quick   # two value probes and two path probes per parameter

`kdkit demo` is left out: with its data on the machine, an accepted value would run the demo.
The JSON (benchmarks/results/robustness_cli.json) holds the counts, any failing cells and the command.
tests/robustness/test_robustness_cli.py runs the quick grid (KDKIT_ROBUSTNESS=full: every cell).
"""
import collections
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "robustness_cli.json"
VALUES = ["abc", "", "0", "-1", "1e400", "nan", "inf", "-inf", "9" * 400, "x" * 5000, "ünïcødé ☃", "a,b,,", "--",
          "1.5", "[1]"]
PATHS = ["missing", "folder", "text.txt", "link-to-text", "dangling", "loop", "text.txt/inside", "empty-folder",
         "n" * 300]
QUICK = (["abc", "-1"], ["missing", "text.txt"])
NO_DATA = "/nonexistent/kdkit-robustness-data"
SKIPPED = ("demo",)  # an accepted value would run it (its data may be on the machine)


def probe_folder(root: Path) -> Path:
    """Files, folders and links the path probes name (hashed before and after the grid)."""
    folder = root / "probes"
    (folder / "folder").mkdir(parents=True)
    (folder / "folder" / "f.txt").write_text("the user's file\n")
    (folder / "empty-folder").mkdir()
    (folder / "text.txt").write_text("the user's text\n")
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    (folder / "link-to-text").symlink_to(folder / "text.txt")
    (folder / "dangling").symlink_to(folder / "nowhere")
    (folder / "loop").symlink_to(folder / "loop2")
    (folder / "loop2").symlink_to(folder / "loop")
    import numpy as np

    np.save(folder / "x.npy", np.zeros((2, 1, 8, 8), np.uint8))
    return folder


def snapshot(folder: Path) -> dict:
    entries = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            entries[str(p)] = "link -> " + os.readlink(p)
        elif p.is_file():
            entries[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            entries[str(p)] = "folder"
    return entries


def train_run(root: Path) -> Path:
    """A finished one-epoch `kdkit train` run on digits: the weights evaluate/export/report/compare take."""
    from kdkit.config import TrainConfig, apply_overrides
    from kdkit.recipes import run_train

    out = root / "train"
    run_train(apply_overrides(TrainConfig(), {"dataset": "digits", "model": "cnn-tiny", "epochs": 1, "batch_size": 64,
                                              "progress": False, "amp": "off", "out": str(out)}))
    return out


def base_args(command: str, run: Path, probes: Path, out: Path) -> dict:
    """Each command's arguments by parameter name (None: a flag-less positional), all valid but the data."""
    data = {"--dataset": NO_DATA}
    runs = {"--out": str(out)}
    return {
        "train": data | runs,
        "distill": data | runs | {"--teacher": "cnn-tiny"},
        "ensemble": data | runs | {"--teacher": "cnn-tiny"},
        "tune": data | runs | {"--teacher": "cnn-tiny"},
        "evaluate": {"weights": str(run)} | data,
        "export": {"source": str(run), "--out": str(out / "m.onnx")} | data,
        "predict": {"model": str(probes / "model.onnx"), "inputs": str(probes / "x.npy")},
        "report": {"run_dir": str(run)},
        "compare": {"run_dirs": str(run), "--out": str(out / "c.html")},
        "models": {}, "methods": {}, "datasets": {}, "docs": {},
    }[command]


def parameters() -> dict:
    """command -> [(name, takes a value)] from the CLI itself (a new option joins the grid by itself)."""
    import typer.main

    from kdkit.cli import app

    group = typer.main.get_command(app)
    return {name: [(p.opts[0] if p.param_type_name == "option" else p.name, not getattr(p, "is_flag", False))
                   for p in cmd.params] for name, cmd in group.commands.items() if name not in SKIPPED}


def argv(base: dict, name: str, value: str) -> list[str]:
    """Base arguments with parameter `name` set to `value` (positional ones first, in their order)."""
    values = dict(base, **{name: value})
    positional = [v for k, v in values.items() if not k.startswith("-")]
    options = [x for k, v in values.items() if k.startswith("-") for x in (k, v)]
    return positional + options


def listing_value_is_valid(command: str, name: str, value: str) -> bool:
    """For the listing commands (exit 0 is their success): is `value` one the parameter can use?
    Written apart from the CLI's own checks: an exit 0 with any other value is a silent accept."""
    if command == "datasets":
        return Path(value).is_dir()
    if command == "docs":  # a page's name, or `--` (no page: the list of pages)
        from kdkit.cli.listings import doc_pages

        return value == "--" or value.strip().lower().removesuffix(".md") in doc_pages()
    if name == "--layers":
        from kdkit.models.registry import MODELS

        return value in MODELS
    bounds = {"--in-channels": 1024, "--image-size": 4096, "--num-classes": 1_000_000}
    return value.isdigit() and 1 <= int(value) <= bounds[name]


def cell(command: str, args: list[str]) -> tuple[str, str]:
    """(verdict, detail) of `kdkit COMMAND ARGS` run in this process."""
    from kdkit.cli import main

    err, out = io.StringIO(), io.StringIO()
    saved = sys.argv, list(sys.path)
    sys.argv = ["kdkit", command, *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001 -- what this grid exists to find
        return "traceback", f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        sys.argv, sys.path[:] = saved
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    if "Traceback" in text:
        return "traceback", text[-300:]
    if code == 0:
        return "exit 0", ""
    if code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < 300:
        return "refused", lines[0][:300]
    return "bad message", f"exit {code}: {text[-300:]}"


def run(quick: bool = False) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    values, paths = QUICK if quick else (VALUES, PATHS)
    counts, failures, start, cells = collections.Counter(), [], time.perf_counter(), 0
    with tempfile.TemporaryDirectory(prefix="kdkit-cli-robust-") as tmp:
        root = Path(tmp)
        os.environ["KDKIT_CACHE"] = str(root / "cache")
        trained, probes = train_run(root), probe_folder(root)
        before, cwd = snapshot(probes), os.getcwd()
        os.chdir(probes)  # relative path probes resolve here
        try:
            for command, params in parameters().items():
                for name, takes_value in params:
                    if not takes_value:
                        continue
                    for value in values + paths:
                        out = root / "outs" / f"o{cells}"
                        base = base_args(command, trained, probes, out)
                        verdict, detail = cell(command, argv(base, name, value))
                        if verdict == "exit 0" and (base or not listing_value_is_valid(command, name, value)):
                            verdict = "silent accept"
                        cells += 1
                        counts[verdict] += 1
                        if verdict in ("traceback", "bad message", "silent accept"):
                            failures.append(dict(command=command, parameter=name, value=value[:60], verdict=verdict,
                                                 detail=detail))
        finally:
            os.chdir(cwd)
        changed = sorted(k for k in set(before) | set(snapshot(probes)) if before.get(k) != snapshot(probes).get(k))
    return {
        "command": "python benchmarks/robustness_cli.py" + (" --quick" if quick else ""),
        "commands": sorted(parameters()), "skipped": list(SKIPPED),
        "parameters": sum(sum(v for _, v in p) for p in parameters().values()),
        "value_probes": [v if len(v) <= 40 else f"{v[0]!r} * {len(v)}" for v in values],
        "path_probes": [p if len(p) <= 40 else f"{p[0]!r} * {len(p)}" for p in paths],
        "cells": cells, "refused_cleanly": counts["refused"], "listed_valid_value": counts["exit 0"],
        "silent_accepts": counts["silent accept"], "tracebacks": counts["traceback"], "bad_messages": counts["bad message"],
        "files_changed": changed, "seconds": round(time.perf_counter() - start, 1), "failures": failures,
    }


def main():
    result = run(quick="--quick" in sys.argv)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print({k: result[k] for k in ("cells", "refused_cleanly", "listed_valid_value", "silent_accepts", "tracebacks",
                                  "bad_messages", "seconds")},
          f"files changed: {len(result['files_changed'])}")
    for failure in result["failures"][:30]:
        print(failure)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
