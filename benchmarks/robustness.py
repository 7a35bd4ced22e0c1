"""The config robustness grid (issue 20): every config key x every probe value, and what kdkit does.

A cell is one key set to one probe value (wrong type, empty, zero, negative, huge, NaN/inf, very long,
unicode, ...), given as `--set key=value` or as `key: value` in a YAML file. Each cell must end in
one of two ways: the value is accepted and really is valid for the key (its type, and the range,
choices or text rules of the schema in src/kdkit/config.py), or a KdkitError of one line under 300
characters. Anything else is counted: a traceback (another exception), a bad message (long or
several lines), a silent accept (accepted but outside what the key can use). Keys that name things
only the run can look up (dataset, model, teacher, out, ...: config.TEXT) count an accepted value as
"checked later": the run checks it when it loads them.

    python benchmarks/robustness.py          # --set and YAML in process (seconds); writes the JSON
    python benchmarks/robustness.py --cli    # also every cell through `python -m kdkit` (about 2 s a cell)

Through the CLI every cell must exit 2 with one `error:` line: the dataset is a path that does not
exist, so a value the config accepts fails on the data, before anything trains or is written.
The JSON (benchmarks/results/robustness_config.json) holds the counts, any failing cells and the
command that wrote it. tests/robustness/test_robustness_config.py runs the same grid (KDKIT_ROBUSTNESS=full: the
CLI for every cell too).
"""
import collections
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import types
import typing
from pathlib import Path

from kdkit.config import CHOICES, RANGES, TEXT, TEXT_MAX, DistillConfig, TrainConfig, resolve
from kdkit.errors import KdkitError

PROBES = ["abc", "[1]", "[[1]]", "{a: 1}", "", "0", "-1", "1", "0.5", "-0.5", "1000000000000000000000000000000",
          "4294967296", "9" * 5000, "nan", ".nan", "inf", ".inf", "-inf", "-.inf", "1e400", "-1e400", "1e-400",
          "x" * 10000, "ünïcødé ☃", "true", "null", "0,0", "1,2", "'a b'", "*a", "&a 1"]
KEYS = list(DistillConfig.__dataclass_fields__)
HINTS = typing.get_type_hints(DistillConfig)
CHECKED_LATER = [key for key, what in TEXT.items() if what.startswith("checked when")]
RESULTS = Path(__file__).resolve().parent / "results" / "robustness_config.json"
# The CLI sample: (command, key, value); the dataset is a path that does not exist, so nothing trains.
CLI_SAMPLE = [("distill", "seed", "1180591620717411303424"), ("distill", "momentum", "-1"),
              ("train", "label_smoothing", "5"), ("distill", "seeds", "0,0"), ("distill", "crd_dim", "0"),
              ("train", "lr", ".nan"), ("distill", "dataset", "x" * 10000), ("distill", "compile", "ünïcødé ☃"),
              ("train", "epochs", "9" * 5000), ("distill", "teacher_weights", "[[1]]"), ("train", "amp", "{a: 1}"),
              ("distill", "method", "kd+kdd")]
NO_DATA = "/nonexistent/kdkit-robustness-data"


def interval_holds(value, interval: str) -> bool:
    """The schema's "[0, 1)" read independently of kdkit.config.in_range."""
    low, high = (float(b) for b in interval[1:-1].split(", "))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return math.isfinite(value) and above and below


def item_fits(key: str, kind, item) -> bool:
    if kind is bool:
        return isinstance(item, bool)
    if kind in (int, float):
        return type(item) is kind and interval_holds(item, RANGES[key])
    if kind is dict:  # keyword arguments for a model's factory (model_kwargs): parameter names
        return isinstance(item, dict) and all(isinstance(k, str) and k.isidentifier() for k in item)
    if not isinstance(item, str) or not item or len(item) > TEXT_MAX or re.search(r"[\x00-\x1f\x7f]", item):
        return False
    if key in CHOICES:
        return item in CHOICES[key]
    if key == "device":
        return re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", item) is not None
    if key in ("imbalance", "method"):
        from kdkit.data.longtail import parse_imbalance
        from kdkit.methods import method_parts

        try:
            (parse_imbalance if key == "imbalance" else method_parts)(item)
        except KdkitError:
            return False
    return True


def accepted(key: str, value) -> str:
    """'valid', 'checked later' or 'silent accept' for a value the config took."""
    typ, optional = HINTS[key], False
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        optional, typ = True, next(a for a in typing.get_args(typ) if a is not type(None))
    if value is None:
        return "valid" if optional else "silent accept"
    if typing.get_origin(typ) is list:
        (kind,) = typing.get_args(typ)
        fits = isinstance(value, list) and all(item_fits(key, kind, item) for item in value)
        if key == "seeds":  # at least one, no repeats
            fits = fits and value and len(set(value)) == len(value)
        if key == "teacher_weights" and value:  # normalised by their sum
            fits = fits and 0 < sum(value) < math.inf
    else:
        fits = item_fits(key, typ, value)
    if not fits:
        return "silent accept"
    return "checked later" if key in CHECKED_LATER else "valid"


