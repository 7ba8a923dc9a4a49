"""Calibration (docs/design.md §3): the sweep over (L, m) (``sweep``), V-curves and their optima
(``_curves``), the sigmoid fit (``_fit``), profiles (``_profiles``), figures (``_plots``), and
``calibrate_model``, which runs them in order."""

from __future__ import annotations

from .._lazy import lazy_exports

# Module -> the public names it defines.
_MODULES = {
    "._calibrate": "calibrate_model default_spec",
    "._runs": "profile_name",
    "._curves": "Curve FixedMapping Optimum best_fixed_mapping curve_optimum curves_of mapping_excess",
    "._fit": "C_MODES Calibration SigmoidFit calibrate fit_sigmoid",
    "._excess": "fit_sigmoid_excess held_out_excess",
    "._methods": "MethodCalibration calibrate_method calibrate_method_model method_spec",
    "._profiles": (
        "SCHEMA_VERSION Profile find_profile load_profile save_profile shipped_profiles "
        "shipped_profiles_dir user_profiles_dir write_atomic write_together"
    ),
    "._plots": "plot_profile render_profile",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
