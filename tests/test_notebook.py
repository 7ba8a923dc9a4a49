"""The exploration notebook runs headless top to bottom against the shipped reference profile."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tooling: pip install 'lampe-calib[notebook]'")
nbclient = pytest.importorskip("nbclient", reason="notebook tooling: pip install 'lampe-calib[notebook]'")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_ppl_curves.ipynb"


@pytest.mark.slow
def test_notebook_executes_and_draws(monkeypatch):
    from lampe_calib.calibration._profiles import shipped_profiles

    if "reference" not in shipped_profiles():
        pytest.fail("the reference profile must ship with the package (lampe_calib/profiles/reference.json)")
    monkeypatch.setenv("LAMPE_PROFILE", "reference")
    monkeypatch.delenv("LAMPE_SWEEP_STORAGE", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # V-curves, m*(L) with the fit, PE(i, j)
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs) + "".join(
        str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "lampe" in text and "vanilla" in text  # the lampe-eval table was printed
    # Only our own output: no library warning or bar, no terminal codes in a notebook.
    for noise in ("TqdmWarning", "IProgress", "ipywidgets", "predefined maximum length", "it/s]", "\x1b["):
        assert noise not in text, noise
    assert "lampe-eval ppl" in text and "lampe L=1024: 2/2" in text  # ours kept: header, progress
