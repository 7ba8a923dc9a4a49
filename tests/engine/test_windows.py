"""The windowed path (one causal windowed call per piece, the CUDA path) on CPU: through a
stand-in with flash-attn's documented semantics and through FlexAttention in eager mode, against
the dense references; and the choice of kernels."""

from __future__ import annotations

import logging

import flash_standin
import pytest
import torch
from conftest import TINY_WINDOW, greedy, tiny_model
from dense_reference import dense_lampe, pe_matrix

from lampe_calib import LampeConfig, apply_lampe
from lampe_calib.engine import (
    _hook,
    _kernels,
    _pieces,
    _windows,
    dense_region_attention,
    fused_attention,
)
from lampe_calib.engine._kernels import BACKENDS, WINDOWS, Kernels, choose_kernels, groups_as_rows
from lampe_calib.engine._merge import merge_into
from lampe_calib.engine._pieces import window_piece
from lampe_calib.engine._windows import FlexWindow, band_blocks
from lampe_calib.methods._dca import DualChunkConfig, dual_chunk_attention
from lampe_calib.methods._lampe_plan import LampeFloorPlan, LampePlan
from lampe_calib.methods._rerope import ReRopeConfig, rerope_attention
from lampe_calib.methods._selfextend import SelfExtendConfig, self_extend
from lampe_calib.methods._string import StringConfig, string_attention

# Eager FlexAttention warns that it materializes the scores: that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

TOL = 1e-4  # the engine's contract in fp32
W = TINY_WINDOW
WINDOW_KINDS = ["flash-standin", "flex-eager"]


class Counted:
    """A window kernel that counts its calls (so a test knows the window path ran)."""

    def __init__(self, window):
        self.window, self.calls = window, 0

    def __call__(self, *args):
        self.calls += 1
        return self.window(*args)


@pytest.fixture
def small_flex_blocks(monkeypatch):
    # Blocks of 16 so that the tiny inputs here span several blocks (partial and full ones).
    monkeypatch.setattr(_windows, "FLEX_BLOCK", 16)


def _window(kind, monkeypatch):
    if kind == "flash-standin":
        flash_standin.install(monkeypatch)
        return Counted(WINDOWS["flash-attn"]())
    monkeypatch.setattr(_windows, "FLEX_BLOCK", 16)
    return Counted(FlexWindow(compiled=False))


def _kernels_for(kind, monkeypatch, dtype=torch.float32):
    """Window kernels on CPU tensors, as a CUDA session would get them (``backend`` is never used)."""
    window = _window(kind, monkeypatch)
    return Kernels(kind, "cpu", dtype, "torch", window), window


def _qkv(B=2, H=4, Hkv=2, S=40, T=40, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, H, S, D, generator=g),
        torch.randn(B, Hkv, T, D, generator=g),
        torch.randn(B, Hkv, T, D, generator=g),
    )


def _softmax_reference(q, k, v, keep, scale):
    """Masked softmax in float64, grouped heads expanded: out (0 for an empty row), lse (-inf)."""
    G = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(G, 1), v.double().repeat_interleave(G, 1)
    scores = (q.double() @ k.transpose(-1, -2) * scale).masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(scores, -1)
    probs = torch.exp(scores - torch.where(torch.isfinite(lse), lse, 0)[..., None])
    return probs @ v, lse


@pytest.mark.parametrize("kind", WINDOW_KINDS)
@pytest.mark.parametrize(
    "S,T,causal,left",
    [
        (40, 40, True, None),  # causal, equal lengths
        (40, 40, True, 7),  # a band of 8 keys
        (30, 70, True, 12),  # fewer queries than keys (a decode step of 30 rows)
        (30, 70, True, None),
        (1, 50, True, 9),  # one query: a key slice
        (50, 30, True, 4),  # more queries than keys: the first 20 rows see no key
        (50, 30, True, None),
        (20, 33, False, None),  # unmasked
    ],
)
def test_window_contract_against_softmax(kind, S, T, causal, left, monkeypatch):
    window = _window(kind, monkeypatch)
    q, k, v = _qkv(S=S, T=T)
    out, lse = window(q, k, v, 0.3, causal, left)
    r, j = torch.arange(S)[:, None], torch.arange(T)[None, :]
    d = r + T - S - j  # bottom-right aligned
    keep = torch.ones(S, T, dtype=torch.bool)
    if causal:
        keep = (d >= 0) & (d <= (T if left is None else left))
    want, want_lse = _softmax_reference(q, k, v, keep, 0.3)
    seen = keep.any(-1)
    assert lse.shape == (2, 4, S) and lse.dtype == torch.float32 and out.shape == q.shape
    assert torch.equal(torch.isfinite(lse), seen.expand_as(lse))
    assert (lse[..., seen] - want_lse[..., seen]).abs().max().item() <= 1e-5
    assert (out.double() - want).abs().max().item() <= 1e-5
    if not seen.all():  # an empty row: out 0, lse +inf (flash-attn) or -inf (FlexAttention)
        assert bool((out[..., ~seen, :] == 0).all())
        empty = float("inf") if kind == "flash-standin" else float("-inf")
        assert bool((lse[..., ~seen] == empty).all())


