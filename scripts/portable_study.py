"""Make a sweep storage portable: record its model by a portable id and its position facts
instead of the machine path it was run from.

Studies stored before models were recorded by their facts hold the model's path in their
``signature`` (e.g. an absolute site-packages path of a GGUF), so the same command elsewhere was
refused with ``model differ``. This rewrites, in every study of the storage, the signature
without ``model`` and a ``model`` record ``{"source", "facts"}`` taken from the profile the
sweep produced; trials are not touched, so a resume runs nothing and fits the same m(L).

    python scripts/portable_study.py lampe_calib/profiles/smollm2-135m.db \
        lampe_calib/profiles/smollm2-135m.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna

from lampe_calib.calibration._profiles import load_profile
from lampe_calib.calibration.sweep._db import open_storage
from lampe_calib.cli._outputs import sqlite_url


def make_portable(storage_path: Path, profile_path: Path) -> list[str]:
    """Rewrite the model record of every study in ``storage_path``; returns the studies changed."""
    profile = load_profile(profile_path)
    record = {"source": profile.model["source"] or profile.alias, "facts": profile.facts().to_dict()}
    storage = open_storage(sqlite_url(storage_path.resolve()), heartbeat_interval=None)
    changed = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        signature = study.user_attrs.get("signature", {})
        if "model" in signature or study.user_attrs.get("model") != record:
            study.set_user_attr("signature", {k: v for k, v in signature.items() if k != "model"})
            study.set_user_attr("model", record)
            changed.append(summary.study_name)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("storage", type=Path, help="the SQLite file of the sweep")
    parser.add_argument("profile", type=Path, help="the profile the sweep produced")
    args = parser.parse_args(argv)
    for name in make_portable(args.storage, args.profile):
        print(f"{name}: model recorded as {load_profile(args.profile).model['source']} and its facts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
