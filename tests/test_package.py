"""The package's root: a lazy public API that loads no heavy library on import."""

from __future__ import annotations

import subprocess
import sys

import lampe_calib

HEAVY = ("torch", "transformers", "optuna", "scipy", "matplotlib", "datasets")


def test_import_loads_no_heavy_library():
    code = "import sys, lampe_calib, lampe_calib.cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert not loaded & set(HEAVY)


def test_every_public_name_resolves():
    for name in lampe_calib.__all__:
        assert getattr(lampe_calib, name) is not None, name
    assert "apply_lampe" in dir(lampe_calib)
    try:
        lampe_calib.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("an unknown name resolved")
