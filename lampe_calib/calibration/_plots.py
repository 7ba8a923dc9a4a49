"""The calibration figure: V-curves of PPL against m per length, and m*(L) with the fitted sigmoid.

Drawn from a ``Profile`` alone (its ``curves`` and ``sigmoid``), so any saved profile can be
re-plotted. Uses matplotlib's Agg canvas on a ``Figure`` object (no pyplot global state) and
writes the PNG atomically.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np

from ..methods import sigmoid_mapping_length
from ._profiles import Profile, write_atomic

__all__ = ["plot_profile", "render_profile"]


def _draw_curves(ax: Any, profile: Profile, colors: list[Any]) -> None:
    top = max((max(c["mappings"], default=0) for c in profile.curves), default=profile.window)
    for curve, color in zip(profile.curves, colors, strict=True):
        length = curve["length"]
        xs, ys = list(curve["mappings"]), list(curve["ppl"])
        # The no-remap point sits at m = L; draw it only when it falls inside the swept range.
        if curve.get("unmapped_ppl") is not None and length <= 1.05 * top:
            xs.append(length)
            ys.append(curve["unmapped_ppl"])
        if xs:
            ax.plot(xs, ys, "o-", color=color, ms=3.5, lw=1.2, label=f"L = {length}")
        if curve.get("vanilla_ppl") is not None:
            ax.axhline(curve["vanilla_ppl"], color=color, ls=":", lw=0.9)
        m_star = curve.get("m_star")
        if m_star is not None and curve.get("remapped"):
            best = min(curve["ppl"])
            ax.plot([m_star], [best], marker="*", color=color, ms=11, mec="black", mew=0.5, zorder=5)
    ax.axvline(profile.window, color="grey", lw=0.8, ls="--")
    ax.text(profile.window, 1.0, " W", color="grey", va="top", transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_xlabel("mapping length m")
    ax.set_ylabel("perplexity (dotted: vanilla)")
    ax.set_title("PPL against m per input length (★ m*)")
    if profile.curves:
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.text(
            0.5,
            0.5,
            f"no measured curves ({profile.status} profile)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=9,
            color="grey",
        )
    ax.grid(alpha=0.3)


def _draw_fit(ax: Any, profile: Profile, colors: list[Any]) -> None:
    sigmoid = profile.sigmoid
    for curve, color in zip(profile.curves, colors, strict=True):
        if curve.get("m_star") is None:
            continue
        if curve.get("remapped"):
            ax.plot([curve["length"]], [curve["m_star"]], "o", color=color, ms=7, mec="black", mew=0.5)
        else:
            ax.plot([curve["length"]], [curve["length"]], "x", color=color, ms=7)
    lengths = [c["length"] for c in profile.curves] or [profile.window, 8 * profile.window]
    grid = np.geomspace(min(lengths) / 1.5, max(lengths) * 1.5, 200)
    fits = []
    if sigmoid["status"] != "degenerate":
        fits.append((sigmoid, "-"))
        fits.extend((alt, "--") for alt in sigmoid.get("alternatives", []))
    for fit, style in fits:
        ys = [sigmoid_mapping_length(x, fit["a"], fit["b"], fit["c"]) for x in grid]
        r2 = fit.get("r2")
        label = f"{fit['c_mode']} c: a={fit['a']:.3g}, b={fit['b']:.3g}, c={fit['c']:.4g}"
        label += f", R²={round(r2, 3) + 0.0:.3f}" if r2 is not None else ""  # no "-0.000"
        ax.plot(grid, ys, style, color="black" if style == "-" else "tab:red", lw=1.3, label=label)
    if sigmoid["status"] == "degenerate":
        ax.text(
            0.5,
            0.5,
            "no fit:\n" + _wrap(sigmoid["message"]),
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
            color="tab:red",
        )
    ax.axhline(profile.window, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("input length L (× = no remap is best)")
    ax.set_ylabel("m*(L)")
    ax.set_title("m*(L) and m(L) = c / (1 + exp(-(aL + b)))")
    if fits:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _wrap(text: str, width: int = 60) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def render_profile(profile: Profile, dpi: int = 120) -> bytes:
    """The calibration figure of ``profile`` as PNG bytes."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    cmap = colormaps["viridis"]
    n = len(profile.curves)
    colors = [cmap(0.9 * i / max(1, n - 1)) for i in range(n)]
    _draw_curves(left, profile, colors)
    _draw_fit(right, profile, colors)
    status = profile.sigmoid["status"]
    figure.suptitle(f"LaMPE calibration of {profile.alias} (W = {profile.window}, {status})", fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plot_profile(profile: Profile, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Write the calibration figure of ``profile`` to ``path`` (PNG), atomically."""
    if math.isnan(float(dpi)) or dpi <= 0:
        raise ValueError(f"dpi must be > 0, got {dpi!r}")
    write_atomic(path, render_profile(profile, dpi))
