"""What fit() shows while it trains (src/kdkit/train/progress.py): plain lines on stderr outside a
terminal, checked with a fake stream and a fake clock, and through a real tiny run."""
import io
import re
import sys

from kdkit.config import TrainConfig, apply_overrides
from kdkit.recipes import run_train
from kdkit.train.progress import EVERY_S, Bar, Lines, Quiet, progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_one_line_per_epoch_and_every_30_seconds_within_one():
    stream, clock = io.StringIO(), Clock()
    with progress(True, "student seed 0", total=10, completed=0, steps_per_epoch=5, terminal=False,
                  stream=stream, clock=clock) as bar:
        for _ in range(5):  # epoch 1: 5 quick steps, no line before its end
            clock.now += 1
            bar.step()
        bar.note("loss 0.500 acc 0.800 64 img/s")
        assert stream.getvalue() == ""
        bar.epoch(1, 0.9)
        clock.now += EVERY_S  # epoch 2: its first step comes after 30 s of silence
        bar.step()
        for _ in range(4):
            clock.now += 1
            bar.step()
        bar.epoch(2, 0.95)
    assert stream.getvalue().splitlines() == [
        "student seed 0: epoch 1/2, step 5/10 (50%), loss 0.500 acc 0.800 64 img/s, val acc 0.9000, 0:00:05 elapsed, ~0:00:05 left",
        "student seed 0: epoch 2/2, step 6/10 (60%), loss 0.500 acc 0.800 64 img/s, 0:00:35 elapsed, ~0:00:23 left",
        "student seed 0: epoch 2/2, step 10/10 (100%), loss 0.500 acc 0.800 64 img/s, val acc 0.9500, 0:00:39 elapsed, ~0:00:00 left",
    ]


def test_a_resumed_run_counts_its_own_steps_for_the_time_left():
    stream, clock = io.StringIO(), Clock()
    bar = progress(True, "t", total=100, completed=50, steps_per_epoch=10, terminal=False, stream=stream, clock=clock)
    for _ in range(10):
        clock.now += 2
        bar.step()
    bar.epoch(6, 0.5)
    assert stream.getvalue() == "t: epoch 6/10, step 60/100 (60%), val acc 0.5000, 0:00:20 elapsed, ~0:01:20 left\n"  # 2 s a step


def test_the_bar_only_in_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # piped: not a TTY
    assert type(progress(True, "t", 10, 0, 5)) is Lines
    assert type(progress(True, "t", 10, 0, 5, terminal=True)) is Bar
    assert type(progress(False, "t", 10, 0, 5, terminal=False)) is Quiet


def test_a_run_piped_to_a_log_prints_a_line_per_epoch_on_stderr(tmp_path, capfd, tiny):
    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "progress": True, "epochs": 2})
    run_train(cfg)
    captured = capfd.readouterr()  # (pytest's capture: neither stream is a terminal)
    lines = [line for line in captured.err.splitlines() if line.startswith("train mlp: ")]
    assert len(lines) == 2, captured.err
    for epoch, line in enumerate(lines, 1):
        assert re.fullmatch(rf"train mlp: epoch {epoch}/2, step \d+/\d+ \(\d+%\), loss [\d.]+ acc [\d.]+ \d+ img/s, "
                            r"val acc [01]\.\d{4}, \d:\d\d:\d\d elapsed, ~\d:\d\d:\d\d left", line), line
    assert "━" not in captured.out + captured.err  # no rich bar
