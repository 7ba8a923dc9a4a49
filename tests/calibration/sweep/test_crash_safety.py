"""Crash safety: ``lampe-calibrate`` killed with SIGKILL at random moments, then run again with the
same command, finishes without losing or repeating a finished trial; profiles and figures are
written atomically (a reader never sees a partial file)."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from calib_support import tiny_model_dir
from sweep_checks import assert_each_point_once, sweep_census

import lampe_calib.calibration.sweep._run as sweep_module
from lampe_calib.calibration import load_profile
from lampe_calib.calibration.sweep import SweepSpec
from lampe_calib.cli import calibrate_main

LENGTHS, MAPPINGS = (64, 96, 128, 160, 192, 256), (10, 20, 40, 60)
SPEC = SweepSpec(lengths=LENGTHS, mappings=MAPPINGS, heads=(4,), tails=(2,))
PNG_END = b"IEND\xaeB`\x82"


def _complete_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0


def _finished(url: str) -> dict[tuple[str, int], tuple[float, str]]:
    """Every complete trial of the sweep: (study, number) -> (value, its per-book NLLs)."""
    storage = optuna.storages.RDBStorage(url)
    out = {}
    for summary in storage.get_all_studies():
        study_id = storage.get_study_id_from_name(summary.study_name)
        for t in storage.get_all_trials(study_id, states=(optuna.trial.TrialState.COMPLETE,)):
            out[summary.study_name, t.number] = (t.value, json.dumps(t.user_attrs["nll"]))
    return out


def _check_outputs(out: Path, name: str) -> None:
    """A profile or figure that exists is whole (written atomically)."""
    if (out / f"{name}.json").exists():
        load_profile(out / f"{name}.json")
    if (out / f"{name}.png").exists():
        assert (out / f"{name}.png").read_bytes().endswith(PNG_END)


@pytest.mark.slow
def test_five_sigkills_then_resume_lose_and_repeat_nothing(tmp_path, monkeypatch, capsys):
    model_dir = tiny_model_dir(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["--model", str(model_dir), "--out", str(out), "--samples", "2", "--bootstrap", "0"]
    argv += ["--lengths", ",".join(map(str, LENGTHS)), "--mappings", ",".join(map(str, MAPPINGS))]
    argv += ["--heartbeat", "2"]  # a killed run's trial goes stale in 4 s (default: 120 s)
    argv += ["--head", "4", "--tail", "2"]
    db, url = out / "tiny.db", f"sqlite:///{out / 'tiny.db'}"
    command = [str(Path(sys.executable).with_name("lampe-calibrate")), *argv]
    rng = random.Random(7)
    seen: dict = {}
    kills = 0
    for _ in range(5):
        # Let this run finish a few trials, then kill it at a random moment of the next ones.
        target = _complete_count(db) + rng.randint(1, 4)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while _complete_count(db) < target and process.poll() is None:
            assert time.monotonic() < deadline, "lampe-calibrate finished no trial"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        now = _finished(url)
        lost = {k for k in seen if now.get(k) != seen[k]}
        assert not lost, f"finished trials lost or changed by a kill: {sorted(lost)}"
        seen = now
        _check_outputs(out, "tiny")
    assert kills >= 4  # (a run may have finished before its kill)

    # The same command again, in this process: it runs only what is left.
    original, evaluated = sweep_module._Runner.evaluate, []

    def counting(self, point):
        evaluated.append(point)
        return original(self, point)

    monkeypatch.setattr(sweep_module._Runner, "evaluate", counting)
    assert calibrate_main(argv) == 0
    capsys.readouterr()
    final = _finished(url)
    assert {k: final[k] for k in seen} == seen  # 0 lost
    census = sweep_census(url, "tiny")
    assert_each_point_once(census, SPEC, "tiny")  # 0 repeated
    total = len(LENGTHS) * (len(MAPPINGS) + 1)
    assert len(final) == total and len(evaluated) == total - len(seen)
    failed = sum(len(v) for v in census["failed"].values())
    print(
        f"{kills} SIGKILLs; {len(seen)} of {total} trials finished before the resume, {failed} killed "
        f"mid-trial; the resume evaluated {len(evaluated)}; lost 0, repeated 0"
    )
    _check_outputs(out, "tiny")
    assert load_profile(out / "tiny.json").sigmoid["missing"] == []


WRITER = """
import sys
from lampe_calib.calibration import plot_profile
from lampe_calib.calibration import load_profile, save_profile
profile, out = load_profile("llama3-8b"), sys.argv[1]
while True:
    save_profile(profile, out + "/p.json")
    plot_profile(profile, out + "/p.png", dpi=30)
    print("written", flush=True)
"""


@pytest.mark.slow
def test_profiles_and_figures_are_whole_for_readers_and_after_sigkill(tmp_path):
    """A process rewriting a profile and its figure in a loop: a reader meanwhile, and anyone
    after it is killed at a random moment, finds whole files (old or new), never partial ones."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "written"  # both files exist from here on
        reads, end = 0, time.monotonic() + random.Random(3).uniform(1.0, 2.0)
        while time.monotonic() < end:
            assert load_profile(tmp_path / "p.json").alias == "llama3-8b"
            assert (tmp_path / "p.png").read_bytes().endswith(PNG_END)
            reads += 1
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert reads > 10
    assert load_profile(tmp_path / "p.json").alias == "llama3-8b"
    assert (tmp_path / "p.png").read_bytes().endswith(PNG_END)
