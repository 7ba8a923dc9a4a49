"""scripts/paired_ratio.py: the ratio of two lampe-eval files' cells, with its paired interval."""

from __future__ import annotations

import json
import math

import pytest
from script_support import load_script

paired = load_script("paired_ratio")


def _file(path, method, scale):
    blocks = [[2.0 * scale, 3.0 * scale], [2.5 * scale, 2.2 * scale], [3.1 * scale, 2.9 * scale]]
    tokens = [[1000, 1000]] * 3
    row = {"method": method, "length": 2048, "block_nll": blocks, "block_tokens": tokens}
    path.write_text(json.dumps({"results": [row]}))
    return str(path)


def test_a_uniformly_lower_nll_gives_its_ratio_and_an_interval_around_it(tmp_path):
    base = _file(tmp_path / "a.json", "selfextend", 1.0)
    tuned = _file(tmp_path / "b.json", "selfextend", 0.99)
    ((length, ratio, low, high),) = paired.compare(base, tuned, "selfextend")
    mean_nll = sum(sum(b) for b in json.load(open(base))["results"][0]["block_nll"]) / 6000
    assert length == 2048 and ratio == pytest.approx(math.exp(-0.01 * mean_nll))
    assert low <= ratio <= high < 1


def test_other_books_are_refused(tmp_path, capsys):
    base = _file(tmp_path / "a.json", "dca", 1.0)
    data = json.loads(open(base).read())
    data["results"][0]["block_tokens"] = [[999, 1000]] * 3
    (tmp_path / "b.json").write_text(json.dumps(data))
    assert paired.main([base, str(tmp_path / "b.json"), "--method", "dca"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
