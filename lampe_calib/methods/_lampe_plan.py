"""LaMPE's position math and plans: the mapping PE(d), its three regions, per-token positions.

Everything here is a small pure function of integers or tensors (docs/design.md §1, paper §3.1):

    Head    d <= s1            PE(d) = d
    Middle  s1 < d < l - s2    PE(d) = α·(d - s1) + s1,   α = (m - s1 - s2) / (l - s1 - s2)
    Tail    d >= l - s2        PE(d) = d + m - l

RoPE only sees P_q(i) - P_k(j), so each region is a pair of per-token positions, which lets the
engine rotate queries and keys once per region instead of once per (i, j) pair. A plan
(``LampePlan``, exact; ``LampeFloorPlan``, the official release's integer grouping) gives the
engine those positions and regions for one batch (the ``engine._plan.PositionPlan`` protocol).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..engine._plan import Piece

__all__ = [
    "HEAD",
    "MIDDLE",
    "PLANS",
    "TAIL",
    "LampeFloorPlan",
    "LampePlan",
    "floor_group",
    "floor_grouping",
    "position_encoding",
    "region_of",
]

# Region ids, in the order the engine stores per-region query rotations.
HEAD, MIDDLE, TAIL = 0, 1, 2


def region_of(d: torch.Tensor, length: float, head: int, tail: int) -> torch.Tensor:
    """Region id (HEAD, MIDDLE or TAIL) of each relative position ``d`` for an input of ``length``.

    Example: ``region_of(torch.arange(12), length=12, head=2, tail=2)``
    -> ``[0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2]``.
    """
    d = torch.as_tensor(d)
    region = torch.full_like(d, MIDDLE, dtype=torch.long)
    region = torch.where(d <= head, HEAD, region)
    return torch.where(d >= length - tail, TAIL, region)


def position_encoding(
    d: torch.Tensor, length: float, mapping_length: float, head: int, tail: int
) -> torch.Tensor:
    """PE(d): the relative position LaMPE shows RoPE for a true relative position ``d`` (exact mode).

    Continuous at both boundaries (s1 -> s1, l - s2 -> m - s2), non-decreasing, largest value
    m - 1 at d = l - 1 when s2 >= 1. If ``length <= mapping_length`` PE is the identity.

    Example: ``position_encoding(torch.arange(12), 12, 8, 2, 2)``
    -> ``[0, 1, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 7]``.
    """
    d = torch.as_tensor(d, dtype=torch.float64)
    if length <= mapping_length:
        return d
    alpha = (mapping_length - head - tail) / (length - head - tail)
    middle = alpha * (d - head) + head
    tail_pe = d + mapping_length - length
    region = region_of(d, length, head, tail)
    return torch.where(region == HEAD, d, torch.where(region == TAIL, tail_pe, middle))


def floor_group(positions: torch.Tensor, ratio: float) -> torch.Tensor:
    """g(j) = ⌊fl32(r · j)⌋, the official release's integer grouping, in float32 arithmetic
    like the release (exact ⌊m·j/(l-1)⌋ differs at a few indices for l >= 32K).

    Example: ``floor_group(torch.arange(12), 8 / 11)`` -> ``[0, 0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8]``.
    """
    r32 = torch.tensor(ratio, dtype=torch.float32)
    return torch.floor(r32 * positions.to(torch.float32)).to(torch.float64)


def floor_grouping(length: int, mapping: int, head: int, tail: int) -> tuple[float, int, float, float]:
    """Constants of the official release's ``floor`` positions (llama_cache1.py, ``map_ids``).

    With r = fl32(m / (l - 1)) and g(j) = ⌊fl32(r·j)⌋:
    t = the last index of the run of equal g values that starts at s2 (t = s2 when r >= 1),
    bias1 = s1 - 1 - g(s1), bias2 = (l - 1 - t) - g(l - 1 - t) - bias1.
    Middle: P_q = g(i) + bias1, P_k = g(j). Tail (d >= l - t): P_q = i - bias2, P_k = j.

    Returns ``(r, t, bias1, bias2)``.

    Example: ``floor_grouping(12, 8, 2, 2)`` -> ``(0.7272…, 2, 0.0, 3.0)``.
    """
    ratio = float(torch.tensor(mapping, dtype=torch.float32) / torch.tensor(length - 1, dtype=torch.float32))
    g = floor_group(torch.arange(length), ratio)
    t = tail
    while t + 1 < length and g[t + 1] == g[tail]:
        t += 1
    bias1 = head - 1 - float(g[head])
    bias2 = (length - 1 - t) - float(g[length - 1 - t]) - bias1
    return ratio, t, bias1, bias2


@dataclass(frozen=True)
class LampePlan:
    """LaMPE's exact positions for one batch: per-row input length l and mapping length m, both
    ``(B,)`` float64, and the region sizes s1 (``head``) and s2 (``tail``).

    Rows with ``l <= m`` are not compressed: their middle uses α = 1 and their tail is empty, so
    their regions show RoPE the stock positions (a batch of such rows is ``identity``).
    """

    length: torch.Tensor  # (B,) l
    mapping: torch.Tensor  # (B,) m
    head: int
    tail: int

    @property
    def compressed(self) -> torch.Tensor:
        """``(B,)`` bool: rows whose relative positions are remapped (l > m)."""
        return self.length > self.mapping

    @property
    def alpha(self) -> torch.Tensor:
        """``(B,)`` middle slope α = (m - s1 - s2) / (l - s1 - s2); 1 where not compressed."""
        s = self.head + self.tail
        alpha = (self.mapping - s) / (self.length - s).clamp(min=1)
        return torch.where(self.compressed, alpha, torch.ones_like(alpha))

    def _tail_start(self) -> torch.Tensor:
        """``(B,)`` the tail's first relative position on a compressed row: l - s2."""
        return self.length - self.tail

    @property
    def tail_start(self) -> torch.Tensor:
        """``(B,)`` smallest relative position of the tail; +inf where not compressed."""
        start = self._tail_start().to(torch.float64)
        return torch.where(self.compressed, start, torch.full_like(self.length, float("inf")))

    def row(self, index: int) -> LampePlan:
        """The plan of one batch row, as a batch of one."""
        rows = slice(index, index + 1)
        return dataclasses.replace(self, length=self.length[rows], mapping=self.mapping[rows])

    @property
    def identity(self) -> bool:
        """True when no row is compressed: every pair keeps its stock positions."""
        return not bool(self.compressed.any())

    @property
    def region_key_version(self) -> tuple[int, ...]:
        """Key rotation each region attends with: stock (0) for head and tail, middle (1)."""
        return (0, 1, 0)

    def query_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Per-region query positions P_q: ``(B, S)`` token positions -> ``(3, B, S)`` float32.

        Example (l=12, m=8, s1=2, s2=2, α=0.5): i = 11 -> head 11, middle 6.5, tail 7.
        """
        pos = positions.to(torch.float64)
        alpha = self.alpha.to(pos.device)[:, None]
        shift = torch.where(self.compressed, self.mapping - self.length, torch.zeros_like(self.length))
        middle = alpha * pos + (1 - alpha) * self.head
        tail = pos + shift.to(pos.device)[:, None]
        return torch.stack([pos, middle, tail]).to(torch.float32)

    def key_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Per-version key positions P_k: ``(B, T)`` -> ``(2, B, T)`` float32 (stock, middle).

        Example (α=0.5): j = 4 -> stock 4, middle 2.
        """
        pos = positions.to(torch.float64)
        middle = self.alpha.to(pos.device)[:, None] * pos
        return torch.stack([pos, middle]).to(torch.float32)

    def regions(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """Region id of every (query, key) pair: ``(B, S)``, ``(B, T)`` -> ``(B, S, T)`` long."""
        d = query_positions[:, :, None] - key_positions[:, None, :]  # (B, S, T)
        tail_start = self.tail_start.to(d.device)[:, None, None]
        region = torch.full_like(d, MIDDLE, dtype=torch.long)
        region = torch.where(d <= self.head, HEAD, region)
        return torch.where(d >= tail_start, TAIL, region)

    def pieces(self) -> tuple[Piece, ...] | None:
        """LaMPE's three pieces (no tail piece for rows that are not compressed).

        Example: l = 12288, s1 = 1024, s2 = 512 (exact) -> head [0, 1024], middle [1025, 11775],
        tail [11776, ∞). None when rows have different (l, m).
        """
        if not (
            bool((self.length == self.length[0]).all()) and bool((self.mapping == self.mapping[0]).all())
        ):
            return None
        start = float(self.tail_start[0])
        if not math.isfinite(start):  # no tail: the middle (α = 1) reaches every distance
            return (Piece(0, self.head, HEAD, 0), Piece(self.head + 1, None, MIDDLE, 1))
        tail = math.ceil(start)  # d >= tail_start is the tail (integer d)
        head = min(self.head, tail - 1)  # the tail wins over the head, as in ``regions``
        return (
            Piece(0, head, HEAD, 0),
            Piece(head + 1, tail - 1, MIDDLE, 1),
            Piece(tail, None, TAIL, 0),
        )

    def chunks(self) -> None:
        """Not chunked: LaMPE's regions are distance bands."""
        return None


@dataclass(frozen=True)
class LampeFloorPlan(LampePlan):
    """The official release's ``floor`` positions for one batch (``floor_grouping``): middle
    P_q = g(i) + bias1, P_k = g(j); tail P_q = i - bias2, P_k = j; the tail starts at d = l - t
    instead of l - s2. Regions stay disjoint (the release counts two boundary keys twice; see
    docs/official_code_differences.md). Rows that are not compressed keep stock positions.
    """

    def _floor(self, row: int) -> tuple[float, int, float, float]:
        """Row ``row``'s constants (r, t, bias1, bias2); see ``floor_grouping``."""
        return floor_grouping(int(self.length[row]), int(self.mapping[row]), self.head, self.tail)

    def _tail_start(self) -> torch.Tensor:
        """``(B,)`` l - t (computed for compressed rows only; the others have no tail)."""
        lengths, compressed = self.length.tolist(), self.compressed.tolist()
        return torch.tensor([n - self._floor(i)[1] if compressed[i] else n for i, n in enumerate(lengths)])

    def query_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(3, B, S)`` float32: stock, g(i) + bias1, i - bias2.

        Example (l=12, m=8, s1=s2=2): P_q(2..11) middle ``[1, 2, 2, 3, 4, 5, 5, 6, 7, 8]``.
        """
        return self._positions(positions, query=True)

    def key_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(2, B, T)`` float32: stock, g(j)."""
        return self._positions(positions, query=False)

    def _positions(self, positions: torch.Tensor, query: bool) -> torch.Tensor:
        pos = positions.to(torch.float64)
        rows_middle, rows_tail = [], []
        for row in range(pos.shape[0]):
            if not bool(self.compressed[row]):
                rows_middle.append(pos[row])
                rows_tail.append(pos[row])
                continue
            ratio, _, bias1, bias2 = self._floor(row)
            grouped = floor_group(pos[row], ratio)
            rows_middle.append(grouped + bias1 if query else grouped)
            rows_tail.append(pos[row] - bias2)
        middle = torch.stack(rows_middle)
        if not query:
            return torch.stack([pos, middle]).to(torch.float32)
        return torch.stack([pos, middle, torch.stack(rows_tail)]).to(torch.float32)


# LampeConfig.mode -> the plan class of that mode.
PLANS: dict[str, type[LampePlan]] = {"exact": LampePlan, "floor": LampeFloorPlan}
