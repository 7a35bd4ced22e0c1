"""Tabular data: scikit-learn's breast_cancer, a HistGradientBoosting teacher whose training-split
probabilities are out of fold, distilled into a small MLP; the student is compared with the same MLP
trained alone, and the returned student takes the raw features.

    python examples/tabular_breast_cancer.py [--epochs 30] [--csv OUT_DIR]

--csv OUT_DIR also writes the table to OUT_DIR/cancer.csv and runs the same on the command line:
    kdkit distill --dataset OUT_DIR/cancer.csv --set label_column=target --teacher sklearn:hgb --student mlp ...
"""
import argparse
import subprocess
import sys
from pathlib import Path

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import kdkit


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--csv", type=Path, default=None, help="also run it on the command line from a CSV file here")
    args = parser.parse_args(argv)
    x, y = load_breast_cancer(return_X_y=True)  # (569, 30) raw features on very different scales
    x_train, x_test, y_train, y_test = train_test_split(x.astype("float32"), y, test_size=0.25, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x_train, y_train, test_size=0.2, stratify=y_train, random_state=0)
    result = kdkit.distill("sklearn:hgb", "mlp", (x_train, y_train), (x_val, y_val), test=(x_test, y_test),
                           epochs=args.epochs, batch_size=32, lr=1e-3, optimizer="adamw", temperature=2.0, alpha=0.5,
                           teacher_folds=5, seeds=[0, 1])
    print(result.table)
    with torch.no_grad():  # the student takes the raw features: kdkit's standardisation travels with it
        accuracy = (result.student(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"the returned student on the raw test features: {accuracy:.3f}")
    if args.csv:
        command_line(args.csv, args.epochs)
    return result, accuracy


def command_line(out: Path, epochs: int):
    """The same distillation from a CSV file, through the CLI (test split carved by kdkit: 20%, fixed)."""
    out.mkdir(parents=True, exist_ok=True)
    table = load_breast_cancer(as_frame=True).frame  # 30 feature columns and "target"
    table.to_csv(out / "cancer.csv", index=False)
    subprocess.run([sys.executable, "-m", "kdkit", "distill", "--dataset", str(out / "cancer.csv"), "--set", "label_column=target",
                    "--teacher", "sklearn:hgb", "--student", "mlp", "--epochs", str(epochs), "--batch-size", "32",
                    "--seeds", "0", "--out", str(out / "run"), "--no-report", "--set", "progress=false"], check=True)
    print((out / "run" / "summary.md").read_text())


if __name__ == "__main__":
    main()
