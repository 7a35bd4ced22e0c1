"""Kill `kdkit` anywhere with SIGKILL, resume, and compare with an uninterrupted run.

    python tests/train/kill_harness.py --points 24 [--seed 0] [--json benchmarks/results/kill_resume.json]

For each scenario (a `kdkit train` or `kdkit distill` command on the built-in digits data, in
deterministic mode, with mid-epoch checkpoints), one uninterrupted reference run is timed; then
each kill point starts the same command in a fresh directory, sends SIGKILL after a random delay
drawn over the reference's duration, sometimes kills the `--resume` run again, and finally lets
`--resume` finish. The point passes when every weights file (best, last: teacher, scratch,
student) is bit-identical to the reference and the test metrics in summary.json are equal.
tests/train/test_kill_resume.py runs a few points; this script runs the full tally.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdkit.checkpoint import load_weights

KDKIT = [sys.executable, "-m", "kdkit"]
COMMON = ["--dataset", "digits", "--set", "progress=false", "--set", "batch_size=64", "--set", "deterministic=true",
          "--set", "checkpoint_every=4", "--set", "log_every=3"]
SCENARIOS = {
    "train": ["train", "--model", "cnn-tiny", "--epochs", "3", *COMMON],
    # teacher trained here, scratch baseline, then the student: kills land in any of the three fits
    "distill": ["distill", "--teacher", "cnn-x0.25", "--student", "cnn-tiny", "--epochs", "2", "--no-report", *COMMON],
    # state beyond weights: CRD's memory banks, a class-balanced sampler on long-tailed data
    "distill-crd-longtail": ["distill", "--teacher", "cnn-x0.25", "--student", "cnn-tiny", "--method", "crd",
                             "--epochs", "2", "--imbalance", "exp:10", "--no-report", "--set", "nce_k=64",
                             "--set", "sampler=class_balanced", "--set", "baseline=false", *COMMON],
    # a study of 3 trials (teacher trained once, trials, the best evaluated on test): a killed trial
    # is continued from its checkpoint, the sampler is reseeded per trial
    "tune": ["tune", "--teacher", "cnn-x0.25", "--student", "cnn-tiny", "--epochs", "2", "--trials", "3",
             "--no-report", *COMMON],
}


def run(args: list, out: Path, kill_after: float | None = None) -> dict:
    """Run kdkit; with kill_after, SIGKILL it that many seconds after its first checkpoint appeared
    (the interpreter's start-up takes seconds and writes nothing; a negative value kills before
    any checkpoint, during start-up and data preparation)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(KDKIT + args + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=err, env=env)
        first_write = last_write = None
        seen = set(out.glob("**/checkpoints/state-*.json"))  # (a resumed run's are old)
        while proc.poll() is None:
            elapsed = time.perf_counter() - t0
            if new := set(out.glob("**/checkpoints/state-*.json")) - seen:
                first_write, last_write = first_write or elapsed, elapsed
                seen |= new
            due = -kill_after if kill_after is not None and kill_after < 0 else (
                first_write + kill_after if kill_after is not None and first_write is not None else None)
            if due is not None and elapsed >= due:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return {"killed": True, "rc": proc.returncode, "seconds": elapsed, "at": where(out)}
            time.sleep(0.01)
        err.seek(0)
        return {"killed": False, "rc": proc.returncode, "seconds": time.perf_counter() - t0,
                "first_write": first_write, "last_write": last_write, "stderr": err.read()[-500:]}


def where(out: Path) -> str:
    """What the killed run had written: the phase and how many checkpoints it held."""
    phases = []
    for ckpts in sorted(out.glob("**/checkpoints")):
        phase = str(ckpts.parent.relative_to(out)) or "."
        states = sorted(ckpts.glob("state-*.json"))
        done = (ckpts.parent / "fit.json").is_file()
        phases.append(f"{phase}:{'done' if done else f'{len(states)} ckpt'}")
    if (out / "summary.json").is_file():
        phases.append("summary")
    return ", ".join(phases) or "nothing written"


def weights(run_dir: Path) -> dict[str, Path]:
    """Every weights file but checkpoints (and a study's per-trial copies: a killed trial continues
    under another trial number, so those folders are named differently; tune.json is compared)."""
    return {str(p.relative_to(run_dir)): p for p in run_dir.glob("**/*.safetensors")
            if "checkpoints" not in p.parts and "trials" not in p.relative_to(run_dir).parts[:1]}


def metrics(run_dir: Path):
    summary = json.loads((run_dir / "summary.json").read_text())
    if "rows" in summary:  # distill: every row's test metrics (timings and latencies excluded)
        return {name: row["metrics"] for name, row in summary["rows"].items()} | {"tune_best": summary.get("tune", {}).get("best", {}).get("params")}
    return summary["metrics"]


