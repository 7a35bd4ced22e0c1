"""kdkit.summary on hand-made rows: gap_closed where the teacher is not above scratch, the seed-noise
caution (one seed; several: the mean student - scratch difference against twice the std of the
per-seed differences), the step-budget line and the shot groups line, in summary.md and in what the
CLI prints."""
from types import SimpleNamespace

import pytest

from kdkit.config import DistillConfig
from kdkit.summary import budget_record, gap_closed, small_print, summarise, to_markdown


def made(teacher: float, scratch: list[float], student: list[float], **config) -> dict:
    """The summary of a run with these test accuracies (one per seed)."""
    cfg = DistillConfig(seeds=list(range(len(scratch))), **config)
    data = SimpleNamespace(name="toy", classes=["a", "b"])
    rows = {"teacher": [{"accuracy": teacher}],
            "scratch": [{"accuracy": a, "seed": s} for s, a in enumerate(scratch)],
            "student": [{"accuracy": a, "seed": s} for s, a in enumerate(student)]}
    fits = {"teacher": [{}], "scratch": [{}] * len(scratch), "student": [{}] * len(student)}
    return summarise(cfg, data, rows, fits, {"teacher": {}, "student": {}}, {"arch": "cnn"})


def test_teacher_below_scratch_has_no_gap_closed():
    # the old ratio: (0.815 - 0.84) / (0.80 - 0.84) = +62.5%, progress read into two losses
    s = made(0.80, [0.85, 0.83], [0.82, 0.81])
    assert s["gap_closed"] == {"mean": None, "per_seed": [None, None]}
    assert ("gap closed (accuracy): teacher below scratch (per seed: teacher below scratch, teacher below scratch)"
            in to_markdown(s))
    assert gap_closed(0.8, 0.8, 0.9) is None and gap_closed(0.9, 0.8, 0.85) == pytest.approx(0.5)


def test_each_seed_says_whether_its_teacher_was_above_its_scratch():
    # seed 0: teacher 0.84 below scratch 0.85; seed 1: (0.82 - 0.80) / (0.84 - 0.80) = 50%; mean scratch 0.825:
    # (0.825 - 0.825) / (0.84 - 0.825) = 0%
    s = made(0.84, [0.85, 0.80], [0.83, 0.82])
    assert s["gap_closed"]["per_seed"][0] is None and s["gap_closed"]["per_seed"][1] == pytest.approx(0.5)
    assert s["gap_closed"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert "gap closed (accuracy): 0% (per seed: teacher below scratch, 50%)" in to_markdown(s)
    assert "teacher equals scratch" in to_markdown(made(0.85, [0.85], [0.86]))


def test_one_seed_carries_a_caution():
    s = made(0.95, [0.90], [0.905])
    line = "caution: one seed: differences under about 1 point are within seed noise; use --seeds 0,1,2"
    assert s["caution"] == line
    assert small_print(s) == ["gap closed (accuracy): 10% (per seed: 10%)", line]
    assert f"\n{line}\n" in to_markdown(s)


def test_several_seeds_say_whether_the_difference_beats_twice_its_std():
    # per-seed differences +1.0, +1.2, +0.8 points: mean 1.00, std 0.20, and 1.00 > 2 x 0.20
    beyond = made(0.95, [0.90, 0.90, 0.90], [0.91, 0.912, 0.908])
    assert beyond["caution"] == ("student - scratch: +1.00 ± 0.20 points over 3 seeds (mean ± std of the per-seed "
                                 "differences), more than twice its std: beyond seed noise")
    # +0.5, -0.3, +0.4: mean 0.20, std sqrt((0.09 + 0.25 + 0.04) / 2) = 0.436, and 0.20 < 0.87
    within = made(0.95, [0.90, 0.90, 0.90], [0.905, 0.897, 0.904])
    assert within["caution"] == ("caution: student - scratch: +0.20 ± 0.44 points over 3 seeds (mean ± std of the per-seed "
                                 "differences), within twice its std (0.87): not told apart from seed noise; add seeds")
    assert within["caution"] in to_markdown(within)


def test_no_caution_without_a_scratch_row():
    s = made(0.95, [0.90], [0.91])
    del s["rows"]["scratch"], s["gap_closed"], s["caution"]
    assert small_print(s) == []


def test_budget_line_names_each_phase_share():
    fits = {"teacher": [{"steps": 40, "full_steps": 400}], "scratch": [{"steps": 20, "full_steps": 200}] * 2,
            "student": [{"steps": 20, "full_steps": 200}] * 2, "teacher1": [{}]}
    record = budget_record(120, fits)
    assert record == {"budget": 120, "limited": True, "phases": {"teacher": {"steps": 40, "full_steps": 400},
                                                                  "scratch": {"steps": 20, "full_steps": 200},
                                                                  "student": {"steps": 20, "full_steps": 200}}}
    s = made(0.95, [0.90], [0.905]) | {"step_budget": record}
    assert small_print(s)[2] == ("budget-limited: step_budget=120 shared by the phases in proportion to their epochs "
                                 "(steps of each phase's schedule, per seed: teacher 40 of 400, scratch 20 of 200, "
                                 "student 20 of 200), each schedule compressed: a quick trial, not a result")
    assert not budget_record(10_000, {"student": [{"steps": 200, "full_steps": 200}]})["limited"]
    assert len(small_print(s | {"step_budget": {"budget": 10_000, "limited": False, "phases": {}}})) == 2


def test_shot_line_counts_each_group():
    # step:10 on CIFAR-10 after a 10% validation split: five classes of 4,500, five of 450; thresholds 450 and 90
    s = made(0.95, [0.90], [0.905])
    s["train_class_counts"] = {f"c{k}": 4500 if k < 5 else 450 for k in range(10)}
    s["rows"]["student"]["per_seed"][0]["shot_thresholds"] = {"many": 450, "few": 90}
    assert small_print(s)[-1] == ("shot groups by training samples per class (Liu et al. 2019's > 100, 20-100, < 20 of a "
                                  "1,000 head, scaled to 4,500): many > 450: 5 classes, medium 90-450: 5, few < 90: 0")
    s["train_class_counts"] = {f"c{k}": 4500 - k for k in range(10)}  # nearly balanced: every class many-shot
    assert not small_print(s)[-1].startswith("shot groups")


def test_the_cli_prints_the_small_print(capsys):
    from kdkit.cli.runs import _print_summary

    s = made(0.80, [0.85], [0.82])
    s["rows"] = {name: row | {"facts": {}, "fit": {}} for name, row in s["rows"].items()}
    _print_summary(s, "runs/x")
    out = capsys.readouterr().out
    assert "gap closed (accuracy): teacher below scratch (per seed: teacher below scratch)" in out
    assert "caution: one seed: differences under about 1 point are within seed noise; use --seeds 0,1,2" in out
