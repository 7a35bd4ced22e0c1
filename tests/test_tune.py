"""`kdkit tune`: the search space per method, a tiny study in process (pruning, resume, the final
test evaluation and report), two worker processes sharing one SQLite study, two sharing a study on a
real PostgreSQL server on loopback, and the bad inputs of docs/errors.md.

The PostgreSQL test uses the server named by $KDKIT_TEST_POSTGRES (a SQLAlchemy URL) when set;
otherwise it starts a throwaway one with the PostgreSQL binaries (`.ci/run` installs Debian's
`postgresql`): initdb into a temporary folder, pg_ctl on a free loopback port, as the `postgres`
user when run as root. Without binaries, or when the server cannot start, it skips and says why.
"""
import dataclasses
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from conftest import need_tool

from kdkit.config import DistillConfig, TrainConfig, resolve, save_yaml
from kdkit.errors import KdkitError
from kdkit.tune import search_space, tune
from kdkit.tune_study import open_storage, open_study

KDKIT = [sys.executable, "-m", "kdkit"]
TINY = ["--dataset", "digits", "--student", "cnn-tiny", "--method", "kd", "--epochs", "1", "--no-report",
        "--set", "progress=false", "--set", "batch_size=64"]


def tiny_cfg(out, **extra) -> DistillConfig:
    values = dict(dataset="digits", student="cnn-tiny", method="kd", epochs=2, batch_size=64, progress=False,
                  report=False, out=str(out))
    return resolve(DistillConfig, None, values | extra)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny teacher trained once (`kdkit train` in process), shared by the studies below."""
    from kdkit.recipes import run_train

    out = tmp_path_factory.mktemp("teacher")
    run_train(resolve(TrainConfig, None, dict(dataset="digits", model="cnn-tiny", epochs=1, batch_size=64,
                                              progress=False, out=str(out))))
    return str(out)


def kdkit_worker(*args) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(KDKIT + ["tune", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(workers) -> list[str]:
    outputs = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    return outputs


def check_exactly(record: dict, n: int):
    """n finished trials numbered 0..n-1: none lost, none twice, none over."""
    numbers = [t["number"] for t in record["trials"]]
    assert sorted(numbers) == list(range(n)), numbers
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in record["trials"]), record["trials"]
    assert record["finished"] == n


# ---------------------------------------------------------------- the search space


def test_search_space_holds_only_what_the_method_reads():
    kd = search_space(tiny_cfg("x", method="kd"))
    assert {"temperature", "alpha", "lr", "weight_decay"} == set(kd)
    assert kd["temperature"].low == 1 and kd["temperature"].high == 8 and kd["temperature"].log
    assert kd["lr"].low == pytest.approx(0.05 / 3) and kd["lr"].high == pytest.approx(0.15)
    at = search_space(tiny_cfg("x", method="at", feature_weight=1000.0))
    assert "feature_weight" in at and "temperature" not in at and "alpha" not in at
    assert (at["feature_weight"].low, at["feature_weight"].high) == pytest.approx((100, 10000))
    assert search_space(tiny_cfg("x", method="vector"))["vector_dim"].choices == (64, 128, 256)
    assert {"dkd_beta", "temperature"} <= set(search_space(tiny_cfg("x", method="dkd")))
    assert {"dist_beta", "dist_gamma"} <= set(search_space(tiny_cfg("x", method="dist")))
    assert "crd_dim" in search_space(tiny_cfg("x", method="crd", feature_weight=0.8))
    assert "temperature" not in search_space(tiny_cfg("x", method="fitnet", feature_weight=100.0))  # one stage: no KD
    fixed = search_space(tiny_cfg("x", method="kd"), fixed=["temperature", "lr"])  # given with --set: not searched
    assert set(fixed) == {"alpha", "weight_decay"}


# ---------------------------------------------------------------- a study in process


def test_study_evaluates_the_best_on_test_once_and_resumes(tmp_path, teacher):
    cfg = tiny_cfg(tmp_path / "t", teacher=teacher, report=True)
    summary = tune(cfg, trials=2, fixed=["weight_decay"])
    record = json.loads((tmp_path / "t" / "tune.json").read_text())
    check_exactly(record, 2)
    for trial in record["trials"]:  # every epoch's validation score went to the pruner
        assert sorted(trial["intermediate"]) == ["1", "2"] and trial["value"] in trial["intermediate"].values()
        assert set(trial["params"]) == {"temperature", "alpha", "lr"}
        assert not (Path(trial["run_dir"]) / "checkpoints").exists()
    assert set(summary["rows"]) == {"teacher", "student"}
    assert summary["tune"]["best"]["number"] == max(record["trials"], key=lambda t: t["value"])["number"]
    assert summary["config"]["temperature"] == pytest.approx(summary["tune"]["best"]["params"]["temperature"])
    assert summary["rows"]["student"]["metrics"]["accuracy"]["mean"] > 0.3
    assert record["importance"] and (tmp_path / "t" / "param_importance.png").stat().st_size > 1000
    assert "Hyper-parameter search" in (tmp_path / "t" / "report.html").read_text()

    with pytest.raises(KdkitError, match=r"was started with --trials 2; use --trials 2 to join it, or --resume --trials 3"):
        tune(cfg, trials=3, fixed=["weight_decay"])
    tune(dataclasses.replace(cfg, report=False), trials=3, resume=True, fixed=["weight_decay"])
    check_exactly(json.loads((tmp_path / "t" / "tune.json").read_text()), 3)


class PruneAfterTheFirst(optuna.pruners.BasePruner):
    """Prunes every trial but the first at its first report."""

    def prune(self, study, trial) -> bool:
        return trial.number > 0


def test_pruning_stops_trials_early_and_diverged_trials_count_as_pruned(tmp_path, teacher):
    cfg = tiny_cfg(tmp_path / "p", teacher=teacher, epochs=3)
    tune(cfg, trials=3, pruner=PruneAfterTheFirst())
    record = json.loads((tmp_path / "p" / "tune.json").read_text())
    check_exactly(record, 3)
    states = {t["number"]: (t["state"], list(t["intermediate"])) for t in record["trials"]}
    assert states == {0: ("COMPLETE", ["1", "2", "3"]), 1: ("PRUNED", ["1"]), 2: ("PRUNED", ["1"])}
    assert record["best"]["number"] == 0

    result = tune(tiny_cfg(tmp_path / "nan", teacher=teacher, lr=1e30), trials=1)  # every step diverges
    (trial,) = result["tune"]["trials"]
    assert trial["state"] == "PRUNED" and "became NaN/inf" in trial["diverged"]
    assert "no trial completed" in result["note"] and "rows" not in result


# ---------------------------------------------------------------- workers sharing a study


def test_a_trial_beyond_the_target_is_surplus():
    """The rule that keeps racing workers at exactly --trials: a trial is one too many when the
    target number of trials before it (by number) are finished or running; failed ones free a place."""
    from optuna.trial import TrialState

    from kdkit.tune_workers import is_surplus

    study = optuna.create_study(direction="maximize")
    first, second, third = study.ask(), study.ask(), study.ask()
    study.tell(first, 0.5)
    assert is_surplus(study, third, 2) and not is_surplus(study, second, 2) and not is_surplus(study, third, 3)
    study.tell(second, state=TrialState.FAIL)  # e.g. its worker died: its place is free again
    assert not is_surplus(study, third, 2)


def test_two_workers_share_one_sqlite_study(tmp_path):
    out = tmp_path / "shared"
    args = [*TINY, "--teacher", "cnn-tiny", "--trials", 4, "--out", out]
    stdouts = finish([kdkit_worker(*args) for _ in range(2)])
    assert sum("teacher: trained" in s for s in stdouts) == 1  # the other waited on the lock, then loaded it
    record = json.loads((out / "tune.json").read_text())
    check_exactly(record, 4)
    ran = [int(line.split()[1].rstrip(":")) for s in stdouts for line in s.splitlines() if line.startswith("trial ")]
    assert sorted(ran) == [0, 1, 2, 3]  # each trial ran once, in one of the two workers
    assert all("best trial" in s and "student" in s for s in stdouts)  # both print the table


def _postgres_binaries() -> Path | None:
    found = shutil.which("initdb")
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True) + ([str(Path(found).parent)] if found else []):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on loopback for this module: $KDKIT_TEST_POSTGRES, or a throwaway one."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (pip install -e '.[test]')")
    if os.environ.get("KDKIT_TEST_POSTGRES"):
        yield os.environ["KDKIT_TEST_POSTGRES"]
        return
    binaries = _postgres_binaries()
    if binaries is None:
        need_tool(True, "no PostgreSQL server binaries (initdb, pg_ctl) found; .ci/run installs Debian's postgresql")
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None or not shutil.which("runuser"):
            need_tool(True, "running as root without a 'postgres' user or runuser to start PostgreSQL as")
        as_user = ["runuser", "-u", user, "--"]
    root = Path(tempfile.mkdtemp(prefix="kdkit-pg-"))
    if as_user:
        shutil.chown(root, as_user[2])
    data, port = root / "data", _free_port()
    init = subprocess.run(as_user + [str(binaries / "initdb"), "-D", str(data), "-U", "kdkit", "--auth=trust", "-N", "-E", "UTF8"],
                          capture_output=True, text=True, timeout=120)
    if init.returncode:
        shutil.rmtree(root, ignore_errors=True)
        need_tool(True, f"initdb failed: {(init.stderr.strip().splitlines() or ['?'])[-1]}")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = subprocess.run(as_user + [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                                      "-o", options, "start"], capture_output=True, text=True, timeout=120)
    try:
        if start.returncode:
            need_tool(True, f"PostgreSQL did not start: {(start.stderr.strip().splitlines() or ['see ' + str(root / 'log')])[-1]}")
        yield f"postgresql+psycopg://kdkit@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_two_workers_share_one_postgresql_study(tmp_path, teacher, postgres_url):
    """Two 'machines' (their own run directories) join one study on the server by name."""
    common = [*TINY, "--teacher", teacher, "--trials", 4, "--storage", postgres_url, "--study-name", "kd-digits"]
    stdouts = finish([kdkit_worker(*common, "--out", tmp_path / f"machine{i}") for i in (1, 2)])
    records = [json.loads((tmp_path / f"machine{i}" / "tune.json").read_text()) for i in (1, 2)]
    for record in records:
        check_exactly(record, 4)
        assert record["storage"].startswith("postgresql") and record["study"] == "kd-digits"
    dirs = {Path(t["run_dir"]).parent.parent.name for t in records[0]["trials"]}
    ran = sorted(int(line.split()[1].rstrip(":")) for s in stdouts for line in s.splitlines() if line.startswith("trial "))
    assert ran == [0, 1, 2, 3] and dirs <= {"machine1", "machine2"}


# ---------------------------------------------------------------- bad input (docs/errors.md)


def test_bad_arguments_are_one_line_errors(tmp_path, teacher):
    cfg = tiny_cfg(tmp_path / "e", teacher=teacher)
    cases = [(dict(trials=0), r"--trials must be at least 1, got 0; e.g. --trials 20"),
             (dict(trials=2, metric="acc"), r"unknown metric 'acc'; did you mean 'accuracy'\?"),
             (dict(trials=2, timeout=0), r"--timeout must be a positive number of seconds"),
             (dict(trials=2, storage="study.db"), r"--storage expects a database URL, got 'study.db'; e.g. sqlite:///"),
             (dict(trials=2, storage=f"sqlite:///{tmp_path}/no/such/folder/s.db"),
              r"cannot open study storage 'sqlite:///.*/s.db' \(.*unable to open database file.*\); check the URL"),
             (dict(trials=2, storage="postgresql+psycopg://kdkit:secret@127.0.0.1:1/kdkit"),
              r"cannot open study storage 'postgresql\+psycopg://kdkit:\*\*\*@127.0.0.1:1/kdkit' \(.*\); check the URL and that")]
    for kwargs, pattern in cases:
        with pytest.raises(KdkitError, match=pattern):
            tune(cfg, **kwargs)
    with pytest.raises(KdkitError, match=r"kdkit tune runs each trial with one seed, got seeds \[0, 1\]; give one"):
        tune(dataclasses.replace(cfg, seeds=[0, 1]), trials=2)
    with pytest.raises(KdkitError, match=r"kdkit tune does not take generations=2; leave it at its default \(1\)"):
        tune(dataclasses.replace(cfg, generations=2), trials=2)
    assert not (tmp_path / "e" / "teacher").exists()  # nothing was trained
    save_yaml(dataclasses.replace(cfg, epochs=5), tmp_path / "e" / "config.yaml")  # another tune run's folder
    with pytest.raises(KdkitError, match=r"--out '.*e' holds a tune run with other settings \(epochs: 5 -> 2\); use the same"):
        tune(cfg, trials=2)


def test_out_holding_another_tools_config_yaml(tmp_path):
    """The error names the file, and the fix is another folder (not editing the other tool's file)."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.yaml").write_text("project: other-tool\n")
    with pytest.raises(KdkitError) as error:
        tune(tiny_cfg(tmp_path / "x", teacher="cnn-tiny"), trials=1)
    assert str(error.value) == (f"--out '{tmp_path / 'x'}' holds files kdkit did not write (e.g. 'config.yaml'); choose "
                                "a new or empty folder, or add --overwrite to write into it anyway (files of the same "
                                "name are replaced)")
    assert not (tmp_path / "x" / "teacher").exists()


def test_a_study_joins_only_with_the_same_settings(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    cfg = tiny_cfg(tmp_path / "a")
    open_study(storage, "s", cfg, 4, "accuracy", resume=False)
    open_study(storage, "s", dataclasses.replace(cfg, out="elsewhere", device="cpu"), 4, "accuracy", resume=False)  # joins
    with pytest.raises(KdkitError, match=r"study 's' was started with other settings \(epochs: 2 -> 3\); use the same"):
        open_study(storage, "s", dataclasses.replace(cfg, epochs=3), 4, "accuracy", resume=False)
    with pytest.raises(KdkitError, match=r"other settings \(metric: 'accuracy' -> 'balanced_accuracy'\)"):
        open_study(storage, "s", cfg, 4, "balanced_accuracy", resume=False)
    assert open_study(storage, "s", cfg, 6, "accuracy", resume=True).user_attrs["kdkit_trials"] == 6


def test_cli_error_is_one_line(tmp_path):
    r = subprocess.run(KDKIT + ["tune", *TINY, "--trials", "0", "--out", str(tmp_path / "x")], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 2 and r.stderr.strip() == "error: --trials must be at least 1, got 0; e.g. --trials 20", r.stderr


def test_config_as_positional_argument(tmp_path):
    """`kdkit tune CONFIG --trials N`, as the issue writes it: the file is read like --config."""
    from kdkit.cli import app
    from typer.testing import CliRunner

    (tmp_path / "c.yaml").write_text("dataset: nope-dataset\n")
    result = CliRunner().invoke(app, ["tune", str(tmp_path / "c.yaml"), "--trials", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "unknown dataset 'nope-dataset'" in str(result.exception)


def test_trials_distil_from_one_teacher_cache(tmp_path, teacher):
    cfg = tiny_cfg(tmp_path / "c", teacher=teacher, teacher_cache=True, cache_views=2, augment="flip")
    tune(cfg, trials=2, fixed=["weight_decay"])
    check_exactly(json.loads((tmp_path / "c" / "tune.json").read_text()), 2)
    caches = list((tmp_path / "c" / "teacher_cache").iterdir())
    assert len(caches) == 1 and (caches[0] / "meta.json").is_file()  # labelled once, read by every trial
