"""The engine against the dense O(L²) reference, on every supported family (DESIGN §1)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_WINDOW, tiny_model
from dense_reference import dense_lampe, pe_matrix

from lampe_calib import LampeConfig, apply_lampe
from lampe_calib._engine import band_attention, dense_region_attention, lampe_prefill
from lampe_calib._kernels import BACKENDS, causal_attention_with_lse
from lampe_calib._positions import LampePlan

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
        out = model.generate(
            prompt,
            max_new_tokens=new,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        step_logits = torch.stack(out.logits, dim=1)  # (1, new, V)
    # One prefill of the whole generated sequence with l = prompt + max_new_tokens.
    sequence = out.sequences  # (1, prompt + new)
    with apply_lampe(model, config):
        full = _logits(model, sequence)
    want = full[:, prompt.shape[1] - 1 : -1]
    assert step_logits.shape == want.shape
    assert (step_logits - want).abs().max().item() <= TOL


def test_left_padded_batch_equals_each_row_alone():
    model = tiny_model("llama")
    config = LampeConfig(head=4, tail=2, mapping_length=24)
    rows = [torch.randint(1, 96, (n,)) for n in (3 * W, 2 * W + 7)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r) :] = r
        mask[b, width - len(r) :] = 1
    new = 6
    with torch.no_grad(), apply_lampe(model, config):
        batch = model(ids, attention_mask=mask, use_cache=False).logits
        gen = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=new,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        for b, r in enumerate(rows):
            alone = model(r[None], use_cache=False).logits
            assert (batch[b, width - len(r) :] - alone[0]).abs().max().item() <= TOL
            single = model.generate(
                r[None],
                max_new_tokens=new,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=0,
            )
            assert torch.equal(gen.sequences[b, width:], single.sequences[0, len(r) :])
            got = torch.stack([step[b] for step in gen.logits])
            want = torch.stack([step[0] for step in single.logits])
            assert (got - want).abs().max().item() <= TOL


def _random_qkv(B=2, H=4, Hkv=2, S=70, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, S, D, generator=g)
    k = torch.randn(B, Hkv, S, D, generator=g)
    v = torch.randn(B, Hkv, S, D, generator=g)
    return q, k, v


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_kernel_backends_match_softmax(backend):
    if backend == "flash-attn":
        pytest.importorskip("flash_attn")
        if not torch.cuda.is_available():
            pytest.skip("flash-attn needs CUDA")
    q, k, v = _random_qkv(H=2, Hkv=2)
    device = "cuda" if backend == "flash-attn" else "cpu"
    dtype = torch.bfloat16 if backend == "flash-attn" else torch.float32
    q, k, v = (x.to(device, dtype) for x in (q, k, v))
    out, lse = causal_attention_with_lse(q, k, v, 0.3, backend=backend)
    scores = (q.float() @ k.float().transpose(-1, -2)) * 0.3
    causal = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool, device=device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert (lse - torch.logsumexp(scores, -1)).abs().max().item() <= tol
    assert (out.float() - torch.softmax(scores, -1) @ v.float()).abs().max().item() <= tol


@pytest.mark.parametrize("width", [0, 3, 64, 100])
def test_band_attention_matches_masked_softmax(width):
    q, k, v = _random_qkv()
    out, lse = band_attention(q, k, v, width, 0.5, block=16, rows_per_pass=32)
    S = q.shape[2]
    i, j = torch.arange(S)[:, None], torch.arange(S)[None, :]
    keep = (j <= i) & (j >= i - width)
    scores = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) * 0.5
    scores = scores.masked_fill(~keep, float("-inf"))
    assert (lse - torch.logsumexp(scores, -1)).abs().max().item() <= 1e-5
    assert (out - torch.softmax(scores, -1) @ v.repeat_interleave(2, 1)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mode", ["exact", "floor"])
@pytest.mark.parametrize("length,mapping,head,tail", [(70, 20, 4, 3), (70, 20, 4, 0), (50, 60, 4, 2)])
def test_prefill_fast_path_equals_dense_path(mode, length, mapping, head, tail):
    q, k, v = _random_qkv(S=length)
    plan = LampePlan(torch.tensor([float(length)] * 2), torch.tensor([float(mapping)] * 2), head, tail, mode)
    pos = torch.arange(length).expand(2, length)
    qpos, kpos = plan.query_positions(pos), plan.key_positions(pos)
    queries = torch.stack([q * (1 + r) for r in range(len(qpos))])  # distinct per-region queries
    keys = torch.stack([k * (1 - 0.5 * r) for r in range(len(kpos))])
    fast = lampe_prefill(queries, keys, v, plan, 0.4)
    dense, _ = dense_region_attention(queries, keys, v, plan, pos, pos, None, 0.4, block=16)
    assert (fast - dense).abs().max().item() <= 1e-5
