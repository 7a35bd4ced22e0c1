"""`kdkit tune`: an Optuna search over a distillation method's hyper-parameters (docs/tune.md).

    kdkit tune --dataset digits --teacher cnn --student cnn-tiny --method kd --trials 20 --out runs/tune
    kdkit tune ... --storage postgresql://user:password@db-host/kdkit --study-name kd-digits   # on each machine

One trial = one student distillation (one seed, no scratch baseline) in RUN/trials/NNNN, scored on
validation, never on test; the teacher is trained once, in RUN/teacher, before the first trial.
Processes that share a storage and a study name share one study and together finish exactly
--trials trials (see `run_worker`). At the end the best trial's weights are evaluated on test, once,
and written like a distill run (summary.json, summary.md, report.html), with RUN/tune.json (every
trial) and RUN/param_importance.png.
"""
import contextlib
import dataclasses
import difflib
import json
import os
import random
import shutil
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from kdkit import checkpoint as ckpt
from kdkit.config import DistillConfig, load_config, save_yaml
from kdkit.errors import KdkitError, shown, unknown
from kdkit.rundir import check_run_dir, claim_run_dir

METRICS = ("accuracy", "balanced_accuracy")
# Keys that may differ between the workers of one study (paths, devices, logging) and between reruns.
BOOKKEEPING = ("out", "resume", "progress", "device", "data_dir", "download", "log_every", "checkpoint_every", "report",
               "workers")
HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 120  # a killed worker's trial is failed (and rerun) after GRACE_SECONDS
POLL_SECONDS = 2.0  # how often a worker with no free trial looks again
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


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


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on `path` between processes of one machine (one trains the teacher, the
    others wait, then load it). Without fcntl (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def shown_url(url: str) -> str:
    """The storage URL without its password, for messages and tune.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- an unparsable URL is shown as given (it is reported anyway)
        return url


def open_storage(url: str):
    """optuna's RDBStorage with a lock timeout (SQLite) or a connect timeout (PostgreSQL) and a
    heartbeat; a few quick retries, because workers that start together race to create its tables."""
    if "://" not in url:
        raise KdkitError(f"--storage expects a database URL, got '{url}'; e.g. sqlite:///runs/tune/study.db "
                         "or postgresql://user:password@host:5432/kdkit")
    connect = {"timeout": 60} if url.startswith("sqlite") else {"connect_timeout": 10} if url.startswith("postgres") else {}
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (optuna marks the heartbeat experimental)
                return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect},
                                                  heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
        except Exception as e:  # noqa: BLE001 -- sqlalchemy's and the drivers' errors: reported below in one line
            error = e
            if not any(race in str(e) for race in ("already exists", "duplicate key", "locked")):
                break  # (only another worker creating the same tables is worth a retry)
            time.sleep(0.2 + random.random())
    why = " ".join(str(error).split("\n")[0].split())[:200] or type(error).__name__
    driver = "; install its driver, e.g. pip install 'psycopg[binary]' for postgresql+psycopg://" if isinstance(error, ImportError) else ""
    raise KdkitError(f"cannot open study storage '{shown_url(url)}' ({why}); check the URL and that the database "
                     f"server is running and reachable{driver}")


def fingerprint(values: dict) -> dict:
    """The settings every worker of a study must share: the config's values but BOOKKEEPING."""
    return {k: v for k, v in values.items() if k not in BOOKKEEPING}


def first_difference(old: dict, new: dict) -> str:
    """'epochs: 2 -> 3' for the first key whose value differs, '' when none does."""
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
    return ""


def open_study(storage, name: str, cfg: DistillConfig, trials: int, metric: str, resume: bool, sampler=None, pruner=None):
    """Create the study, or join it when another worker (or an earlier run) made it. Joining needs
    the same settings and --trials; --resume sets a new --trials for everyone."""
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    attrs, mine = study.user_attrs, {"kdkit_config": fingerprint(dataclasses.asdict(cfg)), "kdkit_metric": metric}
    if "kdkit_config" not in attrs:  # new (a worker that joins before the creator wrote them writes the same)
        for key, value in (mine | {"kdkit_trials": trials}).items():
            study.set_user_attr(key, value)
        return study
    diff = first_difference(attrs["kdkit_config"], mine["kdkit_config"])
    if diff or attrs.get("kdkit_metric") != metric:
        diff = diff or f"metric: {attrs.get('kdkit_metric')!r} -> {metric!r}"
        raise KdkitError(f"study '{name}' was started with other settings ({diff}); use the same settings to join it, "
                         "or another --study-name")
    if attrs["kdkit_trials"] != trials:
        if not resume:
            raise KdkitError(f"study '{name}' was started with --trials {attrs['kdkit_trials']}; use --trials "
                             f"{attrs['kdkit_trials']} to join it, or --resume --trials {trials} to continue it to {trials}")
        study.set_user_attr("kdkit_trials", trials)
    return study


@dataclasses.dataclass
class Context:
    """What every trial of one worker shares: the config, the data, the teacher, the search."""

    cfg: DistillConfig
    data: object
    teacher: object
    teacher_info: dict
    space: dict
    metric: str
    out: Path
    sampler_seed: int | None = None  # kdkit's own sampler: reseeded per trial (see run_worker)
    source: object = None  # what trials distil from: the teacher, or its output cache (teacher_cache)

    @property
    def seed(self) -> int:
        return self.cfg.seeds[0]


class _Surplus(Exception):
    """This trial would make one more than --trials: another worker took the last one meanwhile."""


def counts(study) -> tuple[int, int]:
    """(finished, still running) trials; failed and surplus trials count as neither, and a queued
    (WAITING) trial is a free place: the next trial started takes its parameters."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in DONE for t in trials)
    running = sum(t.state == TrialState.RUNNING and not t.user_attrs.get("surplus") for t in trials)
    return done, running


def is_surplus(study, trial, target: int) -> bool:
    """Trial numbers are handed out one at a time by the storage (it locks the study), so the
    trials before this one are a fixed list: if `target` of them are finished or running, this one
    is one too many. No two workers can both see a free place for the same last trial."""
    before = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
    taken = sum(t.state in DONE or (t.state == TrialState.RUNNING and not t.user_attrs.get("surplus")) for t in before)
    return taken >= target


def objective(trial, study, ctx: Context) -> float:
    """One distillation with the trial's hyper-parameters; the validation score of its best weights."""
    from kdkit.recipes import distillation
    from kdkit.train import fit
    from kdkit.weights import model_meta

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    if is_surplus(study, trial, study.user_attrs["kdkit_trials"]):
        trial.set_user_attr("surplus", True)
        raise _Surplus()
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
                     meta=model_meta(cfg.student, ctx.data),
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


def recover_killed(study):
    """Trials this machine's workers were running when they were killed (their process is gone):
    failed now, not after the heartbeat's grace period, and their parameters queued again with
    their run directory, so the next trial continues the killed fit from its checkpoint. With
    kdkit's sampler (reseeded per trial) a study killed anywhere ends as it would have uninterrupted."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or pid is None or _alive(pid) or t.user_attrs.get("surplus"):
            continue
        study.tell(t.number, state=TrialState.FAIL)
        if "run_dir" in t.user_attrs:
            study.enqueue_trial(t.params, user_attrs={"continues": t.user_attrs["run_dir"]}, skip_if_exists=False)


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # an earlier process had the number this one has now
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def say_trial(study, trial):
    """One line per trial this worker ran (an optuna callback)."""
    if trial.user_attrs.get("surplus"):
        return
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    seconds = trial.user_attrs.get("seconds", 0.0)
    if trial.state == TrialState.COMPLETE:
        what = f"val {study.user_attrs['kdkit_metric']} {trial.value:.4f}"
    elif trial.state == TrialState.PRUNED:
        steps = sorted(trial.intermediate_values)
        what = trial.user_attrs.get("diverged") or f"pruned after epoch {steps[-1] if steps else 0}"
    else:
        what = trial.state.name.lower()
    print(f"trial {trial.number}: {what} ({params}) {seconds:.1f} s", flush=True)


def run_worker(study, ctx: Context, deadline: float | None = None):
    """Run trials until the study has --trials finished ones (counting every worker's), then wait
    for the others' running trials. A place whose worker died (no heartbeat for GRACE_SECONDS) is
    failed and run again here. No trial starts after `deadline` (time.monotonic())."""
    recover_killed(study)
    while True:
        done, running = counts(study)
        if done >= study.user_attrs["kdkit_trials"] or (deadline and time.monotonic() > deadline):
            return
        if done + running < study.user_attrs["kdkit_trials"]:
            if ctx.sampler_seed is not None:  # trial k's draws depend on (seed, k) only, not on restarts
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    study.sampler = optuna.samplers.TPESampler(constant_liar=True, seed=ctx.sampler_seed * 100_003 + done)
            study.optimize(lambda trial: objective(trial, study, ctx), n_trials=1, catch=(_Surplus,),
                           callbacks=[say_trial], gc_after_trial=True)
        else:
            time.sleep(POLL_SECONDS)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (optuna marks fail_stale_trials experimental)
                optuna.storages.fail_stale_trials(study)


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
    from kdkit.report import plots

    path = out / "param_importance.png"
    if record["importance"]:
        ckpt.atomic_write(path, plots.param_importance(record["importance"]))
    else:
        path.unlink(missing_ok=True)


def evaluate_best(ctx: Context, record: dict) -> dict:
    """Test metrics of the best trial's weights (copied to RUN/student/seedS, where reports look) and
    of the teacher: the usual summary (recipes.summarise_run), with the search's result under 'tune'."""
    from kdkit.recipes import summarise_run, test_both
    from kdkit.teachers.specs import teacher_metrics
    from kdkit.train import select_device
    from kdkit.weights import build_model

    best, seed = record["best"], ctx.seed
    cfg = dataclasses.replace(ctx.cfg, **best["params"], seed=seed, seeds=[seed], baseline=False)
    device = select_device(cfg.device)
    student_dir = ctx.out / "student" / f"seed{seed}"
    shutil.rmtree(student_dir, ignore_errors=True)
    shutil.copytree(best["run_dir"], student_dir, ignore=shutil.ignore_patterns("checkpoints"))
    teacher_row, teacher_logits = teacher_metrics(ctx.teacher, ctx.data, device)
    student = build_model(cfg.student, ctx.data, seed)
    metrics = test_both(student, student_dir, ctx.data, device, teacher_logits, cfg.posthoc_tau)
    fit_info = json.loads((student_dir / "fit.json").read_text())
    rows = {"teacher": [teacher_row], "scratch": [], "student": [dict(metrics, seed=seed, last_val_accuracy=fit_info["last_val_accuracy"])]}
    fits = {"teacher": [ctx.teacher_info.get("fit", {})], "scratch": [], "student": [fit_info]}
    # the same summary and report as `kdkit distill` (the report adds a tuning section)
    tuned = {"tune": {k: v for k, v in record.items() if k != "trials"}}
    return summarise_run(cfg, ctx.data, ctx.teacher, ctx.teacher_info, rows, fits, ctx.out, device, tuned)


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
    if cfg.generations != 1 or cfg.max_steps:
        key = "generations" if cfg.generations != 1 else "max_steps"
        raise KdkitError(f"kdkit tune does not take {key}={getattr(cfg, key)}; leave it at its default "
                         f"({DistillConfig.generations if key == 'generations' else 0})")


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
    run_worker(study, ctx, deadline)
    return finish(study, storage, ctx)
