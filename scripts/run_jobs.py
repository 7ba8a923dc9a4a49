"""Run a list of long, resumable jobs one after another, and record what each one cost.

    python scripts/run_jobs.py results/fair/reference.jobs.json

The jobs file is JSON: ``{"jobs": [{"name": ..., "command": ...}, ...]}``; each command is a
shell command run from the repository root, and is itself resumable (``lampe-eval --json`` and
``lampe-calibrate``'s study skip the work they already hold). Beside the jobs file, ``<stem>.log.json``
records, per job, whether it finished, its exit code, and the wall-clock and CPU seconds (user +
system of the job's processes) summed over every attempt. Running the same command again skips
the jobs that finished and resumes the first one that did not; ``--only NAME`` runs one job.
A job that fails stops the run (exit 1) so that a later job never reads a half-made input.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _write_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _log_path(jobs_file: Path) -> Path:
    return jobs_file.with_name(jobs_file.name.removesuffix(".jobs.json").removesuffix(".json") + ".log.json")


def _run_one(job: dict, entry: dict) -> int:
    """Run one job, adding its wall-clock and CPU seconds to ``entry``; return its exit code."""
    before = os.times()
    start = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {job['name']}: {job['command']}", flush=True)
    code = 143  # (what a job stopped by SIGTERM or Ctrl-C is recorded with)
    # The job runs in its own process group, so that stopping the run stops the whole job
    # (the shell and what it started) and its CPU time is counted once it is reaped.
    # The shell traps SIGTERM (a no-op), so it outlives its command and reaps it: the command's
    # CPU time then reaches this process's children times also when the run is stopped.
    command = f"trap : TERM; {job['command']}"
    process = subprocess.Popen(command, shell=True, cwd=ROOT, start_new_session=True)
    try:
        code = process.wait()
    finally:  # a stopped run still records the time its job took
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a job that ignores SIGTERM
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        after = os.times()
        _account(entry, job, code, time.monotonic() - start, before, after)
    return code


def _account(
    entry: dict, job: dict, code: int, wall: float, before: os.times_result, after: os.times_result
) -> None:
    entry["wall_s"] = round(entry.get("wall_s", 0.0) + wall, 1)
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    entry["cpu_s"] = round(entry.get("cpu_s", 0.0) + cpu, 1)
    entry["attempts"] = entry.get("attempts", 0) + 1
    entry["returncode"] = code
    entry["done"] = code == 0
    entry["command"] = job["command"]


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=Path, help="the jobs file (JSON)")
    parser.add_argument("--only", help="run only the job of this name")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    jobs = json.loads(args.jobs.read_text(encoding="utf-8"))["jobs"]
    names = [job["name"] for job in jobs]
    if len(set(names)) != len(names):
        print(f"error: {args.jobs}: job names repeat", file=sys.stderr)
        return 2
    if args.only is not None and args.only not in names:
        print(f"error: no job named {args.only!r} in {args.jobs}", file=sys.stderr)
        return 2
    log_path = _log_path(args.jobs)
    log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.exists() else {}
    for job in jobs:
        if args.only and job["name"] != args.only:
            continue
        if log.get(job["name"], {}).get("done"):
            if args.only:
                print(f"{job['name']}: already done ({log_path}); delete its entry there to run it again")
            continue
        entry = log.setdefault(job["name"], {})
        try:
            code = _run_one(job, entry)
        finally:
            _write_atomically(log_path, log)
        if code != 0:
            print(f"{job['name']} exited {code}; stopping (the same command resumes)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
