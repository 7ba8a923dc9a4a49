"""Attention that also returns the log-sum-exp, on whatever kernel the device offers.

The engine needs each piece's LSE to merge pieces exactly (see ``_merge``). The public
``scaled_dot_product_attention`` does not return it, so this module picks, in order:

- ``flash-attn``: ``flash_attn_func(..., return_attn_probs=True)`` on CUDA when installed;
- ``aten``: the fused kernels behind ``scaled_dot_product_attention`` that return the LSE
  (``_scaled_dot_product_flash_attention_for_cpu`` on CPU; on CUDA
  ``_scaled_dot_product_flash_attention`` for fp16/bf16 and ``_scaled_dot_product_efficient_attention``
  otherwise); they are private ops, so ``pick_backend`` checks they exist and the pure-torch
  backend stays the fallback;
- ``torch``: a plain blocked implementation (never builds an S × T tensor), always available.

Registry contract (``BACKENDS``): ``fn(q, k, v, scale, causal, mask) -> (out, lse)`` with
q ``(B, H, S, D)``, k and v ``(B, Hkv, T, D)`` (H a multiple of Hkv: query head h reads KV
head h // (H/Hkv)); ``causal``: top-left mask (query s sees keys 0..s); ``mask``: None or an
additive ``(S, T)`` float mask in q's dtype (0 or -inf), the same for every batch row and head.
Out ``(B, H, S, D)`` in q's dtype, lse ``(B, H, S)`` float32. A query must see at least one
key: the CPU kernel returns lse 0, not -inf, for a fully masked row, so callers never pass one.
Inputs may be strided views (the CPU kernel reads strides, so an overlapping ``as_strided``
view of the keys costs no copy). The GPU kernels take no mask here: a masked call on CUDA runs
on the torch backend, which is why on CUDA a piece runs as one windowed call instead
(``_windows``) and no masked call is made.

Kernels are chosen once per session (``choose_kernels``, called by ``LampeSession``) and passed
down as a ``Kernels``: on CPU the ``aten`` backend and the masked band path of ``_pieces`` (the
fastest there); on CUDA a window kernel (``WINDOWS``) for every call — flash-attn when it is
installed and the dtype is fp16/bf16, else compiled FlexAttention when Triton is there — and
else the ``aten`` backend with the band path. The CUDA path uses only APIs present in
torch 2.11 (see ``_windows``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ._windows import FlexWindow, WindowFn, flash_window

__all__ = [
    "BACKENDS",
    "WINDOWS",
    "Kernels",
    "attention_with_lse",
    "available_kernels",
    "choose_kernels",
    "pick_backend",
    "plain_kernels",
]

Backend = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, float, bool, "torch.Tensor | None"],
    tuple[torch.Tensor, torch.Tensor],
]

# Rows of queries per block in the pure-torch backend: bounds the (block × T) score tile.
_TORCH_BLOCK = 256
# The dtypes flash-attn (and PyTorch's own flash kernel on CUDA) take.
_HALF = (torch.float16, torch.bfloat16)


def _expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, Hkv, T, D)`` -> ``(B, Hkv·G, T, D)`` for kernels without grouped-query support."""
    if groups == 1:
        return x
    B, Hkv, T, D = x.shape
    return x[:, :, None].expand(B, Hkv, groups, T, D).reshape(B, Hkv * groups, T, D)


