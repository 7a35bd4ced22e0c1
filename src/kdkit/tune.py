"""`kdkit tune`: an Optuna search over a distillation method's hyper-parameters (docs/tune.md).

    kdkit tune --dataset digits --teacher cnn --student cnn-tiny --method kd --trials 20 --out runs/tune
    kdkit tune ... --storage postgresql://user:password@db-host/kdkit --study-name kd-digits   # on each machine

One trial = one student distillation (one seed, no scratch baseline) in RUN/trials/NNNN, scored on
validation, never on test; the teacher is trained once, in RUN/teacher, before the first trial.
Processes that share a storage and a study name share one study and together finish exactly
--trials trials (see `run_worker`). At the end the best trial's weights are evaluated on test, once,
and written like a distill run (summary.json, summary.md, report.html), with RUN/tune.json (every
trial) and RUN/param_importance.png.

This file holds the search space, one trial (`objective`) and the whole run (`tune`); the study's
storage and who may join it are in tune_study.py, the workers' coordination (`run_worker`) in
tune_workers.py, tune.json and the final test evaluation in tune_results.py.
"""
import dataclasses
import difflib
import os
import shutil
import time
import warnings
from pathlib import Path

from kdkit.extras import need

optuna = need("optuna", "kdkit tune")  # the one line when the tune extra is missing (tune_*.py import it too)
from optuna.distributions import CategoricalDistribution, FloatDistribution  # noqa: E402

from kdkit import checkpoint as ckpt  # noqa: E402
from kdkit.config import DistillConfig, load_config, save_yaml  # noqa: E402
from kdkit.errors import KdkitError, shown, unknown  # noqa: E402
from kdkit.rundir import check_run_dir, claim_run_dir  # noqa: E402
from kdkit.tune_results import finish  # noqa: E402
from kdkit.tune_study import file_lock, fingerprint, first_difference, open_storage, open_study, shown_url  # noqa: E402
from kdkit.tune_workers import Context, claim_place, counts, run_worker  # noqa: E402

METRICS = ("accuracy", "balanced_accuracy")


def search_space(cfg: DistillConfig, fixed=(), searched=None) -> dict:
    """name -> optuna distribution: the hyper-parameters `cfg.method` reads that its methods declare
    `tuned` (or those named in `searched`), each over its declared search range, plus lr and
    weight_decay; keys in `fixed` (given with --set) keep their config value and are not searched."""
    from kdkit.config import METHOD_KEYS
    from kdkit.methods import defaults_of, used_hyperparameters

    used, defaults = used_hyperparameters(cfg.method, cfg), defaults_of(cfg.method)
    chosen = [k for k in used if k in METHOD_KEYS and (k in searched if searched is not None else METHOD_KEYS[k].hyper.tuned)]
    numbers, choices = {}, {}
    for key in chosen:
        search = METHOD_KEYS[key].hyper.search
        if search is None:
            continue
        if search.choices:
            choices[key] = CategoricalDistribution(list(search.choices))
            continue
        centre = getattr(cfg, key) or defaults.get(key)
        if search.factor and not centre:
            continue  # a weight of 0 (off) has nothing to search around
        numbers[key] = FloatDistribution(*search.bounds(centre), log=search.log)
    numbers["lr"] = FloatDistribution(cfg.lr / 3, cfg.lr * 3, log=True)
    numbers["weight_decay"] = FloatDistribution(min(1e-5, cfg.weight_decay / 3 or 1e-5), max(1e-3, cfg.weight_decay * 3),
                                                log=True)
    return {k: v for k, v in (numbers | choices).items() if k not in fixed}


def suggest(trial, name: str, distribution):
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)


