"""What a calibration sweep measures: its search space (``SweepSpec``) and its points
(``SweepPoint``), with the default lengths and mapping lengths. Value types: the sweep package
(``sweep``) runs them on Optuna's studies, and re-exports them.

docs/design.md §3.2: lengths L from about W/2 to k·W, mapping lengths m from s1 + s2 + 1 up to m_max
(default 1.25·W, so the right arm of the V shows); m >= L means "no remap". A point may also
vary the head s1, the tail s2 and the attention factor.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from .._checks import check_integer, is_integer
from ..methods import BASES, MODES, STOCK, LampeConfig
from ..methods._names import LAMPE

__all__ = [
    "SEARCHES",
    "SweepPoint",
    "SweepSpec",
    "default_lengths",
    "default_mappings",
    "initial_mappings",
]

SEARCHES = ("grid", "gp")


def _check_ints(name: str, values: Sequence[Any], minimum: int) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty sequence of integers, got {values!r}")
    for v in values:
        if not is_integer(v) or v < minimum:
            raise ValueError(f"{name} must hold integers >= {minimum}, got {v!r}")
    return tuple(sorted(set(values)))


def default_lengths(window: int, factors: Sequence[float] = (0.5, 1, 2, 4, 8)) -> tuple[int, ...]:
    """Sweep lengths ``factor · W``: below, at and past the window, up to 8·W.

    Example: ``default_lengths(256)`` -> ``(128, 256, 512, 1024, 2048)``.
    """
    return tuple(sorted({max(2, round(f * window)) for f in factors}))


def default_mappings(window: int, head: int, tail: int, count: int = 8, top: float = 1.25) -> tuple[int, ...]:
    """``count`` mapping lengths evenly spaced from s1 + s2 + 1 to ``top · W`` (docs/design.md §3.2).

    Example: ``default_mappings(256, 32, 16)`` -> ``(49, 88, 126, 165, 204, 243, 281, 320)``.
    """
    lo, hi = head + tail + 1, max(head + tail + 2, round(top * window))
    return tuple(sorted({round(lo + (hi - lo) * i / (count - 1)) for i in range(count)}))


def initial_mappings(lo: int, hi: int, count: int, start: float | None = None) -> list[int]:
    """The GP search's first ``count`` points in ``[lo, hi]``: evenly spaced in log m, away
    from the ends (the V's optimum is rarely at a bound, and log spacing resolves small m).

    With ``start`` (m(L) of a previous fit) the search begins there: ``start`` first, then
    points 15 %, 30 %, ... above and below it, so a good fit is confirmed in one evaluation.

    Example: ``initial_mappings(49, 320, 3)`` -> ``[67, 125, 234]``;
    ``initial_mappings(49, 320, 3, start=150)`` -> ``[150, 172, 130]``.
    """
    if start is None:
        ratio = hi / lo
        points = [round(lo * ratio ** ((i + 0.5) / count)) for i in range(count)]
        return sorted({min(hi, max(lo, p)) for p in points})
    design: list[int] = []
    for step in range(4 * count):  # (clamped duplicates are skipped; stop once none is new)
        factor = 1 + 0.15 * ((step + 1) // 2)  # 1, 1.15, 1.15, 1.3, 1.3, ...
        point = min(hi, max(lo, round(start * factor if step % 2 else start / factor)))
        if point not in design:
            design.append(point)
        if len(design) == count:
            break
    return design


@dataclass(frozen=True)
class SweepPoint:
    """One evaluation: length L, mapping length m (None: the stock model) and LaMPE settings.

    For a ``method`` other than LaMPE (``lampe-calibrate --method``), ``mapping`` holds the
    value of that method's main knob (``methods.TUNABLE``) and head, tail and attention
    factor are unused (0, 0, 1).

    Example: ``SweepPoint(512, 600).stock`` -> True (m >= L: nothing to remap);
    ``SweepPoint(512, 4, 0, 0, method="selfextend")`` is SelfExtend with G = 4 at L = 512.
    """

    length: int
    mapping: float | None
    head: int = 32
    tail: int = 16
    attention_factor: float = 1.0
    method: str = LAMPE

    def __post_init__(self) -> None:
        check_integer("length", self.length, 2)
        if self.method != LAMPE:
            value = self.mapping
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"a {self.method} point's knob value must be a finite number, got {value!r}")
            object.__setattr__(self, "attention_factor", float(self.attention_factor))
            return
        if self.mapping is not None:
            if not is_integer(self.mapping):
                raise ValueError(f"mapping must be an integer or None, got {self.mapping!r}")
            if self.mapping <= self.head + self.tail:
                raise ValueError(
                    f"mapping must exceed head + tail = {self.head + self.tail}, got {self.mapping}"
                )
        object.__setattr__(self, "attention_factor", float(self.attention_factor))

    @property
    def stock(self) -> bool:
        """True when the point is the stock model: no mapping, or m >= L at attention factor 1."""
        if self.method != LAMPE:
            return False
        return self.mapping is None or (self.mapping >= self.length and self.attention_factor == 1.0)

    def key(self) -> tuple[Any, ...]:
        """Equal for points whose evaluation is the same (all m >= L coincide)."""
        if self.method != LAMPE:
            return (self.length, self.method, float(self.mapping))  # type: ignore[arg-type]
        if self.stock:
            return (self.length, STOCK)
        assert self.mapping is not None
        if self.mapping >= self.length:  # stock positions, scaled logits
            return (self.length, "identity", self.attention_factor)
        return (self.length, self.mapping, self.head, self.tail, self.attention_factor)

    def sort_key(self) -> tuple[Any, ...]:
        settings = (self.method, self.head, self.tail, self.attention_factor)
        return (self.length, *settings, self.mapping is None, self.mapping or 0)

    def config(self, mode: str) -> LampeConfig | None:
        """The ``LampeConfig`` to evaluate under, None for the stock model."""
        assert self.method == LAMPE, "another method's point is built by methods.tuned_context"
        if self.stock:
            return None
        factor, m = self.attention_factor, float(self.mapping)
        return LampeConfig(self.head, self.tail, mapping_length=m, mode=mode, attention_factor=factor)

    def describe(self) -> str:
        if self.method != LAMPE:
            return f"L={self.length} {self.method} {self.mapping:g}"
        if self.mapping is None:
            return f"L={self.length} vanilla"
        extra = f", factor {self.attention_factor:g}" if self.attention_factor != 1.0 else ""
        return f"L={self.length} m={self.mapping} (s1={self.head}, s2={self.tail}{extra})"

    def to_dict(self) -> dict[str, Any]:
        """The fields; ``method`` only for another method than LaMPE (so LaMPE trials stored
        before methods had a field read and compare as they were)."""
        data = dataclasses.asdict(self)
        if self.method == LAMPE:
            del data["method"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPoint:
        fields = (data["length"], data["mapping"], data["head"], data["tail"], data["attention_factor"])
        return cls(*fields, data.get("method", LAMPE))

    def params(self) -> dict[str, Any]:
        """The point as Optuna trial parameters: ``{"length"}`` for the stock model (the vanilla
        study), every field otherwise (the grid study)."""
        return {"length": self.length} if self.mapping is None else self.to_dict()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SweepPoint:
        """Inverse of ``params``."""
        if set(params) == {"length"}:
            return cls(params["length"], None)
        return cls.from_dict(params)


@dataclass(frozen=True)
class SweepSpec:
    """The search space of a sweep.

    Args:
        lengths: input lengths L.
        mappings: mapping lengths m of the grid; ``--search gp`` searches ``[min, max]``.
        heads, tails: head sizes s1 and tail sizes s2 to try (one each is the usual case).
        attention_factors: RoPE cos/sin multipliers to try (1.0 is the paper's method).
        mode: position mode, ``"exact"`` or ``"floor"`` (``LampeConfig.mode``).
        search: ``"grid"`` (every point) or ``"gp"`` (Optuna's GPSampler per length).
        evaluations: gp only, trials per length.
        initial_points: gp only, log-spaced points evaluated before the GP proposes (of the
            ``evaluations``).
        seed: seed of the samplers.
        base: the rotary every point runs on: ``STOCK`` (the model's own) or a rescaled base,
            ``"yarn"`` or ``"ntk"`` (``methods.rescaled_base``: factor s = 2, so m may go up
            to 2·s·W); the vanilla study then measures the rescaled base alone.
    """

    lengths: tuple[int, ...]
    mappings: tuple[int, ...]
    heads: tuple[int, ...] = (32,)
    tails: tuple[int, ...] = (16,)
    attention_factors: tuple[float, ...] = (1.0,)
    mode: str = "exact"
    search: str = "grid"
    evaluations: int = 6
    # Three points span a V well enough for the GP's first model (benchmarks/search.py).
    initial_points: int = 3
    seed: int = 0
    base: str = STOCK
    # gp only: ``(L, m)`` pairs, m(L) of a previous fit where the search at L begins
    # (``initial_mappings``' ``start``); a length without one starts from the log-spaced design.
    starts: tuple[tuple[int, float], ...] = ()
    # The method swept: "lampe" (the (L, m) grid above), or another of ``methods.TUNABLE``, whose
    # main knob takes ``values`` at each length: ``(L, (v1, v2, ...))`` pairs (grid search only;
    # ``mappings``, heads, tails and attention factors are then unused).
    method: str = LAMPE
    values: tuple[tuple[int, tuple[float, ...]], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", _check_ints("lengths", self.lengths, 2))
        object.__setattr__(self, "mappings", _check_ints("mappings", self.mappings, 2))
        object.__setattr__(self, "heads", _check_ints("heads", self.heads, 0))
        object.__setattr__(self, "tails", _check_ints("tails", self.tails, 0))
        factors = self.attention_factors
        if isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence) or not factors:
            raise ValueError(f"attention_factors must be a non-empty sequence, got {factors!r}")
        for f in factors:
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f <= 0:
                raise ValueError(f"attention_factors must hold finite numbers > 0, got {f!r}")
        object.__setattr__(self, "attention_factors", tuple(sorted({float(f) for f in factors})))
        smallest = self.heads[-1] + self.tails[-1] + 1
        if self.mappings[0] < smallest:
            raise ValueError(
                f"mappings must all be >= head + tail + 1 = {smallest} (the largest head and tail), "
                f"got {self.mappings[0]}"
            )
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {self.search!r}")
        for name in ("evaluations", "initial_points"):
            check_integer(name, getattr(self, name), 1)
        if self.initial_points > self.evaluations:
            raise ValueError(
                f"initial_points must be <= evaluations = {self.evaluations}, got {self.initial_points}"
            )
        check_integer("seed", self.seed)
        starts = tuple((length, float(m)) for length, m in self.starts)
        for length, m in starts:
            if not is_integer(length) or not math.isfinite(m) or m <= 0:
                raise ValueError(f"starts must hold (length, m > 0) pairs, got {(length, m)!r}")
        object.__setattr__(self, "starts", starts)
        if self.base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {self.base!r}")
        self._check_method()

    def _check_method(self) -> None:
        values = tuple((length, tuple(sorted(set(vs)))) for length, vs in self.values)
        object.__setattr__(self, "values", values)
        if self.method == LAMPE:
            if values:
                raise ValueError("values are a method's knob values: LaMPE sweeps mappings")
            return
        from ..methods._tuning import TUNABLE

        if self.method not in TUNABLE:
            raise ValueError(f"method must be one of {tuple(TUNABLE)}, got {self.method!r}")
        if self.search != "grid" or self.base != STOCK:
            raise ValueError(
                f"method {self.method!r} is swept by a grid on the stock rotary, got search "
                f"{self.search!r}, base {self.base!r}"
            )
        missing = sorted(set(self.lengths) - {length for length, _ in values})
        if missing or any(not vs for _, vs in values):
            raise ValueError(f"method {self.method!r} needs knob values at every length; none at {missing}")

    def grid_points(self) -> list[SweepPoint]:
        if self.method != LAMPE:
            return [
                SweepPoint(length, value, 0, 0, 1.0, self.method)
                for length, vs in self.values
                if length in self.lengths
                for value in vs
            ]
        return [
            SweepPoint(length, m, h, t, f)
            for length, m, h, t, f in itertools.product(
                self.lengths, self.mappings, self.heads, self.tails, self.attention_factors
            )
        ]

    def vanilla_point(self, trial: optuna.Trial) -> SweepPoint:
        """The point a vanilla trial samples: a length, the stock model."""
        return SweepPoint(trial.suggest_int("length", self.lengths[0], self.lengths[-1]), None)

    def grid_point(self, trial: optuna.Trial) -> SweepPoint:
        """The point a grid trial samples (every parameter comes from the grid)."""
        if self.method != LAMPE:
            everything = [v for _, vs in self.values for v in vs]
            value = trial.suggest_float("mapping", min(everything), max(everything))
            length = trial.suggest_int("length", self.lengths[0], self.lengths[-1])
            return SweepPoint(length, value, 0, 0, 1.0, trial.suggest_categorical("method", [self.method]))
        return SweepPoint(
            trial.suggest_int("length", self.lengths[0], self.lengths[-1]),
            trial.suggest_int("mapping", self.mappings[0], self.mappings[-1]),
            trial.suggest_int("head", self.heads[0], self.heads[-1]),
            trial.suggest_int("tail", self.tails[0], self.tails[-1]),
            trial.suggest_float("attention_factor", self.attention_factors[0], self.attention_factors[-1]),
        )

    def gp_range(self, length: int) -> tuple[int, int]:
        """The m interval a GP searches at ``length``: past L every m is the same (no remap)."""
        return self.mappings[0], min(self.mappings[-1], length)

    def start_for(self, length: int) -> float | None:
        """Where the GP search at ``length`` begins (``starts``), None for the log-spaced design."""
        return dict(self.starts).get(length)

    def gp_point(self, length: int) -> Callable[[optuna.Trial], SweepPoint]:
        """The sampling function of the GP study of ``length``."""
        lo, hi = self.gp_range(length)

        def choose(trial: optuna.Trial, name: str, values: tuple[Any, ...]) -> Any:
            return values[0] if len(values) == 1 else trial.suggest_categorical(name, values)

        def point(trial: optuna.Trial) -> SweepPoint:
            return SweepPoint(
                length,
                trial.suggest_int("mapping", lo, hi),
                choose(trial, "head", self.heads),
                choose(trial, "tail", self.tails),
                choose(trial, "attention_factor", self.attention_factors),
            )

        return point
