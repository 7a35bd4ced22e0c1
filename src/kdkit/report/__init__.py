"""See what was distilled: report.html for a run, compare.html across runs, feature importance.

    from kdkit.report import write_report, compare, layer_importance
    write_report("runs/demo")                          # runs/demo/report.html + importance.json
    compare(["runs/kd", "runs/dkd"], "compare.html")
    layer_importance(student, teacher, data)           # JSON-ready dict, see importance.py

importance.py measures, plots.py draws (PNG bytes), reading.py says it in words (the verdict the
page opens with, the importance paragraph), html.py assembles report.html and comparison.py
compare.html; docs/report.md (`kdkit docs report`) says how to read them.
"""
from kdkit.report.comparison import compare
from kdkit.report.html import write_report
from kdkit.report.importance import layer_importance

__all__ = ["compare", "layer_importance", "write_report"]
