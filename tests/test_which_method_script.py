"""scripts/which_method.py: tables of defaults and tuned methods with paired intervals, and a
"best" verdict only where the intervals allow it."""

from __future__ import annotations

import json
from pathlib import Path

from script_support import load_script

which = load_script("which_method")
ROOT = Path(__file__).resolve().parents[1]

TOKENS = [[1000, 1000]] * 4


def _row(method, scale, jitter=0.0):
    sign = [[1 if (b + k) % 2 else -1 for k in range(2)] for b in range(4)]
    blocks = [[(2.0 + 0.1 * b + jitter * sign[b][k]) * 1000 * scale for k in range(2)] for b in range(4)]
    return {"method": method, "length": 512, "ppl": 1.0, "block_nll": blocks, "block_tokens": TOKENS}


def _file(path, rows, profile=None):
    for row in rows:  # the PPL the table sorts by, from the blocks
        row["ppl"] = float(sum(map(sum, row["block_nll"])) / sum(map(sum, row["block_tokens"])))
    path.write_text(json.dumps({"settings": {"profile": profile}, "results": rows}))
    return str(path)


def test_a_clearly_lower_method_is_named_best_and_a_tuned_row_gets_its_own_ratio(tmp_path, capsys):
    # A real tuned profile (the reference model's SelfExtend, in the repository): G = 11 at L = 512.
    profile = ROOT / "results" / "fair" / "reference" / "profiles" / "reference-selfextend.json"
    default = _file(tmp_path / "d.json", [_row("vanilla", 1.0), _row("selfextend", 0.95)])
    tuned = _file(tmp_path / "t.json", [_row("selfextend", 0.90)], profile=str(profile))
    assert which.main([default, tuned]) == 0
    out = capsys.readouterr().out
    assert "`selfextend, tuned (group = 11)`" in out
    assert "best: `selfextend, tuned (group = 11)`" in out
    tuned_line = next(line for line in out.splitlines() if line.startswith("| `selfextend, tuned"))
    own = tuned_line.split("|")[4]  # tuned / default = exp(Σ(0.90 − 0.95)·NLL / Σ tokens) < 1
    assert float(own.split()[0]) < 1 and float(own.split("]")[0].split(", ")[1]) < 1


def test_a_tuned_lampe_row_names_its_m_and_a_profile_name_is_resolved(tmp_path, capsys):
    from lampe_calib import load_profile

    default = _file(tmp_path / "d.json", [_row("vanilla", 1.0), _row("lampe", 0.95)])
    tuned = _file(tmp_path / "t.json", [_row("lampe", 0.94)], profile="reference")  # a shipped name
    assert which.main([default, tuned]) == 0
    m = load_profile("reference").mapping_length(512)
    assert f"`lampe, tuned (m = {m:.0f})`" in capsys.readouterr().out


def test_rows_within_noise_are_not_called_best(tmp_path, capsys):
    rows = [_row("vanilla", 1.0), _row("dca", 1.0, jitter=0.05), _row("string", 1.0, jitter=-0.05)]
    default = _file(tmp_path / "d.json", rows)
    assert which.main([default]) == 0
    out = capsys.readouterr().out
    assert "best:" not in out and "not separable from" in out


def test_files_over_other_books_are_refused_in_one_line(tmp_path, capsys):
    default = _file(tmp_path / "d.json", [_row("vanilla", 1.0)])
    other = _row("dca", 0.9)
    other["block_tokens"] = [[999, 1000]] * 4
    tuned = _file(tmp_path / "t.json", [other])
    assert which.main([default, tuned]) == 2
    assert capsys.readouterr().err.count("\n") == 1
