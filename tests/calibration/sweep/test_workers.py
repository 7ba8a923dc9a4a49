"""Several workers on one sweep (lampe_calib/_sweep.py): exactly one finished trial per point,
dead workers' trials re-run, and a PostgreSQL study shared by 3 ``lampe-calibrate`` processes
that gives the one-worker profile."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
from calib_support import SAMPLE, tiny_llama
from char_tokenizer import char_tokenizer
from pg_server import postgres_server, server_binaries
from sweep_checks import assert_each_point_once, sweep_census

import lampe_calib.calibration.sweep._run as sweep_module
from lampe_calib.calibration import load_profile
from lampe_calib.calibration.sweep import SweepPoint, SweepSpec, open_storage, run_sweep
from lampe_calib.calibration.sweep._db import ERROR, MACHINE, WORKER, this_machine
from lampe_calib.calibration.sweep._store import trial_point
from lampe_calib.cli import calibrate_main
from lampe_calib.evaluation import load_books

SPEC = SweepSpec(lengths=(64, 96, 128), mappings=(16, 24, 48), heads=(4,), tails=(2,))


@pytest.fixture(scope="module")
def books():
    return load_books("pg19", char_tokenizer(), max_length=128, samples=2, seed=0, online=False)


def test_three_workers_in_threads_take_each_point_once(tmp_path, books, monkeypatch):
    """Three workers race on one SQLite file (threads: each its own model and storage)."""
    original, calls = sweep_module.evaluate_perplexity, []

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.05)  # long enough for the workers to overlap
        return original(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "evaluate_perplexity", slow)
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    models = [tiny_llama(vocab_size=len(char_tokenizer())) for _ in range(3)]
    errors = []

    def work(model):
        try:
            run_sweep(model, books, SPEC, url, "tiny", poll_interval=0.2)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    census = sweep_census(url, "tiny")
    assert_each_point_once(census, SPEC, "tiny")
    # 3 vanilla + 9 grid points, all remapped (m < L): 12 evaluations, each run exactly once.
    assert len(calls) == len(census["evaluated"]) == 12


def _dead_workers_trial(storage, study, point: SweepPoint, where: str) -> int:
    """A running trial of ``point`` as a worker that died leaves it: popped from the queue, and
    (``mid-trial``) with its parameters and a last heartbeat, or (``before its first heartbeat``)
    with neither, as by a worker killed between Optuna's pop and its heartbeat thread's first beat."""
    study.enqueue_trial(point.params())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ask() with a heartbeat storage: Optuna suggests optimize()
        trial = study.ask()
    if where == "mid-trial":
        storage.record_heartbeat(trial._trial_id)
        SweepSpec(lengths=(point.length,), mappings=(point.mapping,), heads=(4,), tails=(2,)).grid_point(
            trial
        )
        trial.set_user_attr("worker", "elsewhere:12345")
    return trial.number


@pytest.mark.parametrize("where", ["mid-trial", "before its first heartbeat"])
def test_a_dead_workers_trial_is_rerun(tmp_path, books, where):
    """A dead worker's trial is failed once its heartbeat is older than the grace period (by
    Optuna's ``fail_stale_trials``), or once it has been seen running with neither parameters nor
    a worker for as long, and re-queued with its point; the sweep then has every point once."""
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    spec = SweepSpec(lengths=(64,), mappings=(24,), heads=(4,), tails=(2,))
    study = optuna.create_study(study_name="tiny", storage=storage)
    point = SweepPoint(64, 24, 4, 2)
    number = _dead_workers_trial(storage, study, point, where)

    started = time.monotonic()
    result = run_sweep(tiny_llama(vocab_size=len(char_tokenizer())), books, spec, storage, "tiny")
    waited = time.monotonic() - started
    census = sweep_census(url, "tiny")
    assert_each_point_once(census, spec, "tiny")
    assert len(result.measurements) == 2 and not result.missing
    (failed,) = census["failed"]["tiny"]
    assert failed.number == number
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
    assert [t.state for t in retried] == [optuna.trial.TrialState.COMPLETE]
    assert retried[0].system_attrs["fixed_params"] == point.params()
    assert 2 <= waited < 30  # the grace period, not more
    if where == "mid-trial":
        assert "error" not in failed.user_attrs  # failed by Optuna's heartbeat check
        assert retried[0].user_attrs["worker"] == f"{socket.gethostname()}:{os.getpid()}"
    else:
        assert failed.user_attrs["error"] == "its worker stopped before its first heartbeat"


def test_a_dead_local_workers_trial_is_failed_between_two_trials(tmp_path, books, monkeypatch):
    """A worker of this machine that dies while another is inside ``optimize`` has its trial
    failed as gone after the other's current trial, before Optuna's next trial start would find
    its heartbeat stale and fail it without a reason."""
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    worker = f"{socket.gethostname()}:{int(gone.stdout)}"
    original, calls, planted = sweep_module.evaluate_perplexity, [], []

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the grid study's first trial (the vanilla study has one point)
            study_id = storage.get_study_id_from_name("tiny")
            trial_id = storage.create_new_trial(study_id)  # running, as a dead worker leaves it
            storage.set_trial_system_attr(trial_id, "fixed_params", SweepPoint(64, 20, 4, 2).params())
            storage.set_trial_user_attr(trial_id, MACHINE, this_machine())
            storage.set_trial_user_attr(trial_id, WORKER, worker)
            storage.record_heartbeat(trial_id)
            planted.append(trial_id)
            time.sleep(2.5)  # its heartbeat goes stale before this trial ends
        return original(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "evaluate_perplexity", evaluate)
    spec = SweepSpec(lengths=(64,), mappings=(16, 24, 48), heads=(4,), tails=(2,))
    run_sweep(tiny_llama(vocab_size=len(char_tokenizer())), books, spec, storage, "tiny")
    failed = storage.get_trial(planted[0])
    assert failed.state == optuna.trial.TrialState.FAIL
    assert failed.user_attrs.get(ERROR) == f"its worker {worker} on this machine is gone"


CALIBRATE = [
    "--model",
    "reference",
    "--data",
    str(SAMPLE),
    "--lengths",
    "512,1024,1536",
    "--mappings",
    "112,144,176,208",
    "--samples",
    "1",
    "--bootstrap",
    "0",
]


def _lampe_calibrate() -> str:
    return str(Path(sys.executable).with_name("lampe-calibrate"))


def _running_evaluation(url: str, pid: int) -> bool:
    """Whether worker ``pid`` runs a trial (its objective has started, so it evaluates a point)."""
    storage = open_storage(url, heartbeat_interval=None)
    worker = f"{socket.gethostname()}:{pid}"
    for summary in storage.get_all_studies():
        study_id = storage.get_study_id_from_name(summary.study_name)
        for t in storage.get_all_trials(study_id, states=(optuna.trial.TrialState.RUNNING,)):
            if t.user_attrs.get("worker") == worker:
                return True
    return False


@pytest.fixture(scope="module")
def postgres_url():
    """An empty database on a PostgreSQL server started for these tests (tests/pg_server.py)."""
    bindir = server_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    with postgres_server(bindir) as url:
        yield url


@pytest.mark.slow
def test_three_postgres_workers_give_the_one_worker_profile(postgres_url, tmp_path, capsys):
    # One worker, SQLite: the reference profile.
    assert calibrate_main([*CALIBRATE, "--out", str(tmp_path / "one")]) == 0
    one = load_profile(tmp_path / "one" / "reference.json")
    assert one.status == "fitted"
    capsys.readouterr()

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(3)]
    argv = [*CALIBRATE, "--storage", postgres_url, "--heartbeat", "2"]

    def start(i: int) -> subprocess.Popen:
        cmd = [_lampe_calibrate(), *argv, "--out", str(tmp_path / f"w{i}")]
        return subprocess.Popen(cmd, stdout=logs[i], stderr=subprocess.STDOUT, env=env)

    workers = [start(i) for i in range(3)]
    # Kill worker 0 in the middle of an evaluation: another worker must re-run its trial.
    deadline = time.monotonic() + 240
    while not _running_evaluation(postgres_url, workers[0].pid):
        assert workers[0].poll() is None and time.monotonic() < deadline, "worker 0 never evaluated"
        time.sleep(0.2)
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait()
    codes = [w.wait(timeout=600) for w in workers[1:]]
    for f in logs:
        f.close()
    assert codes == [0, 0], [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in (1, 2)]
    census = sweep_census(postgres_url, "reference")
    spec = SweepSpec(lengths=(512, 1024, 1536), mappings=(112, 144, 176, 208), heads=(32,), tails=(16,))
    assert_each_point_once(census, spec, "reference")
    assert len(census["workers"]) >= 2  # the work was shared
    ((name, killed),) = [(n, t) for n, trials in census["failed"].items() for t in trials]  # worker 0's
    # Failed at once by a worker of the same machine that saw its process gone, not after the heartbeat.
    assert (
        killed.user_attrs["error"]
        == f"its worker {socket.gethostname()}:{workers[0].pid} on this machine is gone"
    )
    assert killed.user_attrs["worker"] == f"{socket.gethostname()}:{workers[0].pid}"
    storage = open_storage(postgres_url, heartbeat_interval=None)
    trials = storage.get_all_trials(storage.get_study_id_from_name(name))
    # Re-run once (assert_each_point_once): by its retry, or by the trial a worker that planned
    # between the fail and the retry enqueued (then no retry is added: ``_db._RetryUnlessLive``).
    again = [t for t in trials if t.number != killed.number and trial_point(t) == trial_point(killed)]
    assert [t.state for t in again] == [optuna.trial.TrialState.COMPLETE]
    assert again[0].user_attrs["worker"] in {f"{socket.gethostname()}:{w.pid}" for w in workers[1:]}
    three = [load_profile(tmp_path / f"w{i}" / "reference.json") for i in (1, 2)]
    for profile in three:
        for fit, reference in zip(
            [profile.sigmoid, *profile.sigmoid["alternatives"]],
            [one.sigmoid, *one.sigmoid["alternatives"]],
            strict=True,
        ):  # the fixed-c fit (the profile's) and the free-c one
            for name in ("a", "b", "c"):
                assert fit[name] == pytest.approx(reference[name], rel=1e-6), name
        assert profile.sigmoid["missing"] == []
    print(
        "one worker a, b, c:",
        [one.sigmoid[k] for k in "abc"],
        "three workers:",
        [three[0].sigmoid[k] for k in "abc"],
    )


def test_the_recorded_command_hides_the_storage_password():
    from lampe_calib.cli._calibrate import _without_passwords

    assert _without_passwords(["--storage", "postgresql://u:pw@db/x", "--out", "o"]) == [
        "--storage",
        "postgresql://u:***@db/x",
        "--out",
        "o",
    ]
    assert _without_passwords(["--storage=postgresql://u:pw@db/x"]) == ["--storage=postgresql://u:***@db/x"]
