"""Calibration (DESIGN §3): the sweep over (L, m) (``sweep``), V-curves and their optima
(``_curves``), the sigmoid fit (``_fit``), profiles (``_profiles``), figures (``_plots``), and
``calibrate_model``, which runs them in order."""

from __future__ import annotations

from .._lazy import lazy_exports

# Public name -> the private module that defines it.
_EXPORTS = {
    "calibrate_model": "._calibrate",
    "default_spec": "._calibrate",
    "profile_name": "._calibrate",
    "Curve": "._curves",
    "Optimum": "._curves",
    "curve_optimum": "._curves",
    "curves_of": "._curves",
    "C_MODES": "._fit",
    "Calibration": "._fit",
    "SigmoidFit": "._fit",
    "calibrate": "._fit",
    "fit_sigmoid": "._fit",
    "SCHEMA_VERSION": "._profiles",
    "Profile": "._profiles",
    "load_profile": "._profiles",
    "save_profile": "._profiles",
    "shipped_profiles": "._profiles",
    "write_atomic": "._profiles",
    "plot_profile": "._plots",
    "render_profile": "._plots",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
