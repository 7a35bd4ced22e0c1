"""The evidence table: teacher vs scratch vs distilled student, mean +- std over seeds.

gap_closed = (student - scratch) / (teacher - scratch) on test accuracy: 1 means the student
matches the teacher, 0 means distillation gained nothing over training the student alone,
negative means it hurt. It is None where the teacher is not above scratch (there is no gap to
close, and the ratio of two negative differences would read as progress): summary.md then says
"teacher below scratch".

The small print under the table (`small_print`, also printed by the CLI): the gap, a caution about
seed noise (one seed: differences under about a point are noise; several: whether the mean
student - scratch difference exceeds twice the std of the per-seed differences, the criterion of
kdkit's benchmarks), a run cut short by step_budget, and the many/medium/few-shot groups.
"""
import dataclasses
import json
import statistics
from pathlib import Path

from kdkit.checkpoint import atomic_write
from kdkit.data.longtail import shot_groups

# Scalar metrics averaged over seeds (all of classification_metrics' scalars plus agreement).
SCALARS = ("accuracy", "accuracy_last", "top5", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
           "precision_weighted", "recall_weighted", "f1_weighted", "auc", "nll", "ece", "brier",
           "worst_class_recall", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy",
           "top1_agreement", "mean_kl")

# (column title, source, key, format) for summary.md and the CLI table.
COLUMNS = (
    ("acc %", "metrics", "accuracy", "pct"),
    ("bal acc %", "metrics", "balanced_accuracy", "pct"),
    ("macro F1 %", "metrics", "f1_macro", "pct"),
    ("worst recall %", "metrics", "worst_class_recall", "pct"),
    ("few-shot %", "metrics", "few_shot_accuracy", "pct"),
    ("AUC", "metrics", "auc", "4f"),
    ("NLL", "metrics", "nll", "3f"),
    ("ECE", "metrics", "ece", "3f"),
    ("agree %", "metrics", "top1_agreement", "pct"),
    ("KL", "metrics", "mean_kl", "3f"),
    ("params", "facts", "parameters", "int"),
    ("MB", "facts", "size_mb", "3f"),
    ("MFLOPs", "facts", "flops_per_sample", "mflops"),
    ("ms b1", "facts", "latency_ms_b1", "2f"),
    ("ms b64", "facts", "latency_ms_b64", "2f"),
    ("peak MB", "fit", "peak_memory_mb", "0f"),
    ("train s", "fit", "seconds", "0f"),
)


def mean_std(values) -> dict:
    """Over the values measured: None and NaN (e.g. no steady-state speed in a resumed tail of a few steps) left out."""
    values = [v for v in values if v is not None and v == v]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _row(per_seed: list[dict], fits: list[dict], facts: dict) -> dict:
    metrics = {k: mean_std([m.get(k) for m in per_seed]) for k in SCALARS if any(k in m for m in per_seed)}
    fit = {k: mean_std([f.get("peak_memory", {}).get(k) if k == "peak_memory_mb" else f.get(k) for f in fits])
           for k in ("peak_memory_mb", "seconds", "images_per_second", "train_images_per_second")}
    return {"metrics": metrics, "fit": fit, "facts": facts, "per_seed": per_seed}


def gap_closed(teacher: float, scratch: float, student: float) -> float | None:
    """(student - scratch) / (teacher - scratch); None when the teacher is not above scratch."""
    return None if teacher - scratch < 1e-12 else (student - scratch) / (teacher - scratch)


