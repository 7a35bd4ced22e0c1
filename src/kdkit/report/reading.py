"""What report.html says in words: the verdict it opens with (did distillation pay, by how much, how
sure the run can be), the importance section's title, and the paragraph that reads its numbers.

    verdict(summary)   # "Distillation gained +2.3 points of test accuracy over the same student
                       #  trained alone (78% of the teacher-scratch gap closed), mean of 3 seeds."

The verdict comes from summary.json's rows (test accuracy, mean over seeds): the distilled student
against the scratch student, and the share of the teacher-scratch gap it closed when the teacher is
above scratch on the same test set. One seed, or a difference inside the seed-to-seed spread, is said.
"""
from kdkit.errors import KdkitError
from kdkit.report.importance import layer_shares, ranked_dims

TIE_POINTS = 0.05  # a difference below this (in accuracy points) is no difference at this precision


def verdict(summary: dict) -> str:
    rows = summary["rows"]
    student = _accuracy(rows["student"])
    scratch = _accuracy(rows["scratch"]) if rows.get("scratch", {}).get("per_seed") else None
    if scratch is None:
        return (f"No scratch student was trained (baseline off), so this run cannot say what distillation gained: "
                f"the distilled student reaches {100 * student['mean']:.1f}% test accuracy{_teacher(rows)}.")
    seeds = len(rows["student"]["per_seed"])
    gain = 100 * (student["mean"] - scratch["mean"])  # points
    spread = 100 * max(student["std"] or 0.0, scratch["std"] or 0.0)
    if gain >= TIE_POINTS:
        text = f"Distillation gained {gain:+.1f} points of test accuracy over the same student trained alone{_gap(rows, student, scratch)}"
    elif gain > -TIE_POINTS:
        text = "Distillation did not pay: the distilled student matched the same student trained alone in test accuracy"
    else:
        text = f"Distillation did not pay: the distilled student scored {-gain:.1f} points of test accuracy below the same student trained alone"
    if seeds == 1:
        return text + ", from one seed: rerun with several (e.g. --seeds 0,1,2) before trusting a difference this size."
    within = f", within the seed-to-seed spread (±{spread:.1f} points)" if abs(gain) >= TIE_POINTS and abs(gain) <= spread else ""
    return text + f", mean of {seeds} seeds{within}."


def _accuracy(row: dict) -> dict:
    return row["metrics"]["accuracy"]  # {"mean": ..., "std": ...}


def _test_teacher(rows: dict) -> float | None:
    """The teacher's test accuracy, when it was measured on test (not on validation: saved outputs)."""
    teacher = rows.get("teacher")
    if not teacher or not teacher["per_seed"] or teacher["per_seed"][0].get("measured_on") == "val":
        return None
    return _accuracy(teacher)["mean"]


def _gap(rows: dict, student: dict, scratch: dict) -> str:
    teacher = _test_teacher(rows)
    if teacher is None:
        return ""
    if teacher <= scratch["mean"]:
        return " (the teacher is not above it, so there is no teacher-scratch gap to close)"
    closed = (student["mean"] - scratch["mean"]) / (teacher - scratch["mean"])
    return f" ({100 * closed:.0f}% of the teacher-scratch gap closed)"


def _teacher(rows: dict) -> str:
    teacher = _test_teacher(rows)
    return "" if teacher is None else f" (teacher {100 * teacher:.1f}%)"


def has_distillation_vector(method: str) -> bool:
    """Whether the run's method (or a part of it) distils through a distillation vector: asked of the
    method classes (methods/vector.py), not of their names. An unknown name (an old summary) has none."""
    from kdkit.methods import METHODS, method_parts
    from kdkit.methods.vector import DistillationVector

    try:
        return any(issubclass(METHODS[part], DistillationVector) for part in method_parts(method))
    except KdkitError:
        return False


def importance_title(method: str) -> str:
    """Named by what the section measures; "the distillation vector" only for a method that has one."""
    if has_distillation_vector(method):
        return "Feature importance of the distillation vector: which of its slices the student relies on"
    return "Feature importance: which of the distilled student's features its accuracy rests on"


def reading(result: dict, method: str = "") -> str:
    """A plain-language paragraph computed from the importance numbers."""
    key, n = "ablation_accuracy_drop", result["n_samples"]
    shares, ranked = layer_shares(result, key), ranked_dims(result, key)
    if not shares:
        return (f"Mean-ablating any single dimension changes the student's accuracy on {n} samples by nothing: "
                "at this granularity its representation is redundant; the gradient x activation view still ranks them.")
    order = sorted(shares, key=shares.get, reverse=True)
    others = ", ".join(f"{name} {100 * shares[name]:.0f}%" for name in order[1:])
    text = f"Layer {order[0]} carries {100 * shares[order[0]]:.0f}% of the total ablation importance" + (f" ({others})." if others else ".")
    positive = sum(max(0.0, v) for _, _, v in ranked)
    top = ranked[:10]
    in_first = sum(layer == order[0] for layer, _, _ in top)
    text += (f" The top {len(top)} dimensions hold {100 * sum(max(0.0, v) for _, _, v in top) / positive:.0f}% of it"
             f" ({in_first} of them in {order[0]}); the most important, {top[0][0]}[{top[0][1]}], costs"
             f" {100 * top[0][2]:.1f} accuracy points when ablated.")
    idle = sum(v <= 0 for _, _, v in ranked)
    whole = "distillation vector" if has_distillation_vector(method) else "student's features"
    text += (f" {idle} of {len(ranked)} analysed dimensions cost nothing or help when removed: the parts of the"
             f" {whole} that carry little signal or noise on this data.")
    return text + _second_views(result, order[0])


def _second_views(result: dict, first: str) -> str:
    """What the per-dimension mean, the agreement drop and the gradient view add to the sums."""
    text = ""
    means = {layer["name"]: layer["mean"]["ablation_accuracy_drop"] for layer in result["layers"]
             if layer["mean"]["ablation_accuracy_drop"] is not None}
    dense = max(means, key=means.get)
    if dense != first:  # sums favour wide layers; the mean says where each dimension counts most
        text += (f" Per dimension, {dense} counts most ({100 * means[dense]:.2f} points on average,"
                 f" {first} {100 * means[first]:.2f}).")
    agree = layer_shares(result, "ablation_agreement_drop")
    if agree:
        best = max(agree, key=agree.get)
        text += f" For agreement with the teacher, {best} matters most ({100 * agree[best]:.0f}%)."
    gradient = layer_shares(result, "grad_x_act")
    if gradient:
        best = max(gradient, key=gradient.get)
        verdict = "agrees" if best == first else f"differs: it puts {best} first"
        text += f" The gradient x activation view {verdict} ({100 * gradient[best]:.0f}% in {best})."
    return text
