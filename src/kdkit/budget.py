"""A whole-run step budget (`step_budget`): a quick trial in which every phase of a run still trains
and the run still ends with its summary, on at most N optimizer steps in all.

    kdkit distill --dataset cifar10 --teacher resnet8 --student cnn-tiny --set step_budget=600

The phases are those that train: a teacher trained in the run (each one, for an ensemble), then per
seed the scratch student and each distilled generation; `kdkit train` and `kdkit.distill()` have one.
Each gets a share in proportion to its epochs, N * epochs / (the run's epochs in all), rounded down
and at least 1, so the scratch student and the distilled one keep the same steps. A phase runs its
whole schedule compressed into its share (`train.fit(steps=...)`: warmup, decay to the end, a
method's epoch-based ramps) rather than being cut in the middle of it, and is validated where its
share ends. A share longer than the phase's schedule changes nothing: the phase ends with its epochs.

`max_steps` is another thing: it stops one invocation after N steps (with a checkpoint) so that
`--resume` can continue it; it gives no summary. The two combine (a budgeted run can be stopped and
resumed). The summary names each phase's steps and says the run was budget-limited (summary.py).
"""
from kdkit.teachers.specs import teacher_kind, teacher_specs
from kdkit.weights import is_weights


def run_epochs(cfg) -> int:
    """The epochs of every phase a run trains, added up (see the module docstring)."""
    if not hasattr(cfg, "teacher"):  # kdkit train: one model
        return cfg.epochs
    trained_here = [s for s in teacher_specs(cfg.teacher) if teacher_kind(s) == "torch" and not is_weights(s)]
    students = int(cfg.baseline) + cfg.generations
    return len(trained_here) * (cfg.teacher_epochs or cfg.epochs) + len(cfg.seeds) * students * cfg.epochs


def phase_steps(cfg, epochs: int) -> int | None:
    """The share of cfg.step_budget of a phase that trains `epochs` epochs; None without a budget."""
    if not cfg.step_budget:
        return None
    return max(1, cfg.step_budget * epochs // run_epochs(cfg))