def summarise(cfg, data, rows: dict, fits: dict, facts: dict, teacher_info: dict, samples: dict | None = None) -> dict:
    """The summary of a distill run. samples: per row, the {"labelled": n, "unlabeled": m} training
    samples it learnt from (None: not known, a teacher loaded from elsewhere), kept as the row's train_samples."""
    out = {"dataset": data.name, "classes": list(data.classes), "teacher": teacher_info,
           "student_arch": cfg.student, "method": cfg.method, "seeds": list(cfg.seeds),
           "config": dataclasses.asdict(cfg), "rows": {}}
    for name, per_seed in rows.items():
        if per_seed:
            out["rows"][name] = _row(per_seed, fits[name], facts.get(name, facts["student"]))
            if samples is not None:
                out["rows"][name]["train_samples"] = samples.get(name)
    if rows["scratch"] and rows["teacher"][0].get("measured_on") != "val":  # (test vs test only)
        t = rows["teacher"][0]["accuracy"]
        per_seed = [gap_closed(t, sc["accuracy"], st["accuracy"]) for sc, st in zip(rows["scratch"], rows["student"])]
        mean = gap_closed(t, out["rows"]["scratch"]["metrics"]["accuracy"]["mean"], out["rows"]["student"]["metrics"]["accuracy"]["mean"])
        out["gap_closed"] = {"mean": mean, "per_seed": per_seed}
    if cfg.step_budget:
        out["step_budget"] = budget_record(cfg.step_budget, fits)
    out["caution"] = noise_caution(out)
    return out


def budget_record(budget: int, fits: dict) -> dict:
    """{"budget": N, "limited": any phase cut short, "phases": {row: {"steps", "full_steps"}}} from the
    rows' fit records (their first seed; a teacher loaded from elsewhere has none)."""
    phases = {name: {"steps": infos[0]["steps"], "full_steps": infos[0]["full_steps"]}
              for name, infos in fits.items() if infos and infos[0].get("full_steps")}
    return {"budget": budget, "limited": any(p["steps"] < p["full_steps"] for p in phases.values()), "phases": phases}


def noise_caution(summary: dict) -> str | None:
    """Whether student - scratch (test accuracy) stands out of seed noise; None without both rows."""
    rows = summary["rows"]
    if "scratch" not in rows or "student" not in rows:
        return None
    diffs = [100 * (st["accuracy"] - sc["accuracy"]) for st, sc in zip(rows["student"]["per_seed"], rows["scratch"]["per_seed"])]
    if len(diffs) == 1:
        return "caution: one seed: differences under about 1 point are within seed noise; use --seeds 0,1,2"
    mean, std = statistics.fmean(diffs), statistics.stdev(diffs)
    said = f"student - scratch: {mean:+.2f} ± {std:.2f} points over {len(diffs)} seeds (mean ± std of the per-seed differences)"
    if abs(mean) > 2 * std:
        return f"{said}, more than twice its std: beyond seed noise"
    return f"caution: {said}, within twice its std ({2 * std:.2f}): not told apart from seed noise; add seeds"


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "-"
    return {"pct": f"{100 * value:.2f}", "int": f"{int(value):,}", "mflops": f"{value / 1e6:.2f}",
            "4f": f"{value:.4f}", "3f": f"{value:.3f}", "2f": f"{value:.2f}", "0f": f"{value:.0f}"}[fmt]


