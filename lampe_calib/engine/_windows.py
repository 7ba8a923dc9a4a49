"""One causal windowed attention call with its LSE: how a distance piece runs on a GPU.

A piece ``lo <= i − j <= hi`` of queries at positions ``T − S .. T − 1`` over keys ``0 .. T − 1``
is one call on shifted slices (``_pieces.window_piece``): the queries against the keys
``0 .. T − lo − 1``, causal with the diagonal aligned bottom-right, so query i meets key i − lo
on it, and a left window of ``hi − lo`` keys (none when hi is open). flash-attn computes that
call natively (``window_size``); FlexAttention computes it from a band ``mask_mod`` and a block
mask that lists only the key blocks the band touches.

Window contract (``WindowFn``): ``fn(q, k, v, scale, causal, left) -> (out, lse)`` with q
``(B, H, S, D)``, k and v ``(B, Hkv, T, D)`` (H a multiple of Hkv, grouped heads read in place):

- ``causal=False``: every query sees every key (``left`` must be None);
- ``causal=True``: query r sees keys ``r + T − S − left .. r + T − S`` (bottom-right aligned,
  flash-attn's convention; ``left`` None: no lower bound).

Out ``(B, H, S, D)`` in q's dtype, lse ``(B, H, S)`` float32, natural log. A query that sees
no key comes back with out 0 and lse +inf (flash-attn) or -inf (FlexAttention); the merge
(``_merge``) treats both as empty.

Only APIs present in torch 2.11 are used here (FlexAttention's ``AuxRequest`` dates from 2.9,
``BlockMask.from_kv_blocks`` with ``seq_lengths`` from 2.6): the GPU check installs the project
without its dependencies over the CUDA torch a machine has.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

__all__ = ["FlexWindow", "WindowFn", "band_blocks", "flash_window"]

WindowFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, float, bool, "int | None"],
    tuple[torch.Tensor, torch.Tensor],
]

# FlexAttention's default tile (rows and keys per block of the block mask).
FLEX_BLOCK = 128
# Block masks a FlexWindow keeps: one per (S, T, left); a prefill needs one per piece, shared by
# every layer, and DCA one for its chunks.
FLEX_MASKS_KEPT = 16


def flash_window(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool, left: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The window contract on ``flash_attn.flash_attn_func`` (public API; fp16/bf16 on CUDA)."""
    from flash_attn import flash_attn_func

    assert causal or left is None
    # flash-attn's layout is (B, S, H, D) (a transposed view, no copy: its last dim stays
    # contiguous); it reads grouped KV heads itself and returns the LSE as (B, H, S).
    out, lse, _ = flash_attn_func(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        softmax_scale=scale,
        causal=causal,
        window_size=(-1 if left is None else left, 0 if causal else -1),
        return_attn_probs=True,
    )
    return out.transpose(1, 2), lse.float()


def band_blocks(
    rows: int, keys: int, left: int | None, block: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which key blocks each query block touches under the bottom-right causal window.

    Query r sees keys ``r + keys − rows − left .. r + keys − rows``. A block pair is *touched*
    when one of its (query, key) pairs is seen, and *full* when every one is (and neither block
    runs past the end: FlexAttention pads the last blocks, so they are never full).

    Returns:
        touched, full: ``(ceil(rows / block), ceil(keys / block))`` bool.

    Example: ``band_blocks(4, 4, 0, 2)`` (the diagonal) -> touched ``[[1, 0], [0, 1]]``, full
    all 0.
    """
    shift = keys - rows
    r0 = torch.arange(0, rows, block, device=device)[:, None]  # first row of each query block
    r1 = torch.clamp(r0 + block, max=rows) - 1  # last row
    j0 = torch.arange(0, keys, block, device=device)[None, :]  # first key of each key block
    j1 = torch.clamp(j0 + block, max=keys) - 1
    low = -(2**62) if left is None else -left  # relative offset j − (r + shift) >= low
    touched = (j0 <= r1 + shift) & (j1 >= r0 + shift + low)
    whole = (r0 + block <= rows) & (j0 + block <= keys)
    full = whole & (j1 <= r0 + shift) & (j0 >= r1 + shift + low)
    return touched, full


class FlexWindow:
    """The window contract on ``torch.nn.attention.flex_attention`` (compiled on CUDA; eager,
    exact at dense cost, on CPU for tests).

    Args:
        compiled: run ``torch.compile(flex_attention)`` (the fused Triton kernel); False runs the
            eager reference, which materializes the scores.

    Holds the block masks of the last ``FLEX_MASKS_KEPT`` shapes (a prefill's layers share them).
    """

    def __init__(self, compiled: bool = True) -> None:
        from torch.nn.attention.flex_attention import flex_attention

        # Shapes change with each piece and length: the first recompile marks them dynamic.
        self._flex = torch.compile(flex_attention) if compiled else flex_attention
        self._masks: OrderedDict[tuple, object] = OrderedDict()

    def block_mask(self, rows: int, keys: int, left: int | None, device: torch.device):
        """The ``BlockMask`` of the bottom-right causal window (``band_blocks``), built from its
        block lists (never a rows × keys mask)."""
        key = (rows, keys, left, str(device))
        if key in self._masks:
            self._masks.move_to_end(key)
            return self._masks[key]
        from torch.nn.attention.flex_attention import BlockMask

        touched, full = band_blocks(rows, keys, left, FLEX_BLOCK, device)
        partial = touched & ~full
        # The mask is read inside the kernel: its offsets are tensors, so one compiled kernel
        # serves every piece (Python ints would be baked in, one recompile per value).
        shift_t = torch.tensor(keys - rows, device=device)
        left_t = torch.tensor(keys if left is None else left, device=device)

        def band(b, h, q_idx, kv_idx):
            d = q_idx + shift_t - kv_idx
            return (d >= 0) & (d <= left_t)

        def listed(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # Block indices first in ascending order, then the rest (ignored by the kernel).
            order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True)
            return blocks.sum(-1).to(torch.int32)[None, None], order.to(torch.int32)[None, None]

        mask = BlockMask.from_kv_blocks(
            *listed(partial),
            *listed(full),
            BLOCK_SIZE=FLEX_BLOCK,
            mask_mod=band,
            seq_lengths=(rows, keys),
        )
        self._masks[key] = mask
        if len(self._masks) > FLEX_MASKS_KEPT:
            self._masks.popitem(last=False)
        return mask

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool, left: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.nn.attention.flex_attention import AuxRequest

        assert causal or left is None
        S, T = q.shape[2], k.shape[2]
        block_mask = None
        if causal and S == 1:
            # One query (a decode step): its keys are one slice, no mask.
            first = 0 if left is None else max(0, T - 1 - left)
            k, v = k[:, :, first:], v[:, :, first:]
        elif causal:
            block_mask = self.block_mask(S, T, left, q.device)
        out, aux = self._flex(
            q,
            k,
            v,
            block_mask=block_mask,
            scale=scale,
            enable_gqa=q.shape[1] != k.shape[1],
            return_aux=AuxRequest(lse=True),
        )
        return out, aux.lse.float()
