"""What ``lampe-calibrate`` adds around LaMPE's fit: where a GP search begins after a previous
fit, and the report of the excess fits beside the argmin fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["report_excess", "start_from_previous_fit"]


def start_from_previous_fit(console: Any, spec: Any, path: Path) -> Any:
    """gp search: the lengths a previous profile at ``path`` did not measure begin their search
    at its m(L) (``SweepSpec.starts``); the spec unchanged without a usable fitted profile."""
    import dataclasses

    from ..calibration._profiles import load_profile

    if spec.search != "gp" or not path.is_file():
        return spec
    try:
        previous = load_profile(path)
    except ValueError:
        return spec
    if previous.status == "degenerate" or previous.to_dict().get("method", "lampe") != "lampe":
        return spec
    measured = {int(curve["length"]) for curve in previous.curves}
    starts = tuple((n, previous.mapping_length(n)) for n in spec.lengths if n not in measured)
    for length, m in starts:
        console.print(f"L = {length}: the search starts at m(L) = {m:.0f} of the previous fit ({path})")
    return dataclasses.replace(spec, starts=starts) if starts else spec


def report_excess(console: Any, cal: Any) -> None:
    """The excess fits, and each objective's mean leave-one-length-out PPL excess."""
    for mode, fit in cal.excess_fits.items():
        chosen = " (profile)" if mode == cal.c_mode and cal.objective == "excess" else ""
        r2 = "n/a" if fit.r2 is None else f"{round(fit.r2, 3) + 0.0:.3f}"
        console.print(
            f"excess fit, {mode} c{chosen}: a = {fit.a:.4g}, b = {fit.b:.4g}, c = {fit.c:.4g}, R² = {r2}"
        )
    for objective, by_mode in cal.held_out.items():
        shown = ", ".join(f"{mode} c {100 * value:.3g} %" for mode, value in by_mode.items())
        if shown:
            console.print(f"held-out PPL excess ({objective} fit, leave one length out): {shown}")
