"""report.html: one self-contained page per distill run (figures inline as base64 PNG, no scripts).

    from kdkit.report import write_report
    write_report("runs/demo")          # runs/demo/report.html and runs/demo/importance.json

    kdkit report runs/demo [--no-importance]

The page is built from what the run directory holds (summary.json, config.yaml, each phase's
metrics.jsonl and weights). Models and the test split are rebuilt (weights.load_model,
data.prepare.prepare_data) only for the calibration and importance sections. A section or figure that
cannot be built says why in one line instead of failing the report. Plots use the first seed.
comparison.py reuses these pieces for compare.html.
"""
import base64
import dataclasses
import datetime
import functools
import json
from html import escape  # the standard library's html (imports are absolute)
from pathlib import Path

import torch

from kdkit.checkpoint import atomic_write
from kdkit.errors import KdkitError
from kdkit.report import plots
from kdkit.report.importance import layer_importance, layer_shares
from kdkit.report.reading import importance_title, reading, verdict
from kdkit.summary import table_rows

ROLES = ("teacher", "scratch", "student")
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}
figcaption{font-size:13px;color:#555}.note{color:#8a5300;font-size:14px}pre{background:#f7f7f7;padding:1em;font-size:12px}
#verdict{font-size:17px;border-left:4px solid #d62728;padding-left:.6em}"""


class Run:
    """A distill run directory; its data and models are loaded on first use (and may fail alone)."""

    def __init__(self, run_dir, data=None, device="cpu", trusted_hooks=()):
        from kdkit.train import parse_device

        self.dir, self.device, self._data = Path(run_dir), parse_device(str(device)), data
        self.trusted_hooks = tuple(trusted_hooks)  # module:function hooks its sidecars may name
        self.summary = read_summary(self.dir)
        self.seed = self.summary["seeds"][0]

    def phase_dir(self, name: str) -> Path:
        """Where a row's fit() run lives: teacher/ (or teacherN/) once, the others per seed."""
        return self.dir / name if name.startswith("teacher") else self.dir / name / f"seed{self.seed}"

    @functools.cached_property
    def config(self):
        from kdkit.config import DistillConfig, load_config

        return load_config(DistillConfig(), self.dir / "config.yaml")

    @functools.cached_property
    def data(self):
        from kdkit.data.prepare import prepare_data

        return self._data or prepare_data(dataclasses.replace(self.config, progress=False), None, self.seed)

    @functools.cached_property
    def models(self) -> dict:
        """teacher (when it is one torch model), scratch and student, with their best weights."""
        from kdkit.teachers.specs import teacher_specs
        from kdkit.weights import is_weights, load_model

        found = {}
        for name in ROLES:
            path = self.phase_dir(name) / "best.safetensors"
            if name == "teacher" and not path.is_file():
                specs = teacher_specs(self.config.teacher)
                path = Path(specs[0]) if len(specs) == 1 and is_weights(specs[0]) else path
            if path.exists():
                found[name] = load_model(path, self.trusted_hooks)[0].to(self.device)
        if "student" not in found:
            raise KdkitError(f"no student weights in '{self.phase_dir('student')}'; the run did not finish (continue with --resume)")
        return found


def read_summary(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    if run_dir.is_file():
        raise KdkitError(f"'{run_dir}' is a file; point at the `kdkit distill` run directory that holds it: {run_dir.parent}")
    if not path.is_file():
        raise KdkitError(f"no summary.json in '{run_dir}'; point at a finished `kdkit distill` run directory")
    try:
        summary = json.loads(path.read_text())
        damage = None if isinstance(summary, dict) else f"a {type(summary).__name__}, not a mapping"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        damage = f"not valid JSON: {str(e).split(' (char')[0]}"
    if damage:  # the summary is rebuilt from the finished phases' files
        raise KdkitError(f"'{path}' is damaged ({damage}); write it again: kdkit distill --config {run_dir}/config.yaml "
                         "--resume (finished phases are not trained again)")
    if "rows" not in summary:
        raise KdkitError(f"'{run_dir}' is a `kdkit train` run; reports compare teacher, scratch and student, "
                         "so point at a `kdkit distill` run")
    return summary


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl (a torn last line, from a killed run, is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


# ---------------------------------------------------------------- page pieces


def image(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}"><figcaption>{escape(caption)}</figcaption></figure>'


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def why(error: Exception) -> str:
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return text if isinstance(error, KdkitError) else f"{type(error).__name__}: {text}"


def guarded(build, what: str) -> str:
    """build()'s HTML, or a one-line note saying why `what` could not be built. The report must
    survive anything a single figure can hit (missing files, an unloadable dataset, a plot bug)."""
    try:
        return build()
    except Exception as error:  # noqa: BLE001 (deliberately broad, see docstring)
        return note(f"{what}: not available ({why(error)})")


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def table(header: list[str], body: list[list], table_id: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>" for cells in body)
    attr = f' id="{table_id}"' if table_id else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def page(title: str, sections: list[str]) -> str:
    from kdkit.version import __version__

    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n<h1>{escape(title)}</h1>\n" + "\n".join(sections)
            + f'\n<footer><p class="note">written by kdkit {__version__} on {stamp}</p></footer></body></html>\n')


# ---------------------------------------------------------------- sections of report.html


def summary_section(summary: dict) -> str:
    header, body = table_rows(summary)
    text = f"{summary['dataset']}, seeds {', '.join(map(str, summary['seeds']))}; test set; mean ± std over seeds."
    gap = summary.get("gap_closed", {}).get("mean")
    if gap is not None:
        text += f" Gap closed (accuracy): {100 * gap:.0f}% = (student - scratch) / (teacher - scratch)."
    return section("summary", "Teacher vs scratch vs student", f"<p>{escape(text)}</p>" + table(header, body, "summary-table"))


def curves_section(run: Run) -> str:
    def build():
        runs = {name: read_metrics(run.phase_dir(name) / "metrics.jsonl") for name in run.summary["rows"]
                if (run.phase_dir(name) / "metrics.jsonl").is_file()}
        if not runs:
            return note("training curves: no metrics.jsonl found (a loaded teacher has none)")
        return image(plots.training_curves(runs), f"training curves (seed {run.seed}): every logged loss term and validation accuracy")

    return section("curves", "Training curves", guarded(build, "training curves"))


def _first_seed(summary: dict, names=None) -> dict:
    """name -> the first seed's test metrics, for rows that have per-class results."""
    rows = {n: r["per_seed"][0] for n, r in summary["rows"].items() if r["per_seed"] and "per_class" in r["per_seed"][0]}
    return {n: m for n, m in rows.items() if names is None or n in names}


def classes_section(run: Run) -> str:
    summary, classes = run.summary, run.summary["classes"]

    def recall():
        recalls = {n: [m["per_class"][c]["recall"] for c in classes] for n, m in _first_seed(summary).items()}
        return image(plots.per_class_recall(recalls, classes), "recall of each class (test set)")

    def confusion():
        matrices = {n: m["confusion_matrix"] for n, m in _first_seed(summary, ROLES).items()}
        return image(plots.confusion_matrices(matrices, classes), "confusion matrices, rows normalised (rows: true class; numbers: counts)")

    return section("classes", "Recall and confusion per class", guarded(recall, "per-class recall") + guarded(confusion, "confusion matrices"))


def calibration_section(run: Run) -> str:
    def build():
        from kdkit.data import BatchLoader
        from kdkit.evaluate import predict_logits

        test = BatchLoader(run.data.test, 512, shuffle=False, mean=run.data.mean, std=run.data.std, device=run.device)
        bins = {}
        for name, model in run.models.items():
            logits, labels = predict_logits(model, test, run.device)
            bins[name] = plots.reliability_bins(torch.softmax(logits.double(), 1).numpy(), labels.numpy())
        return image(plots.reliability_diagram(bins),
                     "reliability diagram (test set, raw logits): points below the diagonal are over-confident")

    return section("calibration", "Calibration: does confidence match accuracy?", guarded(build, "reliability diagram"))


def size_points(rows: dict) -> list[dict]:
    return [{"name": name, "accuracy": row["metrics"].get("accuracy", {}).get("mean"),
             "parameters": row["facts"].get("parameters"), "latency_ms_b1": row["facts"].get("latency_ms_b1")}
            for name, row in rows.items()]


def size_section(rows: dict) -> str:
    points = size_points(rows)
    body = guarded(lambda: image(plots.accuracy_vs(points, "parameters", "parameters"), "accuracy vs parameters"), "accuracy vs parameters")
    body += guarded(lambda: image(plots.accuracy_vs(points, "latency_ms_b1", "CPU latency, batch 1 (ms)"),
                                  "accuracy vs latency (CPU, batch 1, median)"), "accuracy vs latency")
    return section("size", "Accuracy vs size and speed", body)


def importance_section(run: Run, enabled: bool, n_samples: int) -> str:
    title = importance_title(run.summary["method"])
    if not enabled:
        return section("importance", title, note("feature importance: skipped (--no-importance)"))

    def build():
        cfg = run.config
        layers = cfg.student_layers or None  # the method's own taps when set, else every stage output
        result = layer_importance(run.models["student"], run.models.get("teacher"), run.data, layers,
                                  n_samples=n_samples, device=run.device)
        atomic_write(run.dir / "importance.json", json.dumps(dict(result, written_by="kdkit report"), indent=1).encode())
        return importance_body(result, run.summary["method"])

    return section("importance", title, guarded(build, "feature importance"))


def importance_body(result: dict, method: str = "") -> str:
    key = "ablation_accuracy_drop"
    figures = [(lambda: plots.importance_ranked(result, key), "top dimensions by accuracy drop when mean-ablated"),
               (lambda: plots.importance_heatmap(result, key), "accuracy drop per layer and dimension (blank: not analysed)"),
               (lambda: plots.importance_ranked(result, "grad_x_act"), "top dimensions by gradient x activation")]
    parts = [f"<p>{escape(reading(result, method))}</p>", layer_table(result)]
    parts += [guarded(lambda draw=draw, caption=caption: image(draw(), caption), caption) for draw, caption in figures]
    parts.append(note(f"method: {result['method']}; {result['n_samples']} {result['split']} samples; "
                      f"at most {result['max_dims']} dimensions ablated per layer. Data: importance.json"))
    if result["agreement"] is None:
        parts.append(note("agreement drop: not measured (no single torch teacher to rebuild, e.g. a combination of teachers)"))
    return "\n".join(parts)


def layer_table(result: dict) -> str:
    shares = layer_shares(result)
    header = ["layer", "shape", "dims", "ablated", "acc drop (sum, pts)", "share %", "mean per dim (pts)",
              "max single (pts)", "agreement drop (sum, pts)", "grad x act (sum)"]
    body = []
    for layer in result["layers"]:
        total = layer["total"]
        values = [v for v in layer["ablation_accuracy_drop"] if v is not None]
        body.append([layer["name"], "x".join(map(str, layer["shape"])), layer["dims"], layer["analysed"],
                     _pts(total["ablation_accuracy_drop"]), f"{100 * shares.get(layer['name'], 0):.0f}",
                     _pts(layer["mean"]["ablation_accuracy_drop"]), _pts(max(values) if values else None),
                     _pts(total["ablation_agreement_drop"]), f"{total['grad_x_act']:.3g}"])
    return table(header, body, "importance-table")


def _pts(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def tuning_section(run_dir: Path) -> str:
    """The search behind a `kdkit tune` run (RUN/tune.json): the best trial and parameter importance."""
    def build():
        record = json.loads((run_dir / "tune.json").read_text())
        best = record["best"]
        text = (f"Study {record['study']}: {record['finished']} trials finished ({record['complete']} complete, "
                f"{record['pruned']} pruned); the student is trial {best['number']}, the best by validation "
                f"{record['metric']} ({best['value']:.4f}), and the only one evaluated on test.")
        params = [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in best["params"].items()]
        body = f"<p>{escape(text)}</p>" + table(["hyper-parameter", "best value"], params, "tune-table")
        if not record["importance"]:
            return body + note(f"parameter importance: {record['importance_method']}")
        return body + image(plots.param_importance(record["importance"]), f"parameter importance ({record['importance_method']})")

    return section("tuning", "Hyper-parameter search", guarded(build, "search results") + note("every trial: tune.json"))


def config_section(run_dir: Path) -> str:
    path = run_dir / "config.yaml"
    body = (f"<details><summary>config.yaml (every key, as the run used it)</summary><pre>{escape(path.read_text())}</pre></details>"
            if path.is_file() else note("config.yaml: not found"))
    return section("config", "Resolved config", body)


def environment_section(summary: dict) -> str:
    env = dict(summary.get("environment", {}))
    if summary.get("wall_seconds") is not None:
        env["wall seconds (whole run)"] = f"{summary['wall_seconds']:.1f}"
    body = table(["key", "value"], [[k, "-" if v is None else v] for k, v in env.items()], "environment-table")
    return section("environment", "Environment", body if env else note("environment: not recorded"))


def deployment_section(run_dir: Path) -> str:
    """The deployment table of `kdkit export` (RUN/export/*.deploy.json), when the run was exported."""
    import json

    from kdkit.export import deploy_cells

    files = sorted((run_dir / "export").glob("*.deploy.json"))
    if not files:
        return section("deployment", "Deployment", note(f"not exported yet: `kdkit export {run_dir} --quantize int8` adds "
                                                       "the ONNX deployment table here"))
    header, body = deploy_cells(json.loads(files[0].read_text()))
    text = f"onnxruntime on CPU, 1 thread, median latency; from {files[0].name}"
    return section("deployment", "Deployment", f"<p>{escape(text)}</p>" + table(header, body, "deploy-table"))


def write_report(run_dir, importance: bool = True, data=None, n_samples: int = 1000, device="cpu",
                 trusted_hooks=()) -> Path:
    """RUN_DIR/report.html (and importance.json); `data` skips reloading the dataset (e.g. arrays).
    trusted_hooks: module:function model hooks the run's sidecars may name (else refused)."""
    from kdkit.rundir import check_out_file

    run = Run(run_dir, data, device, trusted_hooks)
    for name in ("report.html", "importance.json"):  # never over a file of the same name kdkit did not write
        check_out_file(run.dir / name, example=name)
    summary = run.summary
    title = f"{summary['method']}: {summary['teacher'].get('arch', '?')} -> {summary['student_arch']} on {summary['dataset']}"
    tuning = [tuning_section(run.dir)] if (run.dir / "tune.json").is_file() else []  # a `kdkit tune` run
    opening = f'<p id="verdict">{escape(verdict(summary))}</p>'
    sections = [opening, summary_section(summary), *tuning, curves_section(run), classes_section(run), calibration_section(run),
                size_section(summary["rows"]), importance_section(run, importance, n_samples),
                deployment_section(run.dir), config_section(run.dir), environment_section(summary)]
    out = run.dir / "report.html"
    atomic_write(out, page(title, sections).encode())
    return out
