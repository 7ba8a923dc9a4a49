"""The engine is generic: none of its modules imports a method (LaMPE included)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import lampe_calib.engine


def test_engine_modules_import_no_method():
    names = [f"lampe_calib.engine.{m.name}" for m in pkgutil.iter_modules(lampe_calib.engine.__path__)]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "print(' '.join(m for m in sys.modules if m.startswith('lampe_calib.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    assert "lampe_calib.engine._hook" in modules and "lampe_calib.engine._session" in modules
    assert not [m for m in modules if m.startswith(("lampe_calib.methods", "lampe_calib.calibration"))]
