"""The engine against the dense O(L²) reference, on every supported family (docs/design.md §1)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_WINDOW, greedy, left_padded, tiny_model
from dense_reference import dense_lampe, pe_matrix

from lampe_calib import LampeConfig, apply_lampe
from lampe_calib.engine import (
    BACKENDS,
    _hook,
    _pieces,
    attention_with_lse,
    dense_region_attention,
    fused_attention,
)
from lampe_calib.engine._pieces import piece_parts
from lampe_calib.engine._plan import Piece
from lampe_calib.methods._dca import DualChunkConfig, DualChunkPlan, dual_chunk_attention
from lampe_calib.methods._lampe_plan import LampeFloorPlan, LampePlan
from lampe_calib.methods._selfextend import SelfExtendConfig, SelfExtendPlan, self_extend

# fp32 on activations of order 1 over a 2-layer model: rounding stays near 1e-6; 1e-4 is the contract.
TOL = 1e-4
W = TINY_WINDOW

CASES = [
    # (length, mapping, head, tail)
    (2 * W, 24, 4, 2),
    (4 * W, 24, 4, 2),
    (4 * W, 24, 4, 0),  # no tail
    (3 * W + 5, 7, 4, 2),  # m just above s1 + s2
    (4 * W, 40.5, 8, 4),  # fractional m, m > W
    (W - 3, 40, 4, 2),  # l <= m: nothing to compress
]


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


@pytest.mark.parametrize("mode", ["exact", "floor"])
@pytest.mark.parametrize("length,mapping,head,tail", CASES)
def test_engine_matches_dense_reference(family_model, mode, length, mapping, head, tail):
    ids = torch.randint(0, 96, (1, length), generator=torch.Generator().manual_seed(length))
    config = LampeConfig(head=head, tail=tail, mapping_length=mapping, mode=mode, attention_factor=1.07)
    with apply_lampe(family_model, config):
        got = _logits(family_model, ids)
    with dense_lampe(family_model, pe_matrix(length, mapping, head, tail, mode), attention_factor=1.07):
        want = _logits(family_model, ids)
    assert (got - want).abs().max().item() <= TOL


def test_short_input_equals_stock_model(family_model):
    ids = torch.randint(0, 96, (2, W))
    stock = _logits(family_model, ids)
    with apply_lampe(family_model, LampeConfig(head=4, tail=2, mapping_length=W)):
        got = _logits(family_model, ids)
    assert (got - stock).abs().max().item() <= TOL


def test_compression_changes_the_output(family_model):
    # Guards the tests above: a long input under LaMPE must differ from the stock model.
    ids = torch.randint(0, 96, (1, 4 * W))
    stock = _logits(family_model, ids)
    with apply_lampe(family_model, LampeConfig(head=4, tail=2, mapping_length=24)):
        got = _logits(family_model, ids)
    assert (got - stock).abs().max().item() > 100 * TOL


def test_sigmoid_mapping_uses_the_input_length():
    model = tiny_model("llama")
    from lampe_calib import SigmoidMapping

    sigmoid = SigmoidMapping(a=0.02, b=-1.0, c=30.0)
    config = LampeConfig(head=4, tail=2, sigmoid=sigmoid)
    for length in (2 * W, 4 * W):
        ids = torch.randint(0, 96, (1, length))
        with apply_lampe(model, config):
            got = _logits(model, ids)
        m = config.mapping_length_for(length)
        with dense_lampe(model, pe_matrix(length, m, 4, 2)):
            want = _logits(model, ids)
        assert (got - want).abs().max().item() <= TOL


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_generate_with_cache_equals_one_prefill(family):
    model = tiny_model(family)
    prompt = torch.randint(1, 96, (1, 3 * W))
    new = 12
    config = LampeConfig(head=4, tail=2, mapping_length=24)
    with torch.no_grad(), apply_lampe(model, config):
        sequence, step_logits = greedy(model, prompt, new)  # (1, prompt + new), (1, new, V)
    # One prefill of the whole generated sequence with l = prompt + max_new_tokens.
    with apply_lampe(model, config):
        full = _logits(model, sequence)
    want = full[:, prompt.shape[1] - 1 : -1]
    assert step_logits.shape == want.shape
    assert (step_logits - want).abs().max().item() <= TOL


def test_left_padded_batch_equals_each_row_alone():
    model = tiny_model("llama")
    config = LampeConfig(head=4, tail=2, mapping_length=24)
    rows = [torch.randint(1, 96, (1, n)) for n in (3 * W, 2 * W + 7)]
    ids, mask = left_padded(*rows)
    width, new = ids.shape[1], 6
    with torch.no_grad(), apply_lampe(model, config):
        batch = model(ids, attention_mask=mask, use_cache=False).logits
        sequences, steps = greedy(model, ids, new, attention_mask=mask)
        for b, r in enumerate(rows):
            alone = model(r, use_cache=False).logits
            assert (batch[b, width - r.shape[1] :] - alone[0]).abs().max().item() <= TOL
            single, single_steps = greedy(model, r, new)
            assert torch.equal(sequences[b, width:], single[0, r.shape[1] :])
            assert (steps[b] - single_steps[0]).abs().max().item() <= TOL


def _random_qkv(B=2, H=4, Hkv=2, S=70, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, S, D, generator=g)
    k = torch.randn(B, Hkv, S, D, generator=g)
    v = torch.randn(B, Hkv, S, D, generator=g)
    return q, k, v


def _softmax_reference(q, k, v, keep, scale):
    """Masked softmax in float64 with grouped heads expanded: out, lse (keep: (S, T) bool)."""
    G = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(G, 1), v.double().repeat_interleave(G, 1)
    scores = (q.double() @ k.transpose(-1, -2) * scale).masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, -1) @ v, torch.logsumexp(scores, -1)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("causal,masked", [(True, False), (False, True), (False, False)])
def test_kernel_backends_match_softmax(backend, causal, masked):
    if backend == "flash-attn":
        pytest.importorskip("flash_attn")
        if not torch.cuda.is_available():
            pytest.skip("flash-attn needs CUDA")
    q, k, v = _random_qkv(H=6, Hkv=2)  # grouped heads read in place
    device = "cuda" if backend == "flash-attn" else "cpu"
    dtype = torch.bfloat16 if backend == "flash-attn" else torch.float32
    q, k, v = (x.to(device, dtype) for x in (q, k, v))
    S = q.shape[2]
    i, j = torch.arange(S, device=device)[:, None], torch.arange(S, device=device)[None, :]
    keep = (j <= i) if causal else torch.ones(S, S, dtype=torch.bool, device=device)
    mask = None
    if masked:  # a band, every row keeps at least one key
        keep = (j <= i + 3) & (j >= i - 5)
        mask = torch.zeros(S, S, dtype=dtype, device=device).masked_fill(~keep, float("-inf"))
    out, lse = attention_with_lse(q, k, v, 0.3, causal=causal, mask=mask, backend=backend)
    want, want_lse = _softmax_reference(q, k, v, keep, 0.3)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert lse.dtype == torch.float32
    assert (lse - want_lse).abs().max().item() <= tol
    assert (out.double() - want).abs().max().item() <= tol


@pytest.mark.parametrize(
    "lo,hi,chunk",
    [
        (0, 3, 16),  # narrow band, many full chunks and a remainder
        (0, 40, 16),  # band wider than the chunk
        (5, 30, 7),  # a piece that starts past 0; chunk not dividing the rows
        (20, 60, 16),  # few band rows (a wide middle and a short tail)
        (0, None, 16),  # unbounded: one causal call
        (33, None, 16),  # unbounded, starting late (a tail)
        (0, 69, 16),  # hi >= S - 1: no band rows
        (80, None, 16),  # starts past the input: nothing
        (0, 50, 3),  # >= SPLIT_WIDTH_CHUNKS chunks wide: three calls per chunk
        (20, 60, 2),  # the same for a late piece with few band rows
    ],
)
def test_piece_parts_cover_exactly_the_piece(lo, hi, chunk):
    q, k, v = _random_qkv(S=70)
    S = q.shape[2]
    out = torch.zeros(q.shape, dtype=torch.float64)
    lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float64)
    for batch, row, part, part_lse in piece_parts(q, k, v, lo, hi, 0.5, chunk=chunk):
        n = part.shape[2]
        assert bool(torch.isneginf(lse[batch, :, row : row + n]).all())  # no row twice
        out[batch, :, row : row + n], lse[batch, :, row : row + n] = part.double(), part_lse.double()
    d = torch.arange(S)[:, None] - torch.arange(S)[None, :]
    keep = (d >= lo) if hi is None else (d >= lo) & (d <= hi)
    want, want_lse = _softmax_reference(q, k, v, keep, 0.5)
    seen = keep.any(-1)  # rows with a key in the piece
    assert torch.equal(torch.isfinite(lse[0, 0]), seen)
    assert (lse[:, :, seen] - want_lse[:, :, seen]).abs().max().item() <= 1e-5 if seen.any() else True
    assert (out[:, :, seen] - want[:, :, seen]).abs().max().item() <= 1e-5 if seen.any() else True


def _plans(length):
    """One plan of every fused kind for a batch of two rows of ``length`` tokens."""
    lengths = torch.tensor([float(length)] * 2)
    return [
        LampePlan(lengths, torch.tensor([20.0] * 2), 4, 3),
        LampePlan(lengths, torch.tensor([20.0] * 2), 4, 0),  # no tail
        LampeFloorPlan(lengths, torch.tensor([20.0] * 2), 4, 3),
        LampePlan(lengths, torch.tensor([float(length) + 10] * 2), 4, 2),  # l <= m
        LampePlan(lengths, torch.tensor([float(length - 1)] * 2), 17, 5),  # l just past m
        SelfExtendConfig(group=3, neighbor_window=8).plan(lengths.long()),
        SelfExtendConfig(group=2, neighbor_window=0).plan(lengths.long()),
        DualChunkConfig(chunk_size=20, local_window=4).plan(lengths.long()),
        DualChunkConfig(chunk_size=9, local_window=9).plan(lengths.long()),
    ]


def _rotations(plan, q, k):
    """Distinct per-region queries and keys (wrong region -> wrong answer)."""
    pos = torch.arange(q.shape[2]).expand(q.shape[0], -1)
    R, V = plan.query_positions(pos).shape[0], plan.key_positions(pos).shape[0]
    return torch.stack([q * (1 + r) for r in range(R)]), torch.stack([k * (1 - 0.4 * r) for r in range(V)])


@pytest.mark.parametrize("plan", _plans(75), ids=lambda p: type(p).__name__)
def test_fused_path_equals_dense_path(plan, monkeypatch):
    monkeypatch.setattr(_pieces, "BAND_CHUNK", 16)  # full band chunks at this size
    q, k, v = _random_qkv(S=75)
    queries, keys = _rotations(plan, q, k)
    pos = torch.arange(75).expand(2, 75)
    want, _ = dense_region_attention(queries, keys, v, plan, pos, pos, None, 0.4, block=16)
    got = fused_attention(queries, keys, v, plan, None, 0.4)
    assert (got - want).abs().max().item() <= 1e-5
    for S in (1, 3):  # cached steps: the last S queries after 75 - S keys
        step = fused_attention(queries[:, :, :, -S:], keys, v, plan, None, 0.4)
        assert (step - want[:, :, -S:]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("plan", _plans(75)[::2], ids=lambda p: type(p).__name__)
def test_fused_path_in_bfloat16_is_close_to_float32(plan):
    q, k, v = _random_qkv(S=75)
    queries, keys = _rotations(plan, q, k)
    pos = torch.arange(75).expand(2, 75)
    want, _ = dense_region_attention(queries, keys, v, plan, pos, pos, None, 0.4)
    half = [x.bfloat16() for x in (queries, keys, v)]
    got = fused_attention(*half, plan, None, 0.4)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max().item() <= 3e-2  # bf16 has 8 bits of mantissa


def test_plan_layouts_lampe_selfextend_dca():
    plan = LampePlan(torch.tensor([12288.0]), torch.tensor([6144.0]), 1024, 512)
    assert plan.pieces() == (Piece(0, 1024, 0, 0), Piece(1025, 11775, 1, 1), Piece(11776, None, 2, 0))
    floor = LampeFloorPlan(torch.tensor([12288.0]), torch.tensor([6144.0]), 1024, 512)
    assert floor.pieces()[2].lo == math.ceil(float(floor.tail_start[0]))
    mixed = LampePlan(torch.tensor([12288.0, 9000.0]), torch.tensor([6144.0, 6144.0]), 1024, 512)
    assert mixed.pieces() is None  # rows with different l: one row at a time
    assert SelfExtendPlan(torch.tensor([9.0]), 2, 2048).pieces() == (
        Piece(0, 2047, 0, 0),
        Piece(2048, None, 1, 1),
    )
    dca = DualChunkPlan(torch.tensor([90.0]), 20, 4)
    assert dca.pieces() is None and dca.chunks() == 20  # chunks, not distances
    assert plan.chunks() is None


def _no_dense(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dense path ran")

    monkeypatch.setattr(_hook, "dense_region_attention", refuse)


@pytest.mark.parametrize(
    "runner,config",
    [
        (apply_lampe, LampeConfig(head=21, tail=5, mapping_length=3 * W - 7)),  # l just past m
        (apply_lampe, LampeConfig(head=21, tail=5, mapping_length=40, mode="floor")),
        (self_extend, SelfExtendConfig(group=3, neighbor_window=19)),
        (dual_chunk_attention, DualChunkConfig(chunk_size=23, local_window=5)),
    ],
)
def test_fused_prefill_and_decode_match_the_dense_reference(runner, config, monkeypatch):
    # Bands wider than the chunk, s1 not a multiple of it, GQA (4 heads on 2): every prefill and
    # decode step runs fused (the dense path is refused); generate == one prefill.
    monkeypatch.setattr(_pieces, "BAND_CHUNK", 8)
    monkeypatch.setattr(_pieces, "SPLIT_WIDTH_CHUNKS", 4)  # the middle band splits, the head's does not
    model = tiny_model("llama")
    ids = torch.randint(1, 96, (1, 3 * W - 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), runner(model, config):
        full_ref = model(torch.cat([ids, ids[:, :9]], 1), use_cache=False).logits
        _no_dense(monkeypatch)
        sequences, steps = greedy(model, ids, 9)
        full = model(sequences, use_cache=False).logits
    monkeypatch.undo()
    assert (steps - full[:, ids.shape[1] - 1 : -1]).abs().max().item() <= TOL
    if isinstance(config, LampeConfig):
        length = sequences.shape[1]
        pe = pe_matrix(length, config.mapping_length_for(length), config.head, config.tail, config.mode)
        with dense_lampe(model, pe):
            want = _logits(model, sequences)
        assert (full - want).abs().max().item() <= TOL
    assert full_ref.shape == full.shape
