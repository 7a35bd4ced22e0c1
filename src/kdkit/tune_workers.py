"""The workers of one `kdkit tune` study (docs/tune.md): what a worker's trials share (Context), and
how the workers together finish exactly --trials trials: each takes a free place or waits, a trial
that would be one too many stops at once, and a killed worker's trial is failed and continued from
its checkpoint."""
import dataclasses
import os
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from kdkit.config import DistillConfig

POLL_SECONDS = 2.0  # how often a worker with no free trial looks again
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


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


def claim_place(study, trial):
    """Sign the trial with this worker (host and pid, for recover_killed) and stop it when it would
    make one more than --trials (is_surplus): it is marked surplus and counts as nothing."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    if is_surplus(study, trial, study.user_attrs["kdkit_trials"]):
        trial.set_user_attr("surplus", True)
        raise _Surplus()


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


def run_worker(study, ctx: Context, objective, deadline: float | None = None):
    """Run trials until the study has --trials finished ones (counting every worker's), then wait
    for the others' running trials. A place whose worker died (no heartbeat for tune_study.GRACE_SECONDS) is
    failed and run again here. No trial starts after `deadline` (time.monotonic()). One trial is
    `objective(trial, study, ctx)`, which starts with claim_place."""
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