def refused(message: str) -> str:
    return "refused" if len(message) < 300 and "\n" not in message and message.strip() else "bad message"


def judge(key: str, call) -> tuple[str, str]:
    """(verdict, detail) of `call()` for a cell of `key`."""
    try:
        cfg = call()
    except KdkitError as error:
        return refused(str(error)), str(error)[:300]
    except Exception as error:  # the failure this grid exists to find
        return "traceback", f"{type(error).__name__}: {str(error)[:200]}"
    return accepted(key, getattr(cfg, key)), repr(getattr(cfg, key))[:100]


def set_cell(key: str, probe: str) -> tuple[str, str]:
    return judge(key, lambda: resolve(DistillConfig, None, {}, [f"{key}={probe}"]))


def yaml_cell(key: str, probe: str, folder: Path) -> tuple[str, str]:
    path = folder / "c.yaml"
    path.write_text(f"{key}: {probe}\n", encoding="utf-8")
    return judge(key, lambda: resolve(DistillConfig, path))


def cli_cell(command: str, key: str, probe: str, folder: Path) -> tuple[str, str]:
    """The real CLI: exit code 2 and one `error: ...` line under 300 characters, never a traceback.
    An accepted value goes on to the data, which does not exist: still exit 2 and one line."""
    env = dict(os.environ, KDKIT_DATA=str(folder / "no-data"), HOME=str(folder), KDKIT_CACHE=str(folder / "cache"),
               OMP_NUM_THREADS="1")
    dataset = [] if key == "dataset" else ["--dataset", NO_DATA]
    r = subprocess.run([sys.executable, "-m", "kdkit", command, *dataset, "--set", f"{key}={probe}", "--out",
                        str(folder / "out")], capture_output=True, text=True, cwd=folder, env=env, timeout=300)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if "Traceback" in r.stderr or r.returncode not in (0, 2):
        return "traceback", f"exit {r.returncode}: {r.stderr[-300:]}"
    if r.returncode == 0:
        return "silent accept", "exit 0 (it ran)"
    ok = len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < 300
    return ("refused" if ok else "bad message"), r.stderr[:300]


def cli_cells(full: bool) -> list[tuple[str, str, str]]:
    if not full:
        return CLI_SAMPLE
    train_keys = set(TrainConfig.__dataclass_fields__)
    return [("train" if key in train_keys else "distill", key, probe) for key in KEYS for probe in PROBES]


def run(cli: bool = False) -> dict:
    counts, failures, start = collections.defaultdict(collections.Counter), [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdkit-robust-") as folder:
        routes = {"set": lambda k, p: set_cell(k, p), "yaml": lambda k, p: yaml_cell(k, p, Path(folder))}
        for route, cell in routes.items():
            for key in KEYS:
                for probe in PROBES:
                    verdict, detail = cell(key, probe)
                    counts[route][verdict] += 1
                    if verdict in ("traceback", "bad message", "silent accept"):
                        failures.append(dict(route=route, key=key, value=probe[:80], verdict=verdict, detail=detail))
        for command, key, probe in cli_cells(cli):
            verdict, detail = cli_cell(command, key, probe, Path(folder))
            counts["cli"][verdict] += 1
            if verdict != "refused":
                failures.append(dict(route="cli", command=command, key=key, value=probe[:80], verdict=verdict, detail=detail))
    total = sum((c for c in counts.values()), collections.Counter())
    return {
        "command": "python benchmarks/robustness.py" + (" --cli" if cli else ""),
        "keys": len(KEYS), "probes": [p if len(p) <= 40 else f"{p[0]!r} * {len(p)}" for p in PROBES],
        "cells": sum(total.values()), "accepted_valid": total["valid"], "checked_later": total["checked later"],
        "refused_cleanly": total["refused"], "tracebacks": total["traceback"], "bad_messages": total["bad message"],
        "silent_accepts": total["silent accept"],
        "by_route": {route: dict(sorted(c.items())) for route, c in counts.items()},
        "cli_cells": "every cell" if cli else f"a sample of {len(CLI_SAMPLE)}",
        "checked_later_keys": CHECKED_LATER, "seconds": round(time.perf_counter() - start, 1), "failures": failures,
    }


def main():
    result = run(cli="--cli" in sys.argv)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print({k: result[k] for k in ("cells", "accepted_valid", "checked_later", "refused_cleanly", "tracebacks",
                                  "bad_messages", "silent_accepts", "seconds")})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
