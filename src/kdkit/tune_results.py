"""The end of a `kdkit tune` study (docs/tune.md): RUN/tune.json (every trial, the best, the
parameter importance), RUN/param_importance.png, and the best trial's weights evaluated on test,
once, and written like a distill run."""
import dataclasses
import json
import shutil
import socket
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from kdkit import checkpoint as ckpt
from kdkit.errors import KdkitError
from kdkit.tune_study import file_lock, shown_url
from kdkit.tune_workers import Context


def param_importance(study) -> tuple[dict | None, str]:
    """(parameter -> importance, how it was measured), or (None, why not)."""
    from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None, f"not measured: needs 2 complete trials, the study has {len(complete)}"
    error = None
    for name, evaluator in (("fANOVA", FanovaImportanceEvaluator), ("mean decrease impurity", MeanDecreaseImpurityImportanceEvaluator)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = optuna.importance.get_param_importances(study, evaluator=evaluator(seed=0))
            return {k: float(v) for k, v in found.items()}, f"{name} over {len(complete)} complete trials"
        except Exception as e:  # noqa: BLE001 -- e.g. every trial with the same values; the note says why
            error = e
    return None, f"not measured ({type(error).__name__}: {str(error)[:120]})"


def tune_record(study, storage_url: str, ctx: Context) -> dict:
    """What tune.json holds: the study, every trial, the best one and the parameter importance."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "seconds": t.user_attrs.get("seconds"), "best_epoch": t.user_attrs.get("best_epoch"),
             "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
             "host": t.user_attrs.get("host"), "run_dir": t.user_attrs.get("run_dir")}
            | ({"diverged": t.user_attrs["diverged"]} if "diverged" in t.user_attrs else {}) for t in trials]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(complete, key=lambda r: (r["value"], -r["number"])) if complete else None
    importance, how = param_importance(study)
    return {"study": study.study_name, "storage": shown_url(storage_url), "metric": ctx.metric, "direction": "maximize",
            "trials_wanted": study.user_attrs["kdkit_trials"], "finished": sum(r["state"] in ("COMPLETE", "PRUNED") for r in rows),
            "complete": len(complete), "pruned": sum(r["state"] == "PRUNED" for r in rows),
            "search_space": {k: repr(v) for k, v in ctx.space.items()}, "best": best,
            "importance": importance, "importance_method": how, "trials": rows}


def write_importance_plot(record: dict, out: Path):
    """RUN/param_importance.png; without matplotlib (the report extra) a one-line notice instead."""
    path = out / "param_importance.png"
    try:
        from kdkit.report import plots
    except KdkitError as e:
        print(f"param_importance.png not written ({e}); the importances are in tune.json")
        path.unlink(missing_ok=True)
        return
    if record["importance"]:
        ckpt.atomic_write(path, plots.param_importance(record["importance"]))
    else:
        path.unlink(missing_ok=True)


def evaluate_best(ctx: Context, record: dict) -> dict:
    """Test metrics of the best trial's weights (copied to RUN/student/seedS, where reports look) and
    of the teacher: the usual summary (recipes.summarise_run), with the search's result under 'tune'."""
    from kdkit.data.labels import sample_counts
    from kdkit.recipes import summarise_run, test_both
    from kdkit.teachers.specs import teacher_metrics
    from kdkit.train import select_device
    from kdkit.weights import student_model

    best, seed = record["best"], ctx.seed
    cfg = dataclasses.replace(ctx.cfg, **best["params"], seed=seed, seeds=[seed], baseline=False)
    device = select_device(cfg.device)
    student_dir = ctx.out / "student" / f"seed{seed}"
    shutil.rmtree(student_dir, ignore_errors=True)
    shutil.copytree(best["run_dir"], student_dir, ignore=shutil.ignore_patterns("checkpoints"))
    teacher_row, teacher_logits = teacher_metrics(ctx.teacher, ctx.data, device)
    student = student_model(cfg, ctx.data, seed)
    metrics = test_both(student, student_dir, ctx.data, device, teacher_logits, cfg.posthoc_tau)
    fit_info = json.loads((student_dir / "fit.json").read_text())
    rows = {"teacher": [teacher_row], "scratch": [], "student": [dict(metrics, seed=seed, last_val_accuracy=fit_info["last_val_accuracy"])]}
    fits = {"teacher": [ctx.teacher_info.get("fit", {})], "scratch": [], "student": [fit_info]}
    # the same summary and report as `kdkit distill` (the report adds a tuning section)
    tuned = {"tune": {k: v for k, v in record.items() if k != "trials"}}
    samples = {"teacher": ctx.teacher_info.get("train_samples"), "student": sample_counts(ctx.data.train)}
    return summarise_run(cfg, ctx.data, ctx.teacher, ctx.teacher_info, rows, fits, samples, ctx.out, device, tuned)


def finish(study, storage_url: str, ctx: Context) -> dict:
    """tune.json and the importance plot; then the best trial on test, once per run directory: a
    worker that finds summary.json already made for the same best trial only updates its 'tune'.
    The best trial's weights are where its worker ran: on another machine, that worker evaluates them."""
    from kdkit.summary import write_summary

    with file_lock(ctx.out / "tune.lock"):
        record = tune_record(study, storage_url, ctx)
        ckpt.write_json(ctx.out / "tune.json", record)
        write_importance_plot(record, ctx.out)
        best = record["best"]
        if best is None:
            return {"tune": record, "note": f"no trial completed ({record['finished']} finished, all pruned); nothing to evaluate"}
        if best["host"] != socket.gethostname() or not (Path(best["run_dir"]) / "best.safetensors").is_file():
            return {"tune": record, "note": f"best trial {best['number']} ran on {best['host']} ({best['run_dir']}); "
                                            "its worker evaluates it on test there"}
        path = ctx.out / "summary.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        if previous.get("tune", {}).get("best", {}).get("number") == best["number"] and previous["tune"]["study"] == record["study"]:
            previous["tune"] = {k: v for k, v in record.items() if k != "trials"}  # already evaluated on test
            write_summary(previous, ctx.out)
            return previous
        return evaluate_best(ctx, record)
