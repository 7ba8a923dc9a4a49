"""scripts/run_jobs.py: long jobs run in order, their cost recorded, finished ones never rerun."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from script_support import load_script

run_jobs = load_script("run_jobs")


def _jobs(tmp_path, commands):
    path = tmp_path / "x.jobs.json"
    jobs = [{"name": name, "command": command} for name, command in commands]
    path.write_text(json.dumps({"jobs": jobs}))
    return path


def test_a_failed_job_stops_the_run_and_the_same_command_resumes_at_it(tmp_path):
    marks = tmp_path / "marks"
    flag = tmp_path / "flag"
    jobs = _jobs(
        tmp_path,
        [
            ("one", f"echo one >> {marks}"),
            ("two", f"test -e {flag} && echo two >> {marks}"),
            ("three", f"echo three >> {marks}"),
        ],
    )
    assert run_jobs.main([str(jobs)]) == 1
    log = json.loads((tmp_path / "x.log.json").read_text())
    assert log["one"]["done"] and not log["two"]["done"] and "three" not in log
    assert log["one"]["wall_s"] >= 0 and log["one"]["cpu_s"] >= 0

    flag.touch()
    assert run_jobs.main([str(jobs)]) == 0
    assert marks.read_text().split() == ["one", "two", "three"]  # "one" did not run again
    log = json.loads((tmp_path / "x.log.json").read_text())
    assert log["two"]["attempts"] == 2 and all(entry["done"] for entry in log.values())
    assert not list(tmp_path.glob("*.tmp"))


def test_repeated_names_and_unknown_jobs_are_refused(tmp_path, capsys):
    assert run_jobs.main([str(_jobs(tmp_path, [("a", "true"), ("a", "true")]))]) == 2
    assert run_jobs.main([str(_jobs(tmp_path, [("a", "true")])), "--only", "b"]) == 2
    assert capsys.readouterr().err.count("\n") == 2


def test_a_stopped_run_records_the_time_of_the_job_it_stopped(tmp_path):
    pids = tmp_path / "pids"
    burn = f"{sys.executable} -c 'while True: pass'"
    jobs = _jobs(tmp_path, [("slow", f"sleep 30 & echo $! > {pids}; {burn}")])
    runner = subprocess.Popen([sys.executable, str(run_jobs.__file__), str(jobs)])
    log_path = tmp_path / "x.log.json"
    time.sleep(2.5)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=20) == 143
    entry = json.loads(log_path.read_text())["slow"]
    assert entry["attempts"] == 1 and not entry["done"] and entry["wall_s"] >= 1.0
    assert entry["cpu_s"] > 0.3  # the stopped command's CPU time is counted
    sleeper = int(pids.read_text())  # the job's own child was stopped with it
    time.sleep(0.5)
    assert not Path(f"/proc/{sleeper}").exists() or "zombie" in Path(f"/proc/{sleeper}/status").read_text()
