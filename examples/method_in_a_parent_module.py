"""A kdkit method inside your own training code: a LightningModule-like parent holds it, moves it
with .to() (the frozen teacher goes along, though it is not one of the parent's parameters), and
trains the student with the method's loss in its own loop.

    python examples/method_in_a_parent_module.py
"""
import torch
from torch import nn

from kdkit.methods import create_method


class LitDistiller(nn.Module):  # what a lightning.LightningModule subclass would look like
    def __init__(self, student: nn.Module, teacher: nn.Module):
        super().__init__()
        self.distiller = create_method("kd", student, teacher, temperature=4.0, alpha=0.9)

    def training_step(self, batch):
        x, y = batch
        return self.distiller(x, y)["loss"]

    def configure_optimizers(self):
        return torch.optim.SGD(self.distiller.parameters(), lr=0.1)  # the student's (and adapters'), never the teacher's


def main(dtype=torch.float64):
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    lit = LitDistiller(nn.Linear(16, 4), teacher).to(dtype)  # a GPU user writes .to("cuda")
    assert next(teacher.parameters()).dtype == dtype, "the teacher moved with the parent"
    optimizer = lit.configure_optimizers()
    x, y = torch.randn(256, 16, dtype=dtype), torch.randint(0, 4, (256,))
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = lit.training_step((x, y))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"teacher on {next(teacher.parameters()).dtype}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return losses


if __name__ == "__main__":
    main()
