"""What ``lampe-calibrate`` adds around LaMPE's fit: where a GP search begins after a previous
fit, and the closing report (m*(L) per length, the argmin fits and the excess fits)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..methods._names import LAMPE

__all__ = ["report", "report_excess", "start_from_previous_fit"]


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
    if previous.method != LAMPE or previous.status == "degenerate":
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


def _ratio(value: float) -> str:
    """Example: ``_ratio(1.0)`` -> ``"×1.00"``, ``_ratio(123.4)`` -> ``"×123"``."""
    return f"×{value:.2f}" if value < 10 else f"×{value:.0f}"


def report(console: Any, run: Any) -> None:
    """The closing table of m*(L), the budget, and every fit made."""
    from rich.table import Table

    cal = run.calibration
    table = Table(title=f"m*(L) (s1 = {cal.head}, s2 = {cal.tail}, factor {cal.attention_factor:g})")
    for column in ("L", "m*", "PPL at m*", "vanilla PPL", "gain"):
        table.add_column(column, justify="right")
    for o in cal.optima:
        # At the edge of the swept range the V's other arm was not seen: m* is only a bound.
        edge = {"upper": f"≥ {o.mapping:.0f} (extend --mappings up)", "lower": f"≤ {o.mapping:.0f}"}
        star = (edge.get(o.bound) or f"{o.mapping:.0f}") if o.remapped else "no remap"
        vanilla = "—" if o.vanilla_ppl is None else f"{o.vanilla_ppl:.4g}"
        gain = (
            "—"
            if o.vanilla_ppl is None or not math.isfinite(o.vanilla_ppl)
            else _ratio(o.vanilla_ppl / o.ppl)
        )
        table.add_row(str(o.length), star, f"{o.ppl:.4g}", vanilla, gain)
    console.print(table)
    # "Same budget" across methods: evaluated points per length (the unmapped model included).
    points = {len(c.mappings) + (c.unmapped is not None) for c in cal.curves}
    if points:
        shown = "-".join(str(n) for n in sorted({min(points), max(points)}))
        console.print(f"budget: {shown} evaluated points per length (m values, the unmapped model included)")
    if cal.status != "fitted":
        console.print(f"[bold red]no fit[/]: {cal.message}; the profile records this and cannot be applied")
        return
    if cal.message:
        console.print(f"[yellow]note[/]: {cal.message}")
    _report_fits(console, cal)
    report_excess(console, cal)


def _report_fits(console: Any, cal: Any) -> None:
    """The argmin fits in both c modes, with their bootstrap intervals."""
    for mode, fit in cal.fits.items():
        ci = cal.ci.get(mode)
        interval = (
            ""
            if not ci
            else "; {:.0%} CI a [{:.3g}, {:.3g}], b [{:.3g}, {:.3g}], c [{:.4g}, {:.4g}]".format(
                cal.level, *ci["a"], *ci["b"], *ci["c"]
            )
        )
        chosen = " (profile)" if mode == cal.c_mode and cal.objective == "argmin" else ""
        r2 = "n/a" if fit.r2 is None else f"{round(fit.r2, 3) + 0.0:.3f}"  # no "-0.000"
        console.print(
            f"fit, {mode} c{chosen}: a = {fit.a:.4g}, b = {fit.b:.4g}, c = {fit.c:.4g}, R² = {r2}{interval}"
        )
