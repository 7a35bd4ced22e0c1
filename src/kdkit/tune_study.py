"""The one Optuna study that `kdkit tune` workers share (docs/tune.md): the storage they meet in,
who may join the study (the same settings and --trials), and a lock between the workers of one
machine."""
import contextlib
import dataclasses
import random
import time
import warnings
from pathlib import Path

import optuna

from kdkit.config import DistillConfig
from kdkit.errors import KdkitError

# Keys that may differ between the workers of one study (paths, devices, logging) and between reruns.
BOOKKEEPING = ("out", "resume", "progress", "device", "data_dir", "download", "log_every", "checkpoint_every", "report",
               "workers")
HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 120  # a killed worker's trial is failed (and rerun) after GRACE_SECONDS


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
        # kdkit_config last: a worker that sees it also sees the others (written one at a time)
        for key, value in (("kdkit_trials", trials), ("kdkit_metric", metric), ("kdkit_config", mine["kdkit_config"])):
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