@pytest.mark.parametrize("kind", WINDOW_KINDS)
def test_merge_treats_a_row_without_key_as_empty(kind, monkeypatch):
    # Keys 0..29 in two sets; the second call's first 20 rows see none of its keys.
    window = _window(kind, monkeypatch)
    q, k, v = _qkv(S=30, T=30)
    out, lse = window(q, k[:, :, :10], v[:, :, :10], 0.5, False, None)
    out = out.float()
    merge_into(out, lse, *window(q, k[:, :, 10:], v[:, :, 10:], 0.5, True, None))
    r, j = torch.arange(30)[:, None], torch.arange(30)[None, :]
    want, want_lse = _softmax_reference(q, k, v, (j < 10) | (j - 10 <= r - 10), 0.5)
    assert (lse - want_lse).abs().max().item() <= 1e-5
    assert (out.double() - want).abs().max().item() <= 1e-5
    out, lse = torch.zeros(q.shape), torch.full(q.shape[:3], float("-inf"))  # empty: merged in order
    for a, b in ((10, 30), (0, 10)):  # the set with empty rows first
        merge_into(out, lse, *window(q, k[:, :, a:b], v[:, :, a:b], 0.5, a > 0, None))
    assert (lse - want_lse).abs().max().item() <= 1e-5
    assert (out.double() - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kind", WINDOW_KINDS)
@pytest.mark.parametrize(
    "lo,hi",
    [(0, 3), (0, None), (5, 30), (20, 60), (33, None), (0, 69), (69, None), (80, None), (10, 10)],
)
@pytest.mark.parametrize("past", [0, 60, 67])  # a prefill, a step of 10 rows, of 3 rows
def test_window_piece_covers_exactly_the_piece(kind, lo, hi, past, monkeypatch):
    window = _window(kind, monkeypatch)
    T = 70
    q, k, v = _qkv(S=T - past, T=T)
    i = torch.arange(past, T)[:, None]  # positions of the queries
    d = i - torch.arange(T)[None, :]
    keep = (d >= lo) if hi is None else (d >= lo) & (d <= hi)
    got = window_piece(q, k, v, lo, hi, 0.5, window)
    seen = keep.any(-1)
    if got is None:
        assert not seen.any()
        return
    start, out, lse = got
    assert not seen[:start].any() and bool(seen[start:].all())  # rows before start: i < lo
    want, want_lse = _softmax_reference(q, k, v, keep, 0.5)
    assert (lse - want_lse[:, :, start:]).abs().max().item() <= 1e-5
    assert (out.double() - want[:, :, start:]).abs().max().item() <= 1e-5
    assert window.calls == 1  # one call per piece


def _plans(length):
    """Every band scheme and DCA, for a batch of two rows of ``length`` tokens."""
    lengths = torch.tensor([float(length)] * 2)
    n = lengths.long()
    return [
        LampePlan(lengths, torch.tensor([20.0] * 2), 4, 3),
        LampePlan(lengths, torch.tensor([20.0] * 2), 4, 0),  # no tail
        LampeFloorPlan(lengths, torch.tensor([20.0] * 2), 4, 3),
        LampePlan(lengths, torch.tensor([float(length) + 10] * 2), 4, 2),  # l <= m
        LampePlan(lengths, torch.tensor([float(length - 1)] * 2), 17, 5),  # l just past m
        SelfExtendConfig(group=3, neighbor_window=8).plan(n),
        SelfExtendConfig(group=2, neighbor_window=0).plan(n),
        StringConfig(shifted_offset=25, local_window=6).plan(n),
        ReRopeConfig(window=9).plan(n),
        DualChunkConfig(chunk_size=20, local_window=4).plan(n),
        DualChunkConfig(chunk_size=9, local_window=9).plan(n),
    ]


def _plan_id(plan):
    return f"{type(plan).__name__}-{getattr(plan, 'mode', '')}"


def _rotations(plan, q, k):
    """Distinct per-region queries and keys (wrong region -> wrong answer)."""
    pos = torch.arange(q.shape[2]).expand(q.shape[0], -1)
    R, V = plan.query_positions(pos).shape[0], plan.key_positions(pos).shape[0]
    return torch.stack([q * (1 + r) for r in range(R)]), torch.stack([k * (1 - 0.4 * r) for r in range(V)])


@pytest.mark.parametrize("kind", WINDOW_KINDS)
@pytest.mark.parametrize("plan", _plans(75), ids=_plan_id)
def test_windowed_fused_path_equals_dense_path(kind, plan, monkeypatch):
    kernels, window = _kernels_for(kind, monkeypatch)
    q, k, v = _qkv(S=75, T=75)
    queries, keys = _rotations(plan, q, k)
    pos = torch.arange(75).expand(2, 75)
    want, _ = dense_region_attention(queries, keys, v, plan, pos, pos, None, 0.4, block=16)
    got = fused_attention(queries, keys, v, plan, None, 0.4, kernels)
    assert (got - want).abs().max().item() <= 1e-5
    assert window.calls > 0
    # Cached steps: the last S queries after 75 - S keys (70 rows: past DECODE_ROWS' masks).
    for module in (_kernels, _pieces):  # no backend call on this path
        monkeypatch.setattr(module, "attention_with_lse", None)
    for S in (1, 3, 70):
        step = fused_attention(queries[:, :, :, -S:], keys, v, plan, None, 0.4, kernels)
        if S == 70 and plan.chunks() is not None:
            assert step is None  # DCA: a step over two chunks goes to the dense path
            continue
        assert (step - want[:, :, -S:]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kind", WINDOW_KINDS)
@pytest.mark.parametrize("plan", _plans(75)[::2], ids=_plan_id)
def test_windowed_fused_path_in_bfloat16(kind, plan, monkeypatch):
    kernels, _ = _kernels_for(kind, monkeypatch, torch.bfloat16)
    q, k, v = _qkv(S=75, T=75)
    queries, keys = _rotations(plan, q, k)
    pos = torch.arange(75).expand(2, 75)
    want, _ = dense_region_attention(queries, keys, v, plan, pos, pos, None, 0.4)
    got = fused_attention(*(x.bfloat16() for x in (queries, keys, v)), plan, None, 0.4, kernels)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max().item() <= 3e-2  # bf16 has 8 bits of mantissa


def _no_dense(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dense path ran")

    monkeypatch.setattr(_hook, "dense_region_attention", refuse)


@pytest.mark.parametrize("kind", WINDOW_KINDS)
@pytest.mark.parametrize(
    "runner,config",
    [
        (apply_lampe, LampeConfig(head=21, tail=5, mapping_length=3 * W - 7)),
        (apply_lampe, LampeConfig(head=5, tail=3, mapping_length=40, mode="floor")),
        (self_extend, SelfExtendConfig(group=3, neighbor_window=19)),
        (string_attention, StringConfig(shifted_offset=40, local_window=8)),
        (rerope_attention, ReRopeConfig(window=8)),
        (dual_chunk_attention, DualChunkConfig(chunk_size=23, local_window=5)),
    ],
    ids=["lampe", "lampe-floor", "selfextend", "string", "rerope", "dca"],
)
def test_model_on_window_kernels_matches_the_references(kind, runner, config, monkeypatch):
    # A tiny GQA model (4 heads on 2) with the session's kernels set to a window kernel: the
    # prefill equals the CPU path (and, for LaMPE, the plain O(L²) reference); greedy decoding
    # with the cache equals one prefill; the dense path never runs.
    kernels, window = _kernels_for(kind, monkeypatch)
    model = tiny_model("llama")
    ids = torch.randint(1, 96, (1, 3 * W - 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), runner(model, config) as session:
        cpu_steps = greedy(model, ids, 9)
        cpu = model(cpu_steps[0], use_cache=False).logits
        assert session.kernels.name == "aten"
        session.kernels = kernels
        _no_dense(monkeypatch)
        sequences, steps = greedy(model, ids, 9)
        full = model(sequences, use_cache=False).logits
        assert session.kernels is kernels
    monkeypatch.undo()
    assert window.calls > 0
    assert torch.equal(sequences, cpu_steps[0])
    assert (full - cpu).abs().max().item() <= TOL
    assert (steps - full[:, ids.shape[1] - 1 : -1]).abs().max().item() <= TOL
    if isinstance(config, LampeConfig):
        length = sequences.shape[1]
        pe = pe_matrix(length, config.mapping_length_for(length), config.head, config.tail, config.mode)
        with dense_lampe(model, pe):
            want = model(sequences, use_cache=False).logits
        assert (full - want).abs().max().item() <= TOL


@pytest.mark.parametrize(
    "rows,keys,left", [(37, 37, None), (37, 37, 5), (20, 70, 17), (64, 64, 40), (1, 50, 3)]
)
def test_band_blocks_match_create_block_mask(rows, keys, left):
    from torch.nn.attention.flex_attention import create_block_mask

    shift, reach = keys - rows, keys if left is None else left

    def band(b, h, q_idx, kv_idx):
        d = q_idx + shift - kv_idx
        return (d >= 0) & (d <= reach)

    want = create_block_mask(band, None, None, rows, keys, device="cpu", BLOCK_SIZE=8)
    touched, full = band_blocks(rows, keys, left, 8)

    def dense(num, indices):
        out = torch.zeros(touched.shape, dtype=torch.bool)
        for r in range(touched.shape[0]):
            out[r, indices[0, 0, r, : num[0, 0, r]].long()] = True
        return out

    partial = dense(want.kv_num_blocks, want.kv_indices)
    assert torch.equal(dense(want.full_kv_num_blocks, want.full_kv_indices), full)
    assert torch.equal(partial | full, touched)


def test_flex_block_mask_lists_the_band(small_flex_blocks):
    window = FlexWindow(compiled=False)
    mask = window.block_mask(40, 60, 9, torch.device("cpu"))
    assert mask is window.block_mask(40, 60, 9, torch.device("cpu"))  # kept for the next layer
    r, j = torch.arange(40)[:, None], torch.arange(60)[None, :]
    d = r + 20 - j
    keep = (d >= 0) & (d <= 9)
    blocks = mask.to_dense()[0, 0].bool()  # (3, 4) listed blocks, partial and full
    assert torch.equal(blocks, band_blocks(40, 60, 9, 16)[0])
    dense = blocks.repeat_interleave(16, 0).repeat_interleave(16, 1)[:40, :60]
    assert bool(dense[keep].all())  # every pair of the band is in a listed block
    assert int(blocks.sum()) == 8  # of 12: keys 11..35, 27..51 and 43..59 of the three row blocks


def test_groups_as_rows_reads_grouped_heads_in_place():
    q, k, v = _qkv(H=6, Hkv=2, S=5, T=30)
    out, lse = groups_as_rows(BACKENDS["torch"], q, k, v, 0.3)
    want, want_lse = _softmax_reference(q, k, v, torch.ones(5, 30, dtype=torch.bool), 0.3)
    assert (out.double() - want).abs().max().item() <= 1e-5
    assert (lse - want_lse).abs().max().item() <= 1e-5


def test_kernels_are_chosen_by_device_dtype_and_availability(monkeypatch):
    flash, flex = object(), object()
    monkeypatch.setitem(WINDOWS, "flash-attn", lambda: flash)
    monkeypatch.setitem(WINDOWS, "flex", lambda: flex)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    every = {"flash-attn": True, "flex": True}

    def chosen(device, dtype, available):
        k = choose_kernels(device, dtype, available)
        return k.name, k.window

    # CPU keeps its path whatever is installed.
    assert chosen(cpu, torch.float32, every) == ("aten", None)
    assert chosen(cpu, torch.bfloat16, every) == ("aten", None)
    # CUDA: flash-attn for half precision, FlexAttention otherwise, the aten backend without both.
    assert chosen(cuda, torch.bfloat16, every) == ("flash-attn", flash)
    assert chosen(cuda, torch.float16, {"flash-attn": True}) == ("flash-attn", flash)
    assert chosen(cuda, torch.float32, every) == ("flex", flex)
    assert chosen(cuda, torch.bfloat16, {"flash-attn": False, "flex": True}) == ("flex", flex)
    assert chosen(cuda, torch.float32, {"flash-attn": True, "flex": False}) == ("aten", None)
    assert chosen(cuda, torch.bfloat16, {}) == ("aten", None)
    # This machine: what is installed decides (no CUDA here: the CPU path).
    if not torch.cuda.is_available():
        assert choose_kernels(cpu, torch.float32).window is None


def test_session_chooses_kernels_once_and_says_so(caplog):
    model = tiny_model("llama")
    ids = torch.randint(1, 96, (1, 2 * W))
    caplog.set_level(logging.DEBUG, logger="lampe_calib.engine._session")
    with torch.no_grad(), apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)) as session:
        assert session.kernels is None
        model(ids)
        chosen = session.kernels
        model(ids)
        assert session.kernels is chosen  # once per session, not per call
    assert (chosen.name, chosen.device, chosen.dtype, chosen.window) == ("aten", "cpu", torch.float32, None)
    lines = [r.getMessage() for r in caplog.records if "attention kernels" in r.getMessage()]
    assert lines == ["attention kernels: aten (cpu, torch.float32)"]


@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn_backend_equals_the_torch_backend(causal, monkeypatch):
    # The flash-attn backend is the window call without a left bound (through the stand-in).
    flash_standin.install(monkeypatch)
    q, k, v = _qkv(S=30, T=30)
    got, got_lse = BACKENDS["flash-attn"](q, k, v, 0.3, causal, None)
    want, want_lse = BACKENDS["torch"](q, k, v, 0.3, causal, None)
    assert (got - want).abs().max().item() <= 1e-5 and (got_lse - want_lse).abs().max().item() <= 1e-5
