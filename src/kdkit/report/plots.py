"""The report's figures: each function takes plain numbers and returns PNG bytes.

    png = training_curves({"teacher": records, "student": records})   # records: metrics.jsonl rows
    Path("curves.png").write_bytes(png)

matplotlib (the report extra: pip install 'kdkit[report]') runs with the Agg backend (no display
needed). Colours are fixed per role (teacher, scratch, student) so every figure of a report reads the same way.
"""
import io
import math

from kdkit.extras import need

matplotlib = need("matplotlib", "report.html")  # the one line when the report extra is missing
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402

from kdkit.evaluate import ECE_BINS  # noqa: E402

ROLE_COLOURS = {"teacher": "#1f77b4", "scratch": "#7f7f7f", "student": "#d62728"}
OTHER_COLOURS = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
MAX_PANELS = 8  # training-curve panels (loss terms + validation accuracy)


def colour(name: str, i: int) -> str:
    """The role's colour for teacher/scratch/student (also 'student (run)'), else the i-th other."""
    role = name.split(" ")[0]
    return ROLE_COLOURS.get(role, OTHER_COLOURS[i % len(OTHER_COLOURS)])


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def training_curves(runs: dict[str, list[dict]]) -> bytes:
    """One panel per logged `train/*` term and one for val/accuracy; one line per run, against step."""
    keys = sorted({k for records in runs.values() for r in records for k in r if k.startswith("train/")})
    keys = (keys[:MAX_PANELS - 1]) + ["val/accuracy"]
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax, key in zip(axes.flat, keys):
        for i, (name, records) in enumerate(runs.items()):
            points = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) < 4 else None, ms=3, label=name, color=colour(name, i))
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    return png(fig)


def confusion_matrices(matrices: dict[str, list[list[int]]], classes: list[str]) -> bytes:
    """Row-normalised confusion matrices (rows: true class), side by side; counts written when small."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.2), squeeze=False)
    for ax, (name, matrix) in zip(axes.flat, matrices.items()):
        counts = np.asarray(matrix, dtype=float)  # (K, K)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        k = len(counts)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
        ticks = range(k) if k <= 20 else range(0, k, max(1, k // 10))
        ax.set_xticks(list(ticks), [classes[t][:10] for t in ticks], rotation=90, fontsize=7)
        ax.set_yticks(list(ticks), [classes[t][:10] for t in ticks], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
    return png(fig)


def reliability_bins(probs, labels, n_bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin (equal width, right-closed, as evaluate.expected_calibration_error):
    {"low", "high", "count", "confidence", "accuracy"}; empty bins have count 0 and None means."""
    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels)  # (N, K), (N,)
    confidence = probs.max(axis=1)  # (N,)
    correct = probs.argmax(axis=1) == labels  # (N,)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence, side="left")  # (N,) in [0, n_bins)
    out = []
    for b in range(n_bins):
        inside = bins == b
        count = int(inside.sum())
        out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                    "confidence": float(confidence[inside].mean()) if count else None,
                    "accuracy": float(correct[inside].mean()) if count else None})
    return out


