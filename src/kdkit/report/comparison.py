"""compare.html: several distill runs side by side (one table, accuracy vs size and speed).

    from kdkit.report import compare
    compare(["runs/kd", "runs/dkd"], "compare.html")

    kdkit compare runs/kd runs/dkd --out compare.html

Rows: each run's student, named after its folder; a teacher or scratch row identical across runs
(same architecture and test accuracy) appears once, otherwise once per run.
"""
from pathlib import Path

from kdkit.checkpoint import atomic_write
from kdkit.errors import KdkitError
from kdkit.report.html import page, read_summary, section, size_section, table
from kdkit.summary import table_rows


def run_labels(run_dirs) -> list[str]:
    """Short unique names: the folder name, with its parent when two runs share one."""
    paths = [Path(d) for d in run_dirs]
    labels = [p.name for p in paths]
    labels = [f"{p.parent.name}/{p.name}" if labels.count(p.name) > 1 else p.name for p in paths]
    return [f"{label} #{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def compare_rows(labelled: list[tuple[str, dict]]) -> dict:
    """Each run's student, plus its teacher and scratch unless an identical one is already there."""
    rows, seen = {}, set()
    for label, summary in labelled:
        for role in ("teacher", "scratch"):
            row = summary["rows"].get(role)
            if row is None:
                continue
            key = (role, summary["teacher"].get("arch") if role == "teacher" else summary["student_arch"],
                   round(row["metrics"]["accuracy"]["mean"], 6))
            if key not in seen:
                seen.add(key)
                rows[f"{role} ({label})"] = row
        rows[f"student ({label})"] = summary["rows"]["student"]
    single = {role: sum(k[0] == role for k in seen) == 1 for role in ("teacher", "scratch")}
    return {(name.split(" ")[0] if single.get(name.split(" ")[0]) else name): row for name, row in rows.items()}


def compare(run_dirs, out="compare.html") -> Path:
    """One table (each run's student; shared teacher/scratch once) and size/speed plots, in `out`."""
    if not run_dirs:
        raise KdkitError("compare needs at least one run directory; e.g. kdkit compare runs/kd runs/dkd")
    from kdkit.rundir import check_out_file

    check_out_file(out, [p / "summary.json" for p in map(Path, run_dirs)], example="compare.html")
    labelled = list(zip(run_labels(run_dirs), [read_summary(Path(d)) for d in run_dirs]))
    rows = compare_rows(labelled)
    header, body = table_rows({"rows": rows})
    runs = [[label, s["method"], s["teacher"].get("arch", "?"), s["student_arch"], s["dataset"],
             "-" if s.get("gap_closed", {}).get("mean") is None else f"{100 * s['gap_closed']['mean']:.0f}%"]
            for label, s in labelled]
    sections = [section("runs", "Runs", table(["run", "method", "teacher", "student", "dataset", "gap closed"], runs, "runs-table")),
                section("summary", "Test metrics", table(header, body, "compare-table")), size_section(rows)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, page(f"kdkit: {len(labelled)} runs compared", sections).encode())
    return out