def _torch_backend(q, k, v, scale, causal, mask):
    B, H, S, D = q.shape
    Hkv, T = k.shape[1], k.shape[2]
    G = H // Hkv
    out = torch.empty_like(q)
    lse = torch.empty(B, H, S, dtype=torch.float32, device=q.device)
    kt = k[:, :, None]  # (B, Hkv, 1, T, D): query heads of one group share it
    vt = v[:, :, None]
    for start in range(0, S, _TORCH_BLOCK):
        stop = min(S, start + _TORCH_BLOCK)
        qb = q[:, :, start:stop].reshape(B, Hkv, G, stop - start, D)
        scores = (qb @ kt.transpose(-1, -2)).float() * scale  # (B, Hkv, G, b, T)
        if mask is not None:
            scores = scores + mask[start:stop].float()
        if causal:
            rows = torch.arange(start, stop, device=q.device)[:, None]
            cols = torch.arange(T, device=q.device)[None, :]
            scores = scores.masked_fill(cols > rows, float("-inf"))
        block_lse = torch.logsumexp(scores, dim=-1)  # (B, Hkv, G, b)
        probs = torch.exp(scores - block_lse[..., None])
        o = probs.to(v.dtype) @ vt  # (B, Hkv, G, b, D)
        out[:, :, start:stop] = o.reshape(B, H, stop - start, D).to(q.dtype)
        lse[:, :, start:stop] = block_lse.reshape(B, H, stop - start)
    return out, lse