def reliability_diagram(bins_by_model: dict[str, list[dict]]) -> bytes:
    """Accuracy against confidence per bin, one line per model; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.plot([0, 1], [0, 1], ls="--", color="black", lw=0.8, label="perfect calibration")
    for i, (name, bins) in enumerate(bins_by_model.items()):
        used = [b for b in bins if b["count"]]
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker="o", ms=4,
                label=name, color=colour(name, i))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def per_class_recall(recalls: dict[str, list[float]], classes: list[str]) -> bytes:
    """Grouped bars: recall of each class for each model (teacher vs scratch vs student)."""
    k, m = len(classes), len(recalls)
    width = 0.8 / m
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * k * m), 3.6))
    for i, (name, values) in enumerate(recalls.items()):
        ax.bar(np.arange(k) + (i - (m - 1) / 2) * width, values, width, label=name, color=colour(name, i))
    step = max(1, k // 40)
    ax.set_xticks(range(0, k, step), [c[:12] for c in classes[::step]], rotation=90 if k > 10 else 0, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(m, 4))
    return png(fig)


def accuracy_vs(points: list[dict], key: str, label: str) -> bytes:
    """Scatter of test accuracy against `key` (e.g. parameters, latency_ms_b1), log x, named points."""
    fig, ax = plt.subplots(figsize=(5.2, 4))
    shown = [q for q in points if q.get(key) and q.get("accuracy") is not None]
    for i, p in enumerate(shown):
        ax.scatter(p[key], 100 * p["accuracy"], s=40, color=colour(p["name"], i), zorder=3)
        ax.annotate(p["name"], (p[key], 100 * p["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if shown:
        log_axis(ax, [p[key] for p in shown])
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy %")
    ax.grid(alpha=0.3, which="both")
    return png(fig)


def log_axis(ax, values, most: int = 6):
    """A log x axis over `values` with at most `most` ticks, labelled as plain numbers (0.2, 5, 20k, 1.5M):
    1-2-5 steps, whole decades when those are too many, and 3 rounded ticks when the range is too narrow
    for either. (matplotlib's own labels the minor ticks of a narrow range, and they overlap.)"""
    low, high = min(values) / 1.5, max(values) * 1.5  # room for the points' names
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for steps in ((1, 2, 5), (1,)):
        ticks = [m * 10.0 ** d for d in decades for m in steps if low <= m * 10.0 ** d <= high]
        if len(ticks) <= most:
            break
    while len(ticks) > most:  # many decades: every other one
        ticks = ticks[::2]
    if len(ticks) < 2:
        ticks = sorted({float(f"{v:.2g}") for v in np.geomspace(low * 1.3, high / 1.3, 3)})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: short_number(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def short_number(value: float) -> str:
    """20000 -> 20k, 1500000 -> 1.5M, 0.25 -> 0.25."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def importance_ranked(result: dict, key: str = "ablation_accuracy_drop", top_k: int = 30) -> bytes:
    """Horizontal bars of the top_k dimensions by `key`, coloured by their layer."""
    from kdkit.report.importance import ranked_dims

    names = [layer["name"] for layer in result["layers"]]
    rows = ranked_dims(result, key)[:top_k][::-1]  # most important at the top
    scale, unit = (100, " (accuracy points)") if key.startswith("ablation") else (1, "")
    fig, ax = plt.subplots(figsize=(6.4, max(2.5, 0.24 * len(rows) + 1)))
    palette = {name: OTHER_COLOURS[i % len(OTHER_COLOURS)] for i, name in enumerate(names)}
    ax.barh(range(len(rows)), [scale * v for _, _, v in rows], color=[palette[layer] for layer, _, _ in rows])
    ax.set_yticks(range(len(rows)), [f"{layer}[{d}]" for layer, d, _ in rows], fontsize=7)
    ax.set_xlabel(key.replace("_", " ") + unit)
    ax.legend(handles=[Patch(color=c, label=n) for n, c in palette.items()], fontsize=8, title="layer", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return png(fig)


def importance_heatmap(result: dict, key: str = "ablation_accuracy_drop") -> bytes:
    """Layers x dimensions (padded with blanks to the widest layer); not-analysed dimensions blank."""
    layers = result["layers"]
    width = max(layer["dims"] for layer in layers)
    scale, unit = (100, " (accuracy points)") if key.startswith("ablation") else (1, "")
    grid = np.full((len(layers), width), np.nan)  # (L, max D)
    for i, layer in enumerate(layers):
        grid[i, :layer["dims"]] = [np.nan if v is None else scale * v for v in layer[key]]
    fig, ax = plt.subplots(figsize=(min(14.0, 3 + 0.06 * width), 1.2 + 0.5 * len(layers)))
    image = ax.imshow(grid, aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_yticks(range(len(layers)), [layer["name"] for layer in layers], fontsize=8)
    ax.set_xlabel("dimension (channel or unit) within the layer")
    fig.colorbar(image, ax=ax, label=key.replace("_", " ") + unit)
    return png(fig)


def param_importance(importances: dict[str, float]) -> bytes:
    """Horizontal bars of each searched hyper-parameter's importance (`kdkit tune`, optuna's fANOVA)."""
    rows = sorted(importances.items(), key=lambda kv: kv[1])  # most important at the top
    fig, ax = plt.subplots(figsize=(5.6, max(2.0, 0.35 * len(rows) + 1)))
    ax.barh(range(len(rows)), [v for _, v in rows], color=ROLE_COLOURS["student"])
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=9)
    ax.set_xlabel("importance for the validation score (sums to 1)")
    ax.grid(axis="x", alpha=0.3)
    return png(fig)