def objective(trial, study, ctx: Context) -> float:
    """One distillation with the trial's hyper-parameters; the validation score of its best weights."""
    from kdkit.recipes import distillation
    from kdkit.train import fit
    from kdkit.weights import factory_kwargs, model_meta

    claim_place(study, trial)
    params = {name: suggest(trial, name, dist) for name, dist in ctx.space.items()}
    continues = trial.user_attrs.get("continues")  # the run dir of a killed trial with these parameters
    run_dir = Path(continues) if continues else ctx.out / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    cfg = dataclasses.replace(ctx.cfg, **params, seed=ctx.seed, seeds=[ctx.seed], out=str(run_dir), resume=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, run_dir / "config.yaml")
    scores = {}

    def on_epoch(epoch: int, row: dict):
        scores[epoch] = row[f"val_{ctx.metric}"]
        trial.report(scores[epoch], epoch)
        if epoch < cfg.epochs and trial.should_prune():  # (after the last epoch there is nothing left to save)
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    if continues and (history := checkpointed_history(run_dir)) is not None:
        cfg = dataclasses.replace(cfg, resume=True)  # the killed fit goes on from its checkpoint, bit for bit
        for row in history:  # the epochs it had finished count for this trial (and its pruning) too
            scores[row["epoch"]] = row[f"val_{ctx.metric}"]
            trial.report(scores[row["epoch"]], row["epoch"])

    t0 = time.perf_counter()
    try:
        result = fit(distillation(cfg, ctx.data, ctx.source or ctx.teacher), ctx.data, cfg, run_dir,
                     meta=model_meta(cfg.student, ctx.data, factory_kwargs(cfg, "student")),
                     desc=f"trial {trial.number}", on_epoch=on_epoch)
    except KdkitError as e:
        if "became NaN/inf" not in str(e):  # a diverged trial is a result of its hyper-parameters; other errors are not
            raise
        trial.set_user_attr("diverged", str(e).split(";")[0])
        raise optuna.TrialPruned("diverged") from None
    finally:
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # trials are not resumed; keep the disk free
    info = {k: v for k, v in dataclasses.asdict(result).items() if k != "run_dir"}
    ckpt.write_json(run_dir / "fit.json", info)
    trial.set_user_attr("best_epoch", result.best_epoch)
    return scores[result.best_epoch]  # the score of the weights that would be evaluated (best.safetensors)


def checkpointed_history(run_dir: Path) -> list | None:
    """The per-epoch validation rows of a killed trial's newest intact checkpoint (None: none)."""
    from kdkit.train import complete_checkpoints

    for state in complete_checkpoints(run_dir):
        meta = ckpt.load_meta(state)
        if meta.get("sha256"):
            return meta["history"]
    return None


def prepare(cfg: DistillConfig, metric: str, fixed, searched=None) -> Context:
    """The data and every check that needs no training (a typo never costs a teacher)."""
    from kdkit.recipes import prepare_distill

    cfg, data = prepare_distill(cfg, kind="tune")
    return Context(cfg, data, None, {}, search_space(cfg, fixed, searched), metric, Path(cfg.out))