def compare(reference: Path, resumed: Path) -> list[str]:
    """Differences between two finished runs ([] = identical)."""
    problems = []
    ref, got = weights(reference), weights(resumed)
    if ref.keys() != got.keys():
        return [f"weights files differ: {sorted(ref.keys() ^ got.keys())}"]
    for name in ref:
        a, b = load_weights(ref[name])[0], load_weights(got[name])[0]
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            problems.append(f"{name}: tensors differ")
    if metrics(reference) != metrics(resumed):
        problems.append("summary.json metrics differ")
    if (reference / "tune.json").is_file() and finished_trials(reference) != finished_trials(resumed):
        problems.append("tune.json: the finished trials differ")
    return problems


def finished_trials(run_dir: Path) -> list:
    """A study's finished trials in order: parameters, state, value, per-epoch scores."""
    record = json.loads((run_dir / "tune.json").read_text())
    return [(t["params"], t["state"], t["value"], t["intermediate"]) for t in record["trials"] if t["state"] in ("COMPLETE", "PRUNED")]


def kill_point(name: str, reference: Path, start: float, stop: float, end: float, workdir: Path,
               rng: random.Random) -> dict:
    """One point: kill at a random moment (mostly while checkpoints are being written: between the
    reference's first and last; 10% before the first, 10% after the last, i.e. during evaluation
    and summary), maybe kill the resumed run again, then let --resume finish; compare."""
    args = SCENARIOS[name]
    for _ in range(4):  # a run faster than the reference may finish before its kill: draw again, earlier
        out = workdir / f"{name}-{rng.randrange(10**9)}"
        where = rng.random()
        delay = (-rng.uniform(0.3, 0.95) * start if where < 0.1 else
                 rng.uniform(stop - start, end - start) if where > 0.9 else rng.uniform(0, stop - start))
        first = run(args, out, kill_after=delay)
        if first["killed"]:
            break
        end = start + 0.5 * (end - start)
    attempts = [first]
    if first["killed"] and rng.random() < 0.5:  # kill the resumed run too
        attempts.append(run(args + ["--resume"], out, kill_after=rng.uniform(0, 0.5 * (stop - start))))
    final = run(args + (["--resume"] if first["killed"] else []), out)
    attempts.append(final)
    # the killed process's lock on the run directory died with it: --resume must take it (exit 2 otherwise)
    problems = [f"exit {final['rc']}: {final['stderr']}"] if final["rc"] else compare(reference, out)
    killed_at = [a["at"] for a in attempts if a["killed"]]
    return {"scenario": name, "kills": [round(a["seconds"], 2) for a in attempts if a["killed"]],
            "killed_at": killed_at, "left_work": bool(killed_at) and not killed_at[0].endswith("summary"),
            "identical": not problems, "problems": problems}


def harness(points: int, seed: int = 0, scenarios=None, workdir: Path | None = None) -> dict:
    rng = random.Random(seed)
    names = list(scenarios or SCENARIOS)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        references = {}
        for name in names:
            ref = run(SCENARIOS[name], tmp / f"{name}-reference")
            if ref["rc"]:
                raise RuntimeError(f"reference run {name} failed: {ref['stderr']}")
            references[name] = (tmp / f"{name}-reference", ref["first_write"], ref["last_write"], ref["seconds"])
        results = [kill_point(names[i % len(names)], *references[names[i % len(names)]], tmp, rng) for i in range(points)]
    return {
        "points": len(results), "identical": sum(r["identical"] for r in results),
        # a kill after summary.json was written leaves nothing to resume: counted apart
        "points_left_work": sum(r["left_work"] for r in results),
        "identical_left_work": sum(r["identical"] and r["left_work"] for r in results),
        "kills": sum(len(r["kills"]) for r in results),
        "reference_seconds": {name: {"first_checkpoint": round(a, 2), "last_checkpoint": round(b, 2), "end": round(c, 2)}
                              for name, (_, a, b, c) in references.items()},
        "results": results,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = harness(args.points, args.seed)
    result |= {"seed": args.seed, "wall_seconds": round(time.perf_counter() - t0, 1),
               "command": f"python tests/train/kill_harness.py --points {args.points} --seed {args.seed}"}
    for r in result["results"]:
        print(f"{r['scenario']:22s} kills at {r['kills']} s ({'; '.join(r['killed_at'])}): "
              f"{'identical' if r['identical'] else r['problems']}")
    print(f"{result['identical']}/{result['points']} kill points identical to the uninterrupted run ({result['kills']} kills); "
          f"of the {result['points_left_work']} that left work to resume: {result['identical_left_work']} identical")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    sys.exit(0 if result["identical"] == result["points"] else 1)


if __name__ == "__main__":
    main()
