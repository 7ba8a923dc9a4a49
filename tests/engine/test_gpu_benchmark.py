"""``benchmarks/gpu.py`` runs end to end at its tiny size on CPU (the same code as on a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_tiny_run_on_cpu_checks_and_times_every_scheme(tmp_path):
    out = tmp_path / "gpu"
    done = _run("--device", "cpu", "--tiny", "--multiples", "4,8", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu.json", "gpu.md"]  # no temp file left
    report = json.loads((out / "gpu.json").read_text())
    assert report["complete"] and report["shape"] == "tiny"

    rows = {r["variant"]: r for r in report["check"]["rows"]}
    assert set(rows) == {"stock", "lampe", "lampe-floor", "selfextend", "dca", "string", "rerope"}
    floor = max(rows["stock"]["prefill_error"], rows["stock"]["decode_error"])  # what bf16 costs
    for variant, r in rows.items():
        # The fused bf16 engine is as close to the fp32 dense path as bf16 stock is to fp32
        # stock, far below what a wrong region would cost (the scheme moves the logits by > 1).
        assert r["prefill_error"] <= 2 * floor and r["decode_error"] <= 2 * floor, variant
        if variant != "stock":
            assert r["scheme_vs_stock"] > 10 * floor and r["kernels"] == "aten"

    runs = report["runs"]
    assert [(r["length"], r["variant"]) for r in runs] == [
        (L, v) for L in (256, 512) for v in ("stock", "lampe", "selfextend", "dca", "string", "rerope")
    ]
    for r in runs:
        assert r["prefill_s"] > 0 and r["decode_step_s"] > 0 and r["peak_bytes"] is None
        assert r["kernels"] == ("sdpa" if r["variant"] == "stock" else "aten")
        assert r["prefill_ratio"] > 0 and r["decode_ratio"] > 0
    assert all(r["prefill_ratio"] == 1.0 for r in runs if r["variant"] == "stock")
    table = (out / "gpu.md").read_text()
    assert "| 512 | rerope | aten |" in table and "lampe-floor" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line_and_writes_nothing(tmp_path):
    done = _run("--out", str(tmp_path / "gpu"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no CUDA device" in done.stderr
    assert not (tmp_path / "gpu").exists()
