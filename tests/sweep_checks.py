"""What a finished sweep's storage holds, for the tests of several workers and of crashes."""

from __future__ import annotations

import json
from collections import Counter

import optuna

from lampe_calib.calibration.sweep import SweepPoint, SweepSpec, open_storage


def sweep_census(storage, base: str) -> dict:
    """Finished trials per study and per point, and how often each evaluation was evaluated."""
    storage = open_storage(storage, heartbeat_interval=None)
    census = {"complete": {}, "points": {}, "evaluated": Counter(), "workers": set(), "failed": {}}
    for summary in storage.get_all_studies():
        name = summary.study_name
        if name != base and not name.startswith(base + ":"):
            continue
        trials = storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        census["complete"][name] = len(complete)
        census["points"][name] = Counter(json.dumps(t.user_attrs["point"], sort_keys=True) for t in complete)
        census["failed"][name] = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
        for t in complete:
            if "reused_from" not in t.user_attrs:
                census["evaluated"][SweepPoint.from_dict(t.user_attrs["point"]).key()] += 1
                census["workers"].add(t.user_attrs["worker"])
    return census


def assert_each_point_once(census: dict, spec: SweepSpec, base: str) -> None:
    grid = len(spec.lengths) * len(spec.mappings)
    assert census["complete"] == {f"{base}:vanilla": len(spec.lengths), base: grid}
    for name, points in census["points"].items():
        assert all(n == 1 for n in points.values()), f"{name}: a point finished twice: {points}"
    assert all(n == 1 for n in census["evaluated"].values()), census["evaluated"]
