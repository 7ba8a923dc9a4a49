"""``best_fixed_mapping``: the one m tuned for every length, against a dense scan."""

from __future__ import annotations

import math

import numpy as np
import pytest
from script_support import load_script

from lampe_calib.calibration import best_fixed_mapping, mapping_excess


def test_docstring_example():
    fixed = best_fixed_mapping({100: ([20, 40, 60], [2, 1, 2]), 200: ([20, 40, 60], [2, 1.5, 1])})
    assert fixed.mapping == 40
    assert fixed.excess[100] == pytest.approx(0.0)
    assert fixed.excess[200] == pytest.approx(math.expm1(0.5))


def test_matches_a_dense_scan_of_the_interpolated_curves():
    rng = np.random.default_rng(0)
    for _ in range(20):
        points = {}
        for length in (900, 1200, 1600):
            xs = np.sort(rng.choice(np.arange(100, length), size=5, replace=False)).astype(float)
            xs = np.append(xs, length)  # the unmapped point
            points[length] = (xs.tolist(), rng.uniform(2.0, 3.0, size=6).tolist())
        fixed = best_fixed_mapping(points)
        lo = max(min(x) for x, _ in points.values())
        knots = [m for x, _ in points.values() for m in x if m >= lo]
        scan = np.union1d(np.linspace(lo, 3000, 20001), knots)  # the exact optimum is a knot
        total = sum(np.interp(np.minimum(scan, n), x, y) - min(y) for n, (x, y) in points.items())
        dense_best = float(total.min())
        chosen = sum(np.interp(min(fixed.mapping, n), x, y) - min(y) for n, (x, y) in points.items())
        assert chosen == pytest.approx(dense_best, abs=1e-9)
        assert chosen <= dense_best + 1e-9


def test_past_l_a_curve_is_its_unmapped_point():
    # At L = 500 every m >= 500 is the unmapped model, which is best there; at L = 1000 m = 800 is.
    points = {500: ([100, 300, 500], [3.0, 2.5, 2.0]), 1000: ([100, 300, 800, 1000], [3.0, 2.8, 2.2, 2.6])}
    fixed = best_fixed_mapping(points)
    assert fixed.mapping == 800
    assert fixed.excess == {500: pytest.approx(0.0), 1000: pytest.approx(0.0)}


def test_a_curve_without_its_unmapped_point_bounds_the_range():
    # L = 1000 was measured only up to m = 300: m = 800 is unknown there, so 300 is chosen.
    points = {500: ([100, 300, 500], [3.0, 2.5, 2.0]), 1000: ([100, 300], [3.0, 2.8])}
    assert best_fixed_mapping(points).mapping == 300


def test_mapping_excess_reads_each_curve_at_its_own_m():
    points = {100: ([20, 40, 60], [2.0, 1.0, 2.0]), 200: ([20, 40, 200], [2.0, 1.5, 1.0])}
    excess = mapping_excess(points, lambda length: length / 2)  # m = 50 at L = 100, 100 at 200
    assert excess[100] == pytest.approx(math.expm1(0.5))
    assert excess[200] == pytest.approx(math.expm1(1.5 - 0.5 * 60 / 160 - 1.0))
    past = mapping_excess(points, lambda length: 40 if length == 100 else 10**6)  # past L: unmapped
    assert past == {100: pytest.approx(0.0), 200: pytest.approx(0.0)}
    with pytest.raises(ValueError, match="outside its measured range"):
        mapping_excess(points, lambda length: 70)  # past the L = 100 curve's last point (no m = L)
    with pytest.raises(ValueError, match="outside its measured range"):
        mapping_excess(points, lambda length: 10)


def test_errors():
    with pytest.raises(ValueError, match="at least one curve"):
        best_fixed_mapping({})
    with pytest.raises(ValueError, match="inside every curve's measured range"):
        best_fixed_mapping({500: ([100, 200], [2.0, 1.0]), 1000: ([300, 400], [2.0, 1.0])})


def test_profile_curve_points_put_the_unmapped_model_at_l():
    from lampe_calib.calibration import load_profile

    profile = load_profile("smollm2-135m")
    points = profile.curve_points()
    assert sorted(points) == [c["length"] for c in profile.curves]
    for curve in profile.curves:
        xs, ys = points[curve["length"]]
        assert xs == [*map(float, curve["mappings"]), float(curve["length"])]
        assert ys == pytest.approx([math.log(p) for p in [*curve["ppl"], curve["unmapped_ppl"]]])


def test_script_writes_a_profile_whose_m_is_the_best_single_m(tmp_path, capsys):
    from lampe_calib.calibration import load_profile

    script = load_script("fixed_mapping")
    shipped = load_profile("smollm2-135m")
    expected = best_fixed_mapping(shipped.curve_points()).mapping
    out = tmp_path / "fixed.json"
    assert script.main(["smollm2-135m", "--out", str(out)]) == 0
    assert f": {expected:g}" in capsys.readouterr().out
    fixed = load_profile(out)
    for length in (4096, 12288, 65536):
        assert fixed.mapping_length(length) == pytest.approx(expected, rel=1e-12)
    assert fixed.lampe == shipped.lampe and fixed.curves == shipped.curves
    assert script.main(["no-such-profile"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # one line
    missing = tmp_path / "no-such-dir" / "fixed.json"
    assert script.main(["smollm2-135m", "--out", str(missing)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --out {missing}: its directory does not exist"
    ]
    assert not missing.parent.exists()


def test_script_takes_a_degenerate_profile(tmp_path, capsys):
    """One calibration length gives no fit, but its curve still gives the best single m."""
    import json

    from lampe_calib.calibration import load_profile

    script = load_script("fixed_mapping")
    data = load_profile("smollm2-135m").to_dict()
    data["curves"] = [c for c in data["curves"] if c["length"] == 12288]
    data["sigmoid"] = {"status": "degenerate", "message": "one length", "missing": []}
    source, out = tmp_path / "one.json", tmp_path / "fixed.json"
    source.write_text(json.dumps(data))
    assert script.main([str(source), "--out", str(out)]) == 0
    best = min(zip(data["curves"][0]["ppl"], data["curves"][0]["mappings"], strict=True))[1]
    assert f": {best:g}" in capsys.readouterr().out
    assert load_profile(out).mapping_length(12288) == pytest.approx(best, rel=1e-12)
