"""A calibration profile (docs/design.md §3.4): ``Profile``, its sections validated on
construction (``_profile_sections``), read and written as versioned JSON by ``_profiles``.

A profile says which model it is for (alias, source, revision, window W, RoPE), how LaMPE is
run (head, tail, mode, attention factor), the fitted ``m(L)`` with its quality, the measured
V-curves, and where it all came from. ``Profile.to_lampe_config()`` gives the ``LampeConfig``
that ``apply_lampe`` runs, so ``apply_lampe(model, load_profile("reference"))`` works. The
``sigmoid.status`` is "fitted", "imported" (values taken from another release, not
re-calibrated) or "degenerate" (no usable fit; ``message`` says why). A fitted ``sigmoid`` may
also hold ``objective`` (the fit used: "argmin" or "excess") and ``fits`` (every fit made, with
its R² and leave-one-length-out excess).

A profile of another method (``lampe-calibrate --method``, docs/design.md §6) has ``method`` and
``knob`` (per length the values tried, their PPL and the best; the best single value) instead
of LaMPE settings and a sigmoid; ``knob_values(L)`` gives what it chose for a length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._checks import is_integer
from ..methods import LampeConfig
from ..methods._names import LAMPE
from ..models._facts import ModelFacts, check_transfer, portable_source
from ._profile_fields import SCHEMA_VERSION, fail, get, integer, list_of, mapping, plain, text
from ._profile_sections import (
    STATUSES,
    KnobSection,
    LampeSection,
    SigmoidSection,
    check_curves,
    check_model,
    check_provenance,
    check_rope,
)

__all__ = ["SCHEMA_VERSION", "STATUSES", "Profile"]

_SECTIONS = ("model", "window", "rope", "lampe", "sigmoid", "curves", "provenance")


@dataclass(frozen=True)
class Profile:
    """A calibration profile; see the module docstring and docs/design.md §3.4 for the fields.

    Sections are kept as validated plain data (``model``, ``rope``, ``lampe``, ``sigmoid``,
    ``curves``, ``provenance``), so ``from_dict(p.to_dict()) == p`` and a profile diffs cleanly.

    Example:
        >>> profile = load_profile("llama3-8b")
        >>> round(profile.mapping_length(32768))
        4501
    """

    model: Mapping[str, Any]
    window: int
    rope: Mapping[str, Any]
    lampe: Mapping[str, Any]
    sigmoid: Mapping[str, Any]
    curves: tuple[Mapping[str, Any], ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    # The method the profile calibrates (docs/design.md §6) and, for one other than LaMPE, the knob it
    # chose per length (``_check_knob``); a LaMPE profile has no ``knob`` and no such fields in
    # its JSON.
    method: str = LAMPE
    knob: Mapping[str, Any] | None = None
    # The sections as typed values, read once by ``__post_init__`` (not compared: they are the
    # fields above, read).
    _lampe: LampeSection | None = field(default=None, init=False, repr=False, compare=False)
    _sigmoid: SigmoidSection | None = field(default=None, init=False, repr=False, compare=False)
    _config: LampeConfig | None = field(default=None, init=False, repr=False, compare=False)
    _knob: KnobSection | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.method != LAMPE:
            knob = KnobSection.from_dict(mapping("knob", self.knob))  # type: ignore[arg-type]
            object.__setattr__(self, "knob", MappingProxyType(plain(self.knob)))
            object.__setattr__(self, "_knob", knob)
        elif self.knob is not None:
            raise fail("knob", "absent in a LaMPE profile (its m(L) is the sigmoid)", self.knob)
        self._validate()
        # Own, read-only copies: a profile never aliases (or lets anyone edit) the caller's data.
        for name in ("model", "rope", "lampe", "sigmoid", "provenance"):
            object.__setattr__(self, name, MappingProxyType(plain(getattr(self, name))))
        object.__setattr__(self, "curves", tuple(MappingProxyType(plain(c)) for c in self.curves))

    def _validate(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise fail("schema_version", f"{SCHEMA_VERSION} (this lampe-calib's schema)", self.schema_version)
        check_model(mapping("model", self.model))  # type: ignore[arg-type]
        integer("window", self.window, 1)
        check_rope(mapping("rope", self.rope))  # type: ignore[arg-type]
        if self.method != LAMPE:  # no LaMPE settings, no sigmoid: the knob holds the result
            return
        lampe = LampeSection.from_dict(mapping("lampe", self.lampe))  # type: ignore[arg-type]
        sigmoid = SigmoidSection.from_dict(mapping("sigmoid", self.sigmoid), lampe.head + lampe.tail)  # type: ignore[arg-type]
        config = None if sigmoid.mapping is None else lampe.config(sigmoid.mapping)
        check_curves(self.curves)
        check_provenance(mapping("provenance", self.provenance))  # type: ignore[arg-type]
        object.__setattr__(self, "_lampe", lampe)
        object.__setattr__(self, "_sigmoid", sigmoid)
        object.__setattr__(self, "_config", config)

    @property
    def lampe_section(self) -> LampeSection:
        """The ``lampe`` section as a typed value (a LaMPE profile)."""
        if self._lampe is None:
            raise ValueError(f"profile '{self.alias}' calibrates method {self.method!r}, not LaMPE")
        return self._lampe

    @property
    def sigmoid_section(self) -> SigmoidSection:
        """The ``sigmoid`` section as a typed value (a LaMPE profile)."""
        if self._sigmoid is None:
            raise ValueError(f"profile '{self.alias}' calibrates method {self.method!r}, not LaMPE")
        return self._sigmoid

    @property
    def alias(self) -> str:
        return self.model["alias"]

    @property
    def status(self) -> str:
        return self.sigmoid["status"]

    def knob_values(self, length: int) -> dict[str, float]:
        """The knob value a non-LaMPE profile chose for inputs of ``length`` tokens: the best
        measured at that length, else the best single value over the calibrated lengths.

        Raises:
            ValueError: a LaMPE profile (its m(L) is ``mapping_length``).
        """
        if self._knob is None:
            raise ValueError(f"profile '{self.alias}' calibrates LaMPE: it has m(L), not knob values")
        return {self._knob.name: self._knob.best.get(int(length), self._knob.single)}

    def facts(self) -> ModelFacts:
        """The facts of the model the profile was fitted on (family and head size None in a
        profile written before they were recorded: then not compared)."""
        return ModelFacts(
            family=self.model.get("family"),
            window=self.window,
            rope_type=self.rope["type"],
            rope_theta=self.rope["theta"],
            rope_scaling=self.rope.get("scaling", {}),
            head_dim=self.model.get("head_dim"),
        )

    def check_model(self, model: Any, *, allow_transfer: bool = False) -> None:
        """Refuse ``model`` when a fact its positions depend on differs from the profile's
        (``ModelFacts``), unless ``allow_transfer``; log a transfer, and a model from another
        source whose facts are the same (a local copy, a fine-tune of the same base).

        Raises:
            ValueError: one line naming the profile's and the model's facts and what differs.
        """
        from ..models._registry import model_info  # (transformers: only when a model is checked)

        info = model_info(model)
        theirs, ours = ModelFacts.from_info(info), self.facts()
        mine = self.model.get("source") or self.alias
        source = portable_source(info) or type(model).__name__
        check_transfer(
            f"profile '{self.alias}' was fitted",
            (mine, ours),
            (source, theirs),
            allow_transfer=allow_transfer,
            same_source=self.alias in (info.alias, source) or mine == source,
            opt_in="pass allow_transfer=True (--allow-transfer) to apply it anyway",
        )

    def to_lampe_config(self) -> LampeConfig:
        """The ``LampeConfig`` with this profile's m(L), head, tail, mode and attention factor.

        Raises:
            ValueError: the profile is degenerate (holds no usable fit), or calibrates another method.
        """
        if self.method != LAMPE:
            raise ValueError(f"profile '{self.alias}' calibrates method {self.method!r}, not LaMPE")
        if self._config is None:
            raise ValueError(f"profile '{self.alias}' holds no usable m(L) fit: {self.sigmoid['message']}")
        return self._config

    def curve_points(self) -> dict[int, tuple[list[float], list[float]]]:
        """``(m, log PPL)`` of each curve, the unmapped model at m = L when it was measured
        (``Curve.points``' convention, read back from the profile's records)."""
        points = {}
        for curve in self.curves:
            xs, ys = [float(m) for m in curve["mappings"]], [math.log(p) for p in curve["ppl"]]
            if curve.get("unmapped_ppl") is not None:
                xs.append(float(curve["length"]))
                ys.append(math.log(curve["unmapped_ppl"]))
            points[int(curve["length"])] = (xs, ys)
        return points

    def mapping_length(self, length: int) -> float:
        """m for an input of ``length`` tokens (``LampeConfig.mapping_length_for``)."""
        return self.to_lampe_config().mapping_length_for(length)

    def to_dict(self) -> dict[str, Any]:
        other = {} if self.method == LAMPE else {"method": self.method, "knob": plain(self.knob)}
        return {
            **other,
            "schema_version": self.schema_version,
            "model": plain(self.model),
            "window": self.window,
            "rope": plain(self.rope),
            "lampe": plain(self.lampe),
            "sigmoid": plain(self.sigmoid),
            "curves": [plain(c) for c in self.curves],
            "provenance": plain(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        """A validated profile; ``ValueError`` names the first bad or missing field."""
        data = mapping("(top level)", data)
        version = get(data, "schema_version", "")
        if is_integer(version) and version > SCHEMA_VERSION:
            raise ValueError(
                f"profile field 'schema_version' is {version}, newer than this lampe-calib reads "
                f"({SCHEMA_VERSION}); upgrade lampe-calib"
            )
        unknown = sorted(set(data) - set(_SECTIONS) - {"schema_version", "method", "knob"})
        if unknown:
            raise ValueError(f"profile field '{unknown[0]}' is not part of schema version {SCHEMA_VERSION}")
        method = text("method", data.get("method", LAMPE))
        # A profile of another method has no LaMPE settings or sigmoid of its own.
        optional = (
            ("curves", "provenance") if method == LAMPE else ("curves", "provenance", "lampe", "sigmoid")
        )
        values = {key: get(data, key, "") for key in _SECTIONS if key not in optional}
        values.update({key: data.get(key, {}) for key in ("lampe", "sigmoid") if key in optional})
        return cls(
            method=method,
            knob=data.get("knob"),
            schema_version=version,
            curves=tuple(list_of("curves", data.get("curves", []))),
            provenance=data.get("provenance", {}),
            **values,
        )