def table_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Header and body of the evidence table (mean +- std when there are several seeds)."""
    header = ["row"] + [c[0] for c in COLUMNS]
    body = []
    for name, row in summary["rows"].items():
        on_val = row["per_seed"] and row["per_seed"][0].get("measured_on") == "val"
        cells = [name + (" (val)" if on_val else "")]
        for _, source, key, fmt in COLUMNS:
            cell = row.get(source, {}).get(key)
            if isinstance(cell, dict):
                text = _fmt(cell["mean"], fmt)
                if len(row["per_seed"]) > 1 and cell["std"] is not None and source != "facts":
                    text += f"±{_fmt(cell['std'], fmt)}"
            else:
                text = _fmt(cell, fmt)
            cells.append(text)
        body.append(cells)
    return header, body


def to_markdown(summary: dict) -> str:
    header, body = table_rows(summary)
    lines = [f"# {summary['method']}: {summary['teacher']['arch']} -> {summary['student_arch']} on {summary['dataset']}", "",
             f"seeds: {', '.join(map(str, summary['seeds']))}; test set; mean ± std over seeds", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    for line in small_print(summary):
        lines += ["", line]
    seen = {name: row.get("train_samples") for name, row in summary["rows"].items()}
    labelled = {s["labelled"] for s in seen.values() if s}
    if any(s and s["unlabeled"] for s in seen.values()) or len(labelled) > 1:  # rows saw different samples
        lines += ["", "trained on: " + "; ".join(f"{name} {_samples(s)}" for name, s in seen.items())]
    lines += ["", "gap closed = (student - scratch) / (teacher - scratch). Latency: CPU, one thread, median of 20 runs. "
              "FLOPs count 2 per multiply-add. peak MB: peak memory while training (CPU: process RSS)."]
    return "\n".join(lines) + "\n"


def _samples(seen: dict | None) -> str:
    """'1,000 labelled + 57,800 unlabelled' (a row's train_samples), or 'not known' (a teacher loaded from elsewhere)."""
    if not seen:
        return "not known (trained elsewhere)"
    return f"{seen['labelled']:,} labelled" + (f" + {seen['unlabeled']:,} unlabelled" if seen["unlabeled"] else "")


def write_summary(summary: dict, out: Path):
    atomic_write(Path(out) / "summary.json", json.dumps(summary, indent=1).encode())
    atomic_write(Path(out) / "summary.md", to_markdown(summary).encode())


def small_print(summary: dict) -> list[str]:
    """The lines under the table: the gap closed, the seed-noise caution, a step budget that cut the
    run short, the shot groups of a long-tailed run (each only where it applies)."""
    lines = [_gap_line(summary), summary.get("caution", noise_caution(summary)), _budget_line(summary), _shot_line(summary)]
    return [line for line in lines if line]


def _gap_line(summary: dict) -> str | None:
    """'gap closed (accuracy): 42% (per seed: 40%, 44%)'; where the teacher is not above scratch, says so."""
    if "gap_closed" not in summary:
        return None
    g, rows = summary["gap_closed"], summary["rows"]
    teacher = rows["teacher"]["per_seed"][0]["accuracy"]

    def cell(gap, scratch):
        if gap is not None:
            return f"{100 * gap:.0f}%"
        return "teacher below scratch" if teacher < scratch else "teacher equals scratch"

    per = ", ".join(cell(gap, sc["accuracy"]) for gap, sc in zip(g["per_seed"], rows["scratch"]["per_seed"]))
    return f"gap closed (accuracy): {cell(g['mean'], rows['scratch']['metrics']['accuracy']['mean'])} (per seed: {per})"


def _budget_line(summary: dict) -> str | None:
    budget = summary.get("step_budget")
    if not budget or not budget["limited"]:
        return None
    phases = ", ".join(f"{name} {p['steps']:,} of {p['full_steps']:,}" for name, p in budget["phases"].items())
    return (f"budget-limited: step_budget={budget['budget']:,} shared by the phases in proportion to their epochs "
            f"(steps of each phase's schedule, per seed: {phases}), each schedule compressed: a quick trial, not a result")


def _shot_line(summary: dict) -> str | None:
    """How many classes each shot group holds, so an empty one reads as what it is; nothing when every
    class is many-shot (a nearly balanced split, such as digits' 125-131 a class)."""
    counts = list(summary.get("train_class_counts", {}).values())
    found = [row["per_seed"][0]["shot_thresholds"] for row in summary["rows"].values()
             if row["per_seed"] and "shot_thresholds" in row["per_seed"][0]]
    if not counts or not found:
        return None
    many, few = found[0]["many"], found[0]["few"]
    groups = {name: len(members) for name, members in shot_groups(counts, many, few).items()}
    if groups["many"] == len(counts):
        return None
    return (f"shot groups by training samples per class (Liu et al. 2019's > 100, 20-100, < 20 of a 1,000 head, scaled to "
            f"{max(counts):,}): many > {many:,}: {groups['many']} classes, medium {few:,}-{many:,}: {groups['medium']}, "
            f"few < {few:,}: {groups['few']}")
