"""A profile's sections as typed values, each read and validated once from its JSON
(``from_dict``), naming the first bad field. Where a section mirrors a config it is checked by
that config: ``lampe`` with the sigmoid by ``LampeConfig``, ``sigmoid``'s a, b, c by
``SigmoidMapping``, sizes by the configs' ``check_integer``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..methods import BASES, MODES, STOCK, LampeConfig, SigmoidMapping
from ._profile_fields import as_config_errors, fail, get, integer, known_keys, list_of, mapping, number, text

__all__ = [
    "STATUSES",
    "KnobSection",
    "LampeSection",
    "RescaledBase",
    "SigmoidSection",
    "check_curves",
    "check_model",
    "check_provenance",
    "check_rope",
]

STATUSES = ("fitted", "imported", "degenerate")
_RESCALED = tuple(base for base in BASES if base != STOCK)


@dataclass(frozen=True)
class RescaledBase:
    """``lampe.base``: the rescaled rotary a profile was calibrated on (absent: the stock one)."""

    type: str
    factor: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RescaledBase:
        known_keys("lampe.base", data)
        kind = text("lampe.base.type", get(data, "type", "lampe.base"), choices=_RESCALED)
        return cls(kind, integer("lampe.base.factor", get(data, "factor", "lampe.base"), 2))  # type: ignore[arg-type]


@dataclass(frozen=True)
class LampeSection:
    """``lampe``: how LaMPE runs (``LampeConfig``'s head, tail, mode and attention factor; its
    m(L) is the ``sigmoid`` section) and on which rotary."""

    head: int
    tail: int
    mode: str
    attention_factor: float
    base: RescaledBase | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LampeSection:
        known_keys("lampe", data)
        head = integer("lampe.head", get(data, "head", "lampe"), 0)
        tail = integer("lampe.tail", get(data, "tail", "lampe"), 0)
        mode = text("lampe.mode", get(data, "mode", "lampe"), choices=MODES)
        base = mapping("lampe.base", data.get("base"), optional=True)
        factor = number("lampe.attention_factor", get(data, "attention_factor", "lampe"), positive=True)
        return cls(head, tail, mode, factor, None if base is None else RescaledBase.from_dict(base))  # type: ignore[arg-type]

    def config(self, sigmoid: SigmoidMapping) -> LampeConfig:
        """The ``LampeConfig`` of these settings with m(L) = ``sigmoid``."""
        with as_config_errors("lampe"):
            return LampeConfig(
                head=self.head,
                tail=self.tail,
                sigmoid=sigmoid,
                mode=self.mode,  # type: ignore[arg-type]
                attention_factor=self.attention_factor,
            )


@dataclass(frozen=True)
class SigmoidSection:
    """``sigmoid``: the status of m(L) and, unless degenerate, the ``SigmoidMapping`` with its
    c mode and the objective its fit minimized ("argmin" in profiles made before the excess fit)."""

    status: str
    message: str | None
    mapping: SigmoidMapping | None
    c_mode: str | None = None
    objective: str = "argmin"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], head_tail: int) -> SigmoidSection:
        """Raises ``ValueError`` naming the field; c must exceed ``head_tail`` (s1 + s2)."""
        known_keys("sigmoid", data)
        status = text("sigmoid.status", get(data, "status", "sigmoid"), choices=STATUSES)
        if status == "degenerate":
            return cls(status, text("sigmoid.message", get(data, "message", "sigmoid")), None)  # type: ignore[arg-type]
        a, b, c = (number(f"sigmoid.{k}", get(data, k, "sigmoid")) for k in "abc")
        with as_config_errors("sigmoid"):
            sigmoid = SigmoidMapping(a=a, b=b, c=c)  # type: ignore[arg-type]
        if sigmoid.c <= head_tail:
            raise fail("sigmoid.c", f"> lampe.head + lampe.tail = {head_tail}", c)
        c_mode = text("sigmoid.c_mode", get(data, "c_mode", "sigmoid"), choices=("fixed", "free"))
        number("sigmoid.r2", data.get("r2"), optional=True)
        objective = text(
            "sigmoid.objective", data.get("objective"), optional=True, choices=("argmin", "excess")
        )
        _check_ci(mapping("sigmoid.ci", data.get("ci"), optional=True))
        return cls(status, data.get("message"), sigmoid, c_mode, objective or "argmin")  # type: ignore[arg-type]


def _check_ci(ci: dict[str, Any] | None) -> None:
    if not ci:
        return
    known_keys("sigmoid.ci", ci)
    for name in ("a", "b", "c"):
        if name in ci:
            bounds = list_of(f"sigmoid.ci.{name}", ci[name])
            if len(bounds) != 2 or any(number(f"sigmoid.ci.{name}", v) is None for v in bounds):
                raise fail(f"sigmoid.ci.{name}", "[low, high]", ci[name])


@dataclass(frozen=True)
class KnobSection:
    """``knob`` of a non-LaMPE profile: ``name`` (the main knob), ``single`` (the best single
    value over lengths), ``points`` (evaluated points per length, the budget) and ``lengths``:
    per length, the ``values`` tried with their ``ppl``, the ``best`` value and the method's
    ``default`` (here ``best``, by length)."""

    name: str
    single: float  # (an int for an integer knob, as in the JSON)
    points: int
    best: Mapping[int, float]

    @classmethod
    def from_dict(cls, knob: Mapping[str, Any]) -> KnobSection:
        name = text("knob.name", get(knob, "name", "knob"))
        number("knob.single", get(knob, "single", "knob"))
        single = knob["single"]
        points = integer("knob.points", get(knob, "points", "knob"), 1)
        best = {}
        for i, row in enumerate(list_of("knob.lengths", get(knob, "lengths", "knob"))):
            path = f"knob.lengths[{i}]"
            row = mapping(path, row)
            length = integer(f"{path}.length", get(row, "length", path), 2)
            values = list_of(f"{path}.values", get(row, "values", path))
            ppl = list_of(f"{path}.ppl", get(row, "ppl", path))
            if len(values) != len(ppl) or not values:
                raise fail(f"{path}.ppl", f"a non-empty list as long as values ({len(values)})", ppl)
            number(f"{path}.best", get(row, "best", path))
            best[length] = row["best"]  # as written: an integer knob stays an integer
            if best[length] not in values:
                raise fail(f"{path}.best", f"one of the values tried {values}", best[length])
            number(f"{path}.default", row.get("default"), optional=True)
        return cls(name, single, points, best)  # type: ignore[arg-type]


def check_model(model: Mapping[str, Any]) -> None:
    """``model``: alias (required), source, revision, family, head size."""
    known_keys("model", model)
    text("model.alias", get(model, "alias", "model"))
    text("model.source", get(model, "source", "model"), optional=True)
    text("model.revision", model.get("revision"), optional=True)
    text("model.family", model.get("family"), optional=True)  # absent in profiles before facts
    integer("model.head_dim", model.get("head_dim"), 1, optional=True)


def check_rope(rope: Mapping[str, Any]) -> None:
    """``rope``: theta > 0, type, scaling (an object)."""
    known_keys("rope", rope)
    number("rope.theta", get(rope, "theta", "rope"), positive=True)
    text("rope.type", get(rope, "type", "rope"))
    mapping("rope.scaling", rope.get("scaling", {}))


def check_curves(curves: Sequence[Any]) -> None:
    """``curves``: per length, the mappings and their PPL (as many), books and tokens."""
    if not isinstance(curves, (list, tuple)):
        raise fail("curves", "a list", curves)
    for i, curve in enumerate(curves):
        path = f"curves[{i}]"
        curve = mapping(path, curve)
        known_keys(path, curve, "curves")
        integer(f"{path}.length", get(curve, "length", path), 2)
        mappings = list_of(f"{path}.mappings", get(curve, "mappings", path))
        ppl = list_of(f"{path}.ppl", get(curve, "ppl", path))
        if len(mappings) != len(ppl):
            raise fail(f"{path}.ppl", f"a list as long as mappings ({len(mappings)})", ppl)
        integer(f"{path}.books", get(curve, "books", path), 1)
        integer(f"{path}.tokens", get(curve, "tokens", path), 1)


def check_provenance(provenance: Mapping[str, Any]) -> None:
    """``provenance``: known keys; ``imported`` true or false."""
    known_keys("provenance", provenance)
    if not isinstance(provenance.get("imported", False), bool):
        raise fail("provenance.imported", "true or false", provenance.get("imported"))
