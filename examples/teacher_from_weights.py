"""A teacher trained elsewhere (plain PyTorch), saved as a safetensors state dict, distilled without
being retrained: on the command line through `module:function` and teacher_state_dict, with a
student factory that has torchvision's signature (its num_classes goes in student_kwargs).

    python examples/teacher_from_weights.py OUT_DIR
"""
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).parent))
from tiny_nets import make_teacher  # noqa: E402


def main(out: Path, epochs: int = 2):
    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits()  # the user's own training, on the same 8x8 digits kdkit's `digits` dataset holds
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # (1797, 1, 8, 8) in [0, 1]
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    teacher = make_teacher(num_classes=10)
    optimizer = torch.optim.Adam(teacher.parameters(), 1e-3)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    save_file(teacher.state_dict(), str(out / "teacher.safetensors"))
    command = [sys.executable, "-m", "kdkit", "distill", "--dataset", "digits", "--teacher", "tiny_nets:make_teacher",
               "--set", f"teacher_state_dict={out / 'teacher.safetensors'}", "--student", "tiny_nets:resnet18",
               "--set", "student_kwargs={num_classes: 10}", "--epochs", str(epochs), "--seeds", "0",
               "--out", str(out / "run"), "--no-report", "--set", "progress=false"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    subprocess.run(command, check=True, env=env)
    print((out / "run" / "summary.md").read_text())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/example-teacher-from-weights"))
