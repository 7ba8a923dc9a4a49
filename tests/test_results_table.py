"""``scripts/results_table.py``: the README's tables from ``lampe-eval --json`` files."""

from __future__ import annotations

import json

from script_support import load_script


def _table(tmp_path, name, results):
    module = load_script("results_table")
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"model": "m", "results": results}))
    return module.table([str(path)]).splitlines()


def test_perplexity_marks_the_best_of_each_length(tmp_path):
    rows = [
        {"method": "vanilla", "length": 512, "ppl": 30.0},
        {"method": "lampe", "length": 512, "ppl": 20.0},
        {"method": "vanilla", "length": 1024, "ppl": 10.0},
        {"method": "lampe", "length": 1024, "ppl": 21.5},
    ]
    lines = _table(tmp_path, "ppl", rows)
    assert lines[0] == "| method | L = 512 | L = 1,024 |"
    assert lines[2:] == ["| vanilla | 30.00 | **10.00** |", "| lampe | **20.00** | 21.50 |"]


def test_passkey_counts_and_ruler_scores(tmp_path):
    # A row of an earlier version (counts only): 1/2 and its Wilson interval [9.5 %, 90.5 %].
    passkey = [{"method": "lampe", "length": 512, "accuracy": 0.5, "correct": 1, "trials": 2}]
    assert _table(tmp_path, "passkey", passkey)[2] == "| lampe | 1/2 [9 %, 91 %] |"
    ruler = [{"task": "vt", "method": "dca", "length": 512, "accuracy": 0.6, "samples": 4}]
    assert _table(tmp_path, "ruler", ruler)[2] == "| vt / dca | 60 % (4) |"


def test_rates_with_per_prompt_scores(tmp_path):
    scores = [1.0] * 3 + [0.0] * 5
    rate = {"accuracy": 3 / 8, "scores": scores, "ci": [0.1368, 0.6943]}
    passkey = [{"method": "yarn", "length": 512, "correct": 3, "trials": 8, **rate}]
    assert _table(tmp_path, "passkey", passkey)[2] == "| yarn | 3/8 [14 %, 69 %] |"
    niah = {"task": "niah_single", "method": "dca", "length": 512, "samples": 8, **rate}
    vt = {"task": "vt", "method": "dca", "length": 512, "samples": 2, "accuracy": 0.5, "scores": [0.6, 0.4]}
    lines = _table(tmp_path, "ruler", [niah, vt])
    assert lines[2:] == ["| niah_single / dca | 3/8 [14 %, 69 %] |", "| vt / dca | 50 % (2) |"]


def test_every_results_file_in_the_repository_still_reads(tmp_path):
    from pathlib import Path

    module = load_script("results_table")
    root = Path(__file__).resolve().parents[1] / "results"
    for kind in ("ppl", "passkey", "ruler"):
        paths = sorted(str(p) for p in root.rglob(f"{kind}_*.json"))
        assert paths, kind
        for path in paths:
            lines = module.table([path]).splitlines()
            assert lines[0].startswith("| method | L = ") and len(lines) > 2
            if kind == "passkey":
                assert all(" [" in line and " %]" in line for line in lines[2:])


def test_perplexity_with_intervals_is_bold_only_when_separated(tmp_path):
    rows = [
        {"method": "vanilla", "length": 512, "ppl": 30.0, "ratio": 1.0, "ci": [1.0, 1.0]},
        {"method": "yarn", "length": 512, "ppl": 21.0, "ratio": 0.7, "ci": [0.66, 0.74]},
        {"method": "lampe", "length": 512, "ppl": 20.0, "ratio": 0.6667, "ci": [0.62, 0.7]},
        {"method": "vanilla", "length": 1024, "ppl": 40.0, "ratio": 1.0, "ci": [1.0, 1.0]},
        {"method": "yarn", "length": 1024, "ppl": 30.0, "ratio": 0.75, "ci": [0.72, 0.78]},
        {"method": "lampe", "length": 1024, "ppl": 20.0, "ratio": 0.5, "ci": [0.45, 0.55]},
    ]
    lines = _table(tmp_path, "ppl", rows)
    assert lines[2:] == [
        "| vanilla | 30.00 (1.000 [1.000, 1.000]) | 40.00 (1.000 [1.000, 1.000]) |",
        "| yarn | 21.00 (0.700 [0.660, 0.740]) | 30.00 (0.750 [0.720, 0.780]) |",
        # At 512 lampe's interval overlaps yarn's: lowest, but not shown as the best.
        "| lampe | 20.00 (0.667 [0.620, 0.700]) | **20.00** (0.500 [0.450, 0.550]) |",
    ]
