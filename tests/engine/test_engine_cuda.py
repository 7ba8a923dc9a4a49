"""The engine on CUDA gives the CPU engine's results (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_WINDOW, tiny_model
from dense_reference import dense_lampe, pe_matrix

from lampe_calib import LampeConfig, apply_lampe
from lampe_calib.engine import dense_region_attention, fused_attention
from lampe_calib.engine._kernels import BACKENDS, pick_backend
from lampe_calib.methods._lampe_plan import LampeFloorPlan, LampePlan

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

W = TINY_WINDOW


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("length,mapping", [(4 * W, 24), (W - 1, 40)])
def test_cuda_engine_matches_dense_reference_fp32(family, length, mapping):
    model = tiny_model(family)
    ids = torch.randint(0, 96, (1, length))
    with dense_lampe(model, pe_matrix(length, mapping, 4, 2)), torch.no_grad():
        want = model(ids, use_cache=False).logits
    model = model.cuda()
    with apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=mapping)), torch.no_grad():
        got = model(ids.cuda(), use_cache=False).logits.cpu()
    assert (got - want).abs().max().item() <= 1e-4


def test_cuda_generate_equals_prefill():
    model = tiny_model("llama").cuda()
    prompt = torch.randint(1, 96, (1, 3 * W), device="cuda")
    config = LampeConfig(head=4, tail=2, mapping_length=24)
    with torch.no_grad(), apply_lampe(model, config):
        out = model.generate(
            prompt,
            max_new_tokens=8,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        full = model(out.sequences, use_cache=False).logits
    steps = torch.stack(out.logits, 1)
    assert (steps - full[:, prompt.shape[1] - 1 : -1]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_prefill_fast_path_equals_dense_path(dtype):
    g = torch.Generator().manual_seed(0)
    S = 3000
    q = torch.randn(3, 1, 8, S, 64, generator=g)
    k = torch.randn(2, 1, 2, S, 64, generator=g)
    v = torch.randn(1, 2, S, 64, generator=g)
    plan = LampePlan(torch.tensor([float(S)]), torch.tensor([700.0]), 64, 32)
    pos = torch.arange(S)[None]
    want, _ = dense_region_attention(q, k, v, plan, pos, pos, None, 0.125)
    q, k, v = (x.cuda().to(dtype) for x in (q, k, v))
    assert pick_backend(q[0]) in BACKENDS
    got = fused_attention(q, k, v, plan, None, 0.125).float().cpu()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert (got - want).abs().max().item() <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_session_kernels_match_dense_path(dtype):
    # The kernels a CUDA session chooses (flash-attn or FlexAttention when present), on every
    # scheme's pieces and DCA's ranges, prefill and a decode step, against the CPU dense path.
    from lampe_calib.engine._kernels import available_kernels, choose_kernels
    from lampe_calib.methods._dca import DualChunkConfig
    from lampe_calib.methods._rerope import ReRopeConfig
    from lampe_calib.methods._selfextend import SelfExtendConfig
    from lampe_calib.methods._string import StringConfig

    kernels = choose_kernels(torch.device("cuda"), dtype)
    available = available_kernels()
    if available["flash-attn"] and dtype == torch.bfloat16:
        assert kernels.name == "flash-attn"
    elif available["flex"]:
        assert kernels.name == "flex"
    S = 3000
    n = torch.tensor([S])
    plans = [
        LampePlan(n.double(), torch.tensor([700.0]), 64, 32),
        LampeFloorPlan(n.double(), torch.tensor([700.0]), 64, 32),
        SelfExtendConfig(group=4, neighbor_window=256).plan(n),
        StringConfig(shifted_offset=1000, local_window=128).plan(n),
        ReRopeConfig(window=512).plan(n),
        DualChunkConfig(chunk_size=700, local_window=64).plan(n),
    ]
    g = torch.Generator().manual_seed(0)
    for plan in plans:
        pos = torch.arange(S)[None]
        R, V = plan.query_positions(pos).shape[0], plan.key_positions(pos).shape[0]
        q = torch.randn(R, 1, 8, S, 64, generator=g)
        k = torch.randn(V, 1, 2, S, 64, generator=g)
        v = torch.randn(1, 2, S, 64, generator=g)
        want, _ = dense_region_attention(q, k, v, plan, pos, pos, None, 0.125)
        q, k, v = (x.cuda().to(dtype) for x in (q, k, v))
        got = fused_attention(q, k, v, plan, None, 0.125, kernels).float().cpu()
        step = fused_attention(q[:, :, :, -1:], k, v, plan, None, 0.125, kernels).float().cpu()
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        assert (got - want).abs().max().item() <= tol, type(plan).__name__
        assert (step - want[:, :, -1:]).abs().max().item() <= tol, type(plan).__name__
