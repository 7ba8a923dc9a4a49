"""benchmarks/method_logits.py compare: identical runs pass, any change or missing method fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "method_logits.py"
spec = importlib.util.spec_from_file_location("method_logits", PATH)
method_logits = importlib.util.module_from_spec(spec)
spec.loader.exec_module(method_logits)


def _save(path, logits):
    torch.save(logits, path)
    return str(path)


def test_identical_runs_pass_and_a_changed_padded_row_or_a_missing_method_fails(tmp_path):
    logits = {"vanilla": torch.randn(2, 400, 8), "lampe": torch.randn(2, 400, 8)}
    before = _save(tmp_path / "a.pt", logits)
    assert method_logits.main(["compare", before, _save(tmp_path / "b.pt", dict(logits))]) == 0
    changed = {**logits, "lampe": logits["lampe"].clone()}
    changed["lampe"][1, -1, 0] += 1e-6  # in the padded row's valid part
    assert method_logits.main(["compare", before, _save(tmp_path / "c.pt", changed)]) == 1
    padding_only = {**logits, "lampe": logits["lampe"].clone()}
    padding_only["lampe"][1, 0, 0] += 1.0  # a padded position: not compared
    assert method_logits.main(["compare", before, _save(tmp_path / "d.pt", padding_only)]) == 0
    missing = _save(tmp_path / "e.pt", {"vanilla": logits["vanilla"]})
    assert method_logits.main(["compare", before, missing]) == 1
