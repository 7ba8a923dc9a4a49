"""Signals during a sweep: SIGTERM and Ctrl-C give one line and the shell's exit code, the trial
in flight is marked failed, and a worker killed on this machine is noticed at once by the next
run (not after twice the heartbeat)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from calib_support import tiny_model_dir

from lampe_calib.cli import calibrate_main

# A worker whose evaluations take a minute: the test signals it while its first trial runs.
DRIVER = textwrap.dedent(
    """
    import pathlib, sys, time
    from lampe_calib.calibration.sweep import _run

    def slow(self, point):
        pathlib.Path(sys.argv[1]).write_text(point.describe())
        time.sleep(60)
        raise AssertionError("not signalled")

    _run._Runner.evaluate = slow
    from lampe_calib.cli import calibrate_main
    sys.exit(calibrate_main(sys.argv[2:]))
    """
)
ARGS = ["--lengths", "48,96,128", "--mappings", "10,20", "--head", "4", "--tail", "2", "--samples", "2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


def _start(tmp_path: Path, model_dir: Path) -> tuple[subprocess.Popen, Path, list[str]]:
    out, flag = tmp_path / "out", tmp_path / "in-flight"
    argv = ["--model", str(model_dir), "--out", str(out), *ARGS, "--bootstrap", "0", "--heartbeat", "60"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    worker = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(flag), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.2)
    return worker, out / f"{model_dir.name}.db", argv


def _trials(db: Path) -> list[tuple[str, str | None]]:
    """(state, error) of every trial that has a point or ran one."""
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT t.state, (SELECT value_json FROM trial_user_attributes a "
            "WHERE a.trial_id = t.trial_id AND a.key = 'error') FROM trials t ORDER BY t.trial_id"
        ).fetchall()


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, code, line", [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_signal_fails_the_trial_in_flight_and_the_next_run_starts_at_once(
    signum, code, line, tmp_path, model_dir, capsys
):
    worker, db, argv = _start(tmp_path, model_dir)
    worker.send_signal(signum)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == code, err
    lines = err.strip().splitlines()
    hint = "any trial in flight is marked failed, and the same command resumes the sweep"
    assert lines == [f"lampe-calibrate: {line}; {hint}"], err
    states = _trials(db)
    assert [s for s, _ in states].count("FAIL") == 1 and "RUNNING" not in [s for s, _ in states]
    started = time.monotonic()
    assert calibrate_main([*argv, "--no-fit"]) == 0  # the trial is run again, at once
    assert time.monotonic() - started < 60
    assert re.search(r"trials (\d+)/\1", capsys.readouterr().out)
    # 3 vanilla + 3 x 2 grid points, each complete once: the failed one was run again.
    assert [s for s, _ in _trials(db)].count("COMPLETE") == 9


@pytest.mark.slow
def test_a_worker_killed_on_this_machine_is_noticed_at_once(tmp_path, model_dir, capsys):
    worker, db, argv = _start(tmp_path, model_dir)
    worker.kill()  # SIGKILL: no handler runs, the trial stays RUNNING
    worker.communicate(timeout=60)
    assert [s for s, _ in _trials(db)].count("RUNNING") == 1
    started = time.monotonic()
    assert calibrate_main([*argv, "--no-fit"]) == 0
    assert time.monotonic() - started < 60  # not 2 x --heartbeat = 120 s
    states = _trials(db)
    assert "RUNNING" not in [s for s, _ in states]
    assert any(s == "FAIL" and "on this machine is gone" in (e or "") for s, e in states), states
    assert [s for s, _ in states].count("COMPLETE") == 9