def groups_as_rows(
    backend: Backend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """An unmasked call with grouped KV heads, the G query heads of a group stacked as rows
    over their shared KV head: ``(B, H, S, D)`` -> ``(B, Hkv, G·S, D)``; the keys are read in
    place (no expanded copy), for kernels without grouped-query support."""
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    out, lse = backend(q.reshape(B, Hkv, H // Hkv * S, D), k, v, scale, False, None)
    return out.reshape(B, H, S, D), lse.reshape(B, H, S)


def _aten_backend(q, k, v, scale, causal, mask):
    if q.device.type == "cpu":
        # Grouped-query heads are read in place (no expanded copy of k and v).
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, attn_mask=None if mask is None else mask[None, None], scale=scale
        )
        return out, lse.float()
    if mask is not None:
        return _torch_backend(q, k, v, scale, causal, mask)
    G = q.shape[1] // k.shape[1]
    if not causal and G > 1:
        # Unmasked (a decode step's key slice, DCA's rectangles): grouped heads as rows.
        return groups_as_rows(_aten_backend, q, k, v, scale)
    k, v = _expand_kv(k, G), _expand_kv(v, G)
    if q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
        # PyTorch's own FlashAttention-2 kernel (half precision only).
        out, lse, *_ = torch.ops.aten._scaled_dot_product_flash_attention(
            q, k, v, 0.0, causal, False, scale=scale
        )
        return out, lse.float()
    out, lse, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, None, True, 0.0, causal, scale=scale
    )
    return out, lse[..., : q.shape[2]].float()  # the memory-efficient kernel pads the LSE's last dim


def _flash_attn_backend(q, k, v, scale, causal, mask):
    if mask is not None:
        return _torch_backend(q, k, v, scale, causal, mask)
    # flash-attn's causal mask is bottom-right aligned, the same as top-left when S == T (the
    # only causal calls the engine makes on a GPU kernel): the window call with no left bound.
    assert not causal or q.shape[2] == k.shape[2]
    return flash_window(q, k, v, scale, causal, None)


BACKENDS: dict[str, Backend] = {
    "flash-attn": _flash_attn_backend,
    "aten": _aten_backend,
    "torch": _torch_backend,
}


def pick_backend(q: torch.Tensor) -> str:
    """The fastest backend available for ``q``'s device and dtype."""
    if q.device.type == "cuda" and q.dtype in _HALF and importlib.util.find_spec("flash_attn") is not None:
        return "flash-attn"
    return _plain_backend(q.device)


def _plain_backend(device: torch.device) -> str:
    """``aten`` where its kernel with an LSE exists for ``device``, else ``torch``."""
    if device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return "aten"
    if device.type == "cuda" and hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention"):
        return "aten"
    return "torch"


# Window kernels by name: factories, so that each session gets its own (FlexWindow keeps the
# block masks of its session's shapes). A test may put a stand-in under a name.
WINDOWS: dict[str, Callable[[], WindowFn]] = {
    "flash-attn": lambda: flash_window,
    "flex": FlexWindow,
}


def available_kernels() -> dict[str, bool]:
    """Which optional GPU kernels this environment has: flash-attn, and FlexAttention with the
    Triton compiler its fused kernel needs (its ``AuxRequest``, for the LSE, dates from 2.9)."""
    flex = importlib.util.find_spec("triton") is not None
    if flex:
        from torch.nn.attention import flex_attention

        flex = hasattr(flex_attention, "AuxRequest")
    return {"flash-attn": importlib.util.find_spec("flash_attn") is not None, "flex": flex}


@dataclass(frozen=True)
class Kernels:
    """The attention kernels of one session, chosen once (``choose_kernels``) and passed down.

    Args:
        name: what was chosen: ``"flash-attn"``, ``"flex"``, ``"aten"`` or ``"torch"``.
        device: the device type it was chosen for (``"cpu"``, ``"cuda"``).
        dtype: the dtype it was chosen for.
        backend: the ``BACKENDS`` key of calls without a window kernel.
        window: a ``WindowFn`` that runs every call (a piece as one windowed call, DCA's
            ranges, decode steps); None: ``backend`` and the masked band path of ``_pieces``.
    """

    name: str
    device: str
    dtype: torch.dtype
    backend: str
    window: WindowFn | None = None

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unmasked or causal attention with its LSE; causal calls have as many keys as queries
        (top-left and bottom-right alignment agree). Shapes as ``attention_with_lse``."""
        if self.window is None or q.shape[2] == 0:
            return attention_with_lse(q, k, v, scale, causal, backend=self.backend)
        assert not causal or q.shape[2] == k.shape[2]
        return self.window(q, k, v, scale, causal, None)


def plain_kernels(q: torch.Tensor) -> Kernels:
    """``pick_backend(q)`` as a ``Kernels`` without a window kernel (for callers that were
    handed none)."""
    backend = pick_backend(q)
    return Kernels(backend, q.device.type, q.dtype, backend)


def choose_kernels(
    device: torch.device, dtype: torch.dtype, available: Mapping[str, bool] | None = None
) -> Kernels:
    """The kernels for a session on ``device`` in ``dtype``.

    CPU (and any device but CUDA): the ``aten`` backend (``torch`` without it) and the masked
    band path. CUDA: flash-attn's windows when installed and ``dtype`` is fp16/bf16, else
    compiled FlexAttention when Triton is there, else the ``aten`` backend with the band path.

    Args:
        available: which optional kernels to count as installed (default ``available_kernels()``).

    Example: ``choose_kernels(torch.device("cpu"), torch.float32).name`` -> ``"aten"``.
    """
    plain = _plain_backend(device)
    if device.type != "cuda":
        return Kernels(plain, device.type, dtype, plain)
    available = available_kernels() if available is None else available
    if available.get("flash-attn", False) and dtype in _HALF:
        return Kernels("flash-attn", "cuda", dtype, "flash-attn", WINDOWS["flash-attn"]())
    if available.get("flex", False):
        return Kernels("flex", "cuda", dtype, plain, WINDOWS["flex"]())
    return Kernels(plain, "cuda", dtype, plain)


def attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool = False,
    mask: torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with its LSE (the ``BACKENDS`` contract above).

    Args:
        q: ``(B, H, S, D)``; k, v: ``(B, Hkv, T, D)`` with H a multiple of Hkv.
        scale: logit scale (usually D ** -0.5).
        causal: top-left causal mask (query s sees keys 0..s).
        mask: None or an additive ``(S, T)`` mask in q's dtype; no row may be fully masked.
        backend: a key of ``BACKENDS``; default ``pick_backend(q)``.

    Returns:
        out ``(B, H, S, D)`` in q's dtype, lse ``(B, H, S)`` float32 (natural log).
    """
    if q.shape[2] == 0:
        return torch.zeros_like(q), q.new_zeros(q.shape[:3], dtype=torch.float32)
    return BACKENDS[backend or pick_backend(q)](q, k, v, scale, causal, mask)
