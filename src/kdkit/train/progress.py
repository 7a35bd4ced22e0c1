"""What fit() shows while it trains. In a terminal: a rich progress bar. Outside one (stdout piped to
a log file, a batch job), where rich would print the bar once at the end of the phase: one plain line
on stderr per epoch, and at least every EVERY_S seconds within a long epoch.

    with progress(cfg.progress, "student seed 0", total_steps, state.step, steps_per_epoch) as bar:
        bar.step()                                # after each optimizer step
        bar.note("loss 0.412 acc 0.871 850 img/s")  # at log points
        bar.epoch(epoch, val_accuracy)            # after each epoch's validation
"""
import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

EVERY_S = 30.0  # longest silence of the plain lines within an epoch


def progress(enabled: bool, desc: str, total: int, completed: int, steps_per_epoch: int, *, terminal: bool | None = None,
             stream=None, clock=time.monotonic):
    """The bar in a terminal (stdout a TTY), plain lines on `stream` (stderr) otherwise, nothing when not enabled."""
    if not enabled:
        return Quiet()
    if terminal is None:
        terminal = sys.stdout.isatty()
    if terminal:
        return Bar(desc, total, completed)
    return Lines(desc, total, completed, steps_per_epoch, stream or sys.stderr, clock)


class Quiet:
    """progress=false (and every rank but 0 under torchrun): shows nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *error):
        return False

    def step(self):
        pass

    def note(self, info: str):
        pass

    def epoch(self, epoch: int, val_accuracy: float):
        pass


class Bar(Quiet):
    """rich's bar: steps done, elapsed, remaining, then the latest loss, accuracy, speed and validation."""

    def __init__(self, desc: str, total: int, completed: int):
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
        self.task = self.bar.add_task(desc, total=total, completed=completed, info="")
        self.info, self.val = "", ""

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *error):
        return self.bar.__exit__(*error)

    def step(self):
        self.bar.update(self.task, advance=1)

    def note(self, info: str):
        self.info = info
        self.bar.update(self.task, info=f"{self.info} {self.val}".strip())

    def epoch(self, epoch: int, val_accuracy: float):
        self.val = f"val {val_accuracy:.3f}"
        self.note(self.info)


class Lines(Quiet):
    """One line per epoch (and every EVERY_S seconds), e.g.
    `student seed 0: epoch 3/10, step 1,500/5,000 (30%), loss 0.412 acc 0.871 850 img/s, val acc 0.8850, 0:01:02 elapsed, ~0:02:25 left`"""

    def __init__(self, desc: str, total: int, completed: int, steps_per_epoch: int, stream, clock):
        self.desc, self.total, self.done, self.per_epoch = desc, total, completed, max(1, steps_per_epoch)
        self.stream, self.clock, self.info = stream, clock, ""
        self.start_step, self.start = completed, clock()  # a resumed run's rate counts this invocation's steps
        self.last = self.start

    def step(self):
        self.done += 1
        if self.clock() - self.last >= EVERY_S:
            self.line(min(self.done // self.per_epoch + 1, self.total // self.per_epoch))  # the epoch under way

    def note(self, info: str):
        self.info = info

    def epoch(self, epoch: int, val_accuracy: float):
        self.line(epoch, f"val acc {val_accuracy:.4f}")

    def line(self, epoch: int, val: str = ""):
        now = self.last = self.clock()
        elapsed, steps = now - self.start, self.done - self.start_step
        left = f"~{_clock(elapsed / steps * (self.total - self.done))} left" if steps and elapsed > 0 else ""
        parts = [f"epoch {epoch}/{self.total // self.per_epoch}",
                 f"step {self.done:,}/{self.total:,} ({100 * self.done / max(1, self.total):.0f}%)",
                 self.info, val, f"{_clock(elapsed)} elapsed", left]
        print(f"{self.desc}: " + ", ".join(p for p in parts if p), file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    """h:mm:ss"""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