def check_searched(cfg: DistillConfig, searched) -> None:
    """--search names hyper-parameters of cfg.method that have a search range (kdkit methods NAME lists them)."""
    from kdkit.config import METHOD_KEYS
    from kdkit.methods import used_hyperparameters

    can = [k for k in used_hyperparameters(cfg.method, cfg) if k in METHOD_KEYS and METHOD_KEYS[k].hyper.search]
    for key in searched:
        if key not in can:
            close = difflib.get_close_matches(key, can, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"method {cfg.method} can search: {', '.join(can) or 'none'}"
            raise KdkitError(f"--search {shown(key)} is not a searchable hyper-parameter of method {cfg.method}; {hint}")


def prepare_teacher(ctx: Context):
    """The teacher, trained once per run directory: the first worker trains it under the lock, the
    others wait, then load it. A run directory holds one tune run's settings (config.yaml)."""
    from kdkit.recipes import build_teacher, teacher_source
    from kdkit.train import select_device

    out, cfg = ctx.out, ctx.cfg
    with file_lock(out / "tune.lock"):
        if (out / "config.yaml").is_file():
            try:
                old = dataclasses.asdict(load_config(DistillConfig(), out / "config.yaml"))
            except KdkitError as e:  # e.g. another tool's config.yaml: the fix is another folder, not the file
                raise KdkitError(f"{str(e).split('; ')[0]}; --out '{out}' is not a kdkit tune run: use another --out") from None
            diff = first_difference(fingerprint(old), fingerprint(dataclasses.asdict(cfg)))
            if diff:
                raise KdkitError(f"--out '{out}' holds a tune run with other settings ({diff}); use the same settings "
                                 "to continue it, or another --out")
        save_yaml(cfg, out / "config.yaml")
        reused = (out / "teacher" / "fit.json").is_file()
        t0 = time.perf_counter()
        ctx.teacher, ctx.teacher_info = build_teacher(dataclasses.replace(cfg, resume=True), ctx.data, out)  # finished: loaded
        if ctx.teacher_info.get("source") == "trained":
            print(f"teacher: {'loaded' if reused else 'trained'} in {out / 'teacher'} ({time.perf_counter() - t0:.0f} s)", flush=True)
        # teacher_cache: labelled once here, under the lock; every trial of every worker reads it
        ctx.source, _ = teacher_source(ctx.teacher, dataclasses.replace(cfg, seed=ctx.seed), ctx.data, out, select_device(cfg.device))


def check_arguments(cfg: DistillConfig, trials: int, metric: str, timeout: float | None, searched=None):
    if searched is not None:
        check_searched(cfg, searched)
    if trials < 1:
        raise KdkitError(f"--trials must be at least 1, got {trials}; e.g. --trials 20")
    check_run_dir(cfg.out, "tune", cfg.overwrite)
    if metric not in METRICS:
        raise unknown("metric", metric, METRICS)
    if timeout is not None and not timeout > 0:
        raise KdkitError(f"--timeout must be a positive number of seconds, got {timeout}; e.g. --timeout 3600, or leave it out")
    if len(cfg.seeds) != 1:
        raise KdkitError(f"kdkit tune runs each trial with one seed, got seeds {cfg.seeds}; give one, e.g. --seeds 0 "
                         "(then run `kdkit distill` with the best parameters over several seeds)")
    for key, default in (("generations", DistillConfig.generations), ("max_steps", 0), ("step_budget", 0)):
        if getattr(cfg, key) != default:  # (a quick search: fewer epochs, --trials, train_per_class)
            raise KdkitError(f"kdkit tune does not take {key}={getattr(cfg, key)}; leave it at its default ({default})")


def tune(cfg: DistillConfig, trials: int, storage: str | None = None, study_name: str | None = None,
         metric: str | None = None, resume: bool = False, timeout: float | None = None, fixed=(),
         sampler=None, pruner=None, searched=None) -> dict:
    """Join (or start) the study, run trials until it has `trials`, evaluate the best on test.
    Returns the summary (as `kdkit distill` writes it, plus 'tune'), or {'tune': ..., 'note': why
    there is no summary}. `fixed`: config keys not to search (those given with --set). `searched`: the
    method's hyper-parameters to search (None: those its methods mark tuned), beside lr and weight_decay."""
    deadline = time.monotonic() + timeout if timeout else None
    metric = metric or ("balanced_accuracy" if cfg.imbalance else "accuracy")
    check_arguments(cfg, trials, metric, timeout, searched)
    out = Path(cfg.out)
    storage = storage or f"sqlite:///{out.resolve() / 'study.db'}"
    study_name = study_name or os.path.normpath(cfg.out)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ctx = prepare(cfg, metric, fixed, searched)
    ctx.sampler_seed = ctx.seed if sampler is None else None
    claim_run_dir(out, "tune", cfg.overwrite, lock=False)  # shared by the workers: each trial has its own folder
    with file_lock(out / "tune.lock"):  # on one machine, workers that start together create the tables in turn
        rdb = open_storage(storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (optuna marks constant_liar experimental)
        sampler = sampler or optuna.samplers.TPESampler(constant_liar=True)  # running trials steer the others away
    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)  # never after epoch 1
    study = open_study(rdb, study_name, ctx.cfg, trials, metric, resume, sampler, pruner)
    prepare_teacher(ctx)
    print(f"study '{study_name}' in {shown_url(storage)}: {counts(study)[0]} of {trials} trials finished; "
          f"searching {', '.join(ctx.space) or 'nothing (every key fixed)'} by validation {metric}", flush=True)
    run_worker(study, ctx, objective, deadline)
    return finish(study, storage, ctx)
