"""Every baseline against a tiny dense reference of its own position rule; the registry contract."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import TINY_WINDOW, greedy, left_padded, tiny_model
from dense_reference import dense_lampe, dense_rule, relative, rerope_pe, string_pe
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from lampe_calib import LampeConfig, SigmoidMapping
from lampe_calib.engine import dense_region_attention, fused_attention
from lampe_calib.engine._plan import Piece
from lampe_calib.methods import METHODS, method_context
from lampe_calib.methods._dca import DualChunkConfig, DualChunkPlan, dual_chunk_attention
from lampe_calib.methods._rerope import ReRopeConfig, ReRopePlan, rerope_attention, rerope_position
from lampe_calib.methods._rope_scaling import ntk_base, rope_parameters_of
from lampe_calib.methods._selfextend import SelfExtendConfig, self_extend, self_extend_group
from lampe_calib.methods._string import (
    STRING_ATTENTION_FACTOR,
    StringConfig,
    string_attention,
    string_local_window,
    string_position,
    string_shifted_offset,
)

TOL = 1e-4  # fp32 through a 2-layer model; the engine's contract
W = TINY_WINDOW


def _ids(length: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 96, (batch, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, use_cache=False, **kwargs).logits


# --- position rules, worked examples -----------------------------------------------------------


def test_selfextend_plan_positions():
    plan = SelfExtendConfig(group=4, neighbor_window=8).plan(torch.tensor([20]))
    pos = torch.tensor([[13]])
    assert plan.query_positions(pos)[:, 0, 0].tolist() == [13.0, 9.0]
    assert plan.key_positions(torch.tensor([[5]]))[:, 0, 0].tolist() == [5.0, 1.0]
    regions = plan.regions(torch.tensor([[13]]), torch.arange(14)[None])
    assert regions[0, 0].tolist() == [1] * 6 + [0] * 8  # d = 13..8 grouped, 7..0 neighbours
    assert SelfExtendConfig(group=1, neighbor_window=8).plan(torch.tensor([20])).identity


def test_dca_plan_positions():
    plan = DualChunkPlan(torch.tensor([30.0]), chunk_size=6, local_window=2)
    assert plan.query_positions(torch.tensor([[9]]))[:, 0, 0].tolist() == [3.0, 7.0, 7.0]
    assert plan.query_positions(torch.tensor([[6]]))[:, 0, 0].tolist() == [0.0, 6.0, 7.0]
    assert plan.key_positions(torch.tensor([[9]]))[:, 0, 0].tolist() == [3.0]
    regions = plan.regions(torch.tensor([[13]]), torch.arange(14)[None])
    assert regions[0, 0].tolist() == [2] * 6 + [1] * 6 + [0] * 2
    assert DualChunkPlan(torch.tensor([6.0]), chunk_size=6, local_window=2).identity


def test_string_plan_positions():
    assert string_position(torch.arange(10), 6, 2).tolist() == [0, 1, 2, 3, 4, 5, 2, 3, 4, 5]
    plan = StringConfig(shifted_offset=6, local_window=2).plan(torch.tensor([20]))
    assert plan.query_positions(torch.tensor([[9]]))[:, 0, 0].tolist() == [9.0, 5.0]
    assert plan.key_positions(torch.tensor([[5]]))[:, 0, 0].tolist() == [5.0]
    assert plan.region_key_version == (0, 0)
    regions = plan.regions(torch.tensor([[9]]), torch.arange(10)[None])
    assert regions[0, 0].tolist() == [1] * 4 + [0] * 6  # d = 9..6 shifted, 5..0 exact
    # Every pair sees P_q − P_k = PE(d) of its region.
    q = plan.query_positions(torch.tensor([[9]]))[:, 0, 0]
    k = plan.key_positions(torch.arange(10)[None])[0, 0]
    shown = torch.where(regions[0, 0] == 1, q[1] - k, q[0] - k)
    assert shown.tolist() == string_position(9 - torch.arange(10), 6, 2).tolist()
    assert plan.pieces() == (Piece(0, 5, 0, 0), Piece(6, None, 1, 0))
    assert StringConfig(shifted_offset=6, local_window=2).plan(torch.tensor([6])).identity


def test_rerope_plan_positions():
    assert rerope_position(torch.arange(7), 4).tolist() == [0, 1, 2, 3, 4, 4, 4]
    plan = ReRopeConfig(window=4).plan(torch.tensor([20]))
    assert plan.query_positions(torch.tensor([[9]]))[:, 0, 0].tolist() == [9.0, 4.0]
    assert plan.key_positions(torch.tensor([[5]]))[:, 0, 0].tolist() == [5.0, 0.0]
    assert plan.region_key_version == (0, 1)
    regions = plan.regions(torch.tensor([[9]]), torch.arange(10)[None])
    assert regions[0, 0].tolist() == [1] * 6 + [0] * 4  # d = 9..4 clipped, 3..0 exact
    assert plan.pieces() == (Piece(0, 3, 0, 0), Piece(4, None, 1, 1))
    assert ReRopePlan(torch.tensor([4.0]), window=4).identity
    assert not ReRopePlan(torch.tensor([4.0, 5.0]), window=4).identity


def test_string_offset_keeps_positions_inside_the_window():
    # The worked examples of string_shifted_offset (W = 8192, w = 128).
    assert string_local_window(8192) == 128 and string_local_window(256) == 16
    offsets = [string_shifted_offset(8192, n, 128) for n in (8192, 9000, 12288, 16384)]
    assert offsets == [8192, 3000, 4224, 8256]
    window, local = 64, 4
    for length in range(window + 1, 4 * window):
        s = string_shifted_offset(window, length, local)
        largest = max(s - 1, length - 1 - s + local)
        best = min(max(t - 1, length - 1 - t + local) for t in range(local, length))
        if length <= 2 * window - local:
            assert largest <= window - 1 and s >= length // 3
        else:  # no S fits: the one with the fewest positions past the window
            assert largest == best
    assert StringConfig.recommended(8192, 12288) == StringConfig(4224, 128, STRING_ATTENTION_FACTOR)
    assert ReRopeConfig.recommended(4096) == ReRopeConfig(window=1024)


def test_recommended_settings():
    assert self_extend_group(4096, 15800, 1024) == 5  # the SelfExtend README's example
    assert SelfExtendConfig.recommended(4096, 16384) == SelfExtendConfig(group=5, neighbor_window=1024)
    assert SelfExtendConfig.recommended(256, 256).group == 1
    config = SelfExtendConfig.recommended(256, 2048)
    assert config.extended_window(256) >= 2048 > SelfExtendConfig(config.group - 1, 64).extended_window(256)
    assert DualChunkConfig.recommended(4096) == DualChunkConfig(chunk_size=2816, local_window=256)
    assert ntk_base(10000.0, 64, 4.0) == pytest.approx(10000 * 4 ** (64 / 62))


@pytest.mark.parametrize(
    "factory,kwargs,field",
    [
        (SelfExtendConfig, {"group": 0, "neighbor_window": 4}, "group"),
        (SelfExtendConfig, {"group": 2, "neighbor_window": -1}, "neighbor_window"),
        (SelfExtendConfig, {"group": 2.5, "neighbor_window": 4}, "group"),
        (DualChunkConfig, {"chunk_size": 4, "local_window": 5}, "local_window"),
        (DualChunkConfig, {"chunk_size": 0, "local_window": 0}, "chunk_size"),
        (StringConfig, {"shifted_offset": 0, "local_window": 0}, "shifted_offset"),
        (StringConfig, {"shifted_offset": 4, "local_window": 5}, "local_window"),
        (StringConfig, {"shifted_offset": 4, "local_window": -1}, "local_window"),
        (StringConfig, {"shifted_offset": 8, "local_window": 2, "attention_factor": 0.0}, "attention_factor"),
        (ReRopeConfig, {"window": 0}, "window"),
        (ReRopeConfig, {"window": True}, "window"),
        (ReRopeConfig, {"window": 4, "attention_factor": float("nan")}, "attention_factor"),
    ],
)
def test_configs_reject_bad_values(factory, kwargs, field):
    with pytest.raises(ValueError, match=f"^{field} must"):
        factory(**kwargs)


# --- each method against a dense reference of its rule -----------------------------------------


def test_vanilla_is_the_stock_model(family_model):
    ids = _ids(4 * W)
    stock = _logits(family_model, ids)
    with method_context("vanilla", family_model, W, 4 * W):
        got = _logits(family_model, ids)
    assert torch.equal(got, stock)


@pytest.mark.parametrize("length", [2 * W, 4 * W + 3])
def test_pi_is_scaled_relative_positions(family_model, length):
    ids = _ids(length)
    with method_context("pi", family_model, W, length):
        got = _logits(family_model, ids)
    _, _, d = relative(length)
    with dense_lampe(family_model, d * W / length):
        want = _logits(family_model, ids)
    assert (got - want).abs().max().item() <= TOL


def _stock_with_rope(model, rope_parameters: dict) -> torch.nn.Module:
    """The same weights under a model built from a config with other RoPE parameters."""
    config = copy.deepcopy(model.config)
    config.rope_parameters = rope_parameters
    other = type(model)(config).eval()
    other.load_state_dict(model.state_dict())
    return other


def test_ntk_is_the_stock_model_with_the_scaled_base(family_model):
    length = 4 * W
    ids = _ids(length)
    config = family_model.config
    theta = config.rope_parameters["rope_theta"]
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    base = theta * (length / W) ** (dim / (dim - 2))
    want = _logits(_stock_with_rope(family_model, {"rope_type": "default", "rope_theta": base}), ids)
    with method_context("ntk", family_model, W, length) as _:
        rotary = family_model.model.rotary_emb
        got = _logits(family_model, ids)
    # The same table as transformers' dynamic NTK at an input of `length` tokens (factor 1).
    dynamic = copy.deepcopy(config)
    dynamic.rope_parameters = {"rope_type": "dynamic", "rope_theta": theta, "factor": 1.0}
    dynamic.max_position_embeddings = W
    inv_freq, _ = ROPE_INIT_FUNCTIONS["dynamic"](dynamic, seq_len=length)
    assert torch.allclose(rotary.inv_freq, inv_freq, rtol=1e-6)
    assert (got - want).abs().max().item() <= TOL


def test_yarn_is_the_stock_model_with_yarn_parameters(family_model):
    length = 4 * W
    ids = _ids(length)
    theta = family_model.config.rope_parameters["rope_theta"]
    params = {"rope_type": "yarn", "rope_theta": theta, "factor": 4.0, "original_max_position_embeddings": W}
    reference = _stock_with_rope(family_model, params)
    want = _logits(reference, ids)
    with method_context("yarn", family_model, W, length):
        rotary = family_model.model.rotary_emb
        got = _logits(family_model, ids)
    assert rotary.attention_scaling == pytest.approx(0.1 * math.log(4.0) + 1)
    assert (got - want).abs().max().item() <= TOL


RUNNERS = {
    SelfExtendConfig: self_extend,
    DualChunkConfig: dual_chunk_attention,
    StringConfig: string_attention,
    ReRopeConfig: rerope_attention,
}


@pytest.mark.parametrize(
    "scheme",
    [
        SelfExtendConfig(group=4, neighbor_window=8),
        SelfExtendConfig(group=3, neighbor_window=8),
        SelfExtendConfig(group=2, neighbor_window=0),
        DualChunkConfig(chunk_size=20, local_window=4),
        DualChunkConfig(chunk_size=13, local_window=0),
        DualChunkConfig(chunk_size=9, local_window=9),
        StringConfig(shifted_offset=40, local_window=8, attention_factor=STRING_ATTENTION_FACTOR),
        StringConfig(shifted_offset=17, local_window=0),
        StringConfig(shifted_offset=9, local_window=9),
        ReRopeConfig(window=8),
        ReRopeConfig(window=1),
        ReRopeConfig(window=50),
    ],
    ids=repr,
)
def test_scheme_matches_its_dense_rule(family_model, scheme):
    length = 3 * W + 5
    ids = _ids(length)
    with RUNNERS[type(scheme)](family_model, scheme):
        got = _logits(family_model, ids)
    with dense_lampe(family_model, dense_rule(scheme, length), scheme.attention_factor):
        want = _logits(family_model, ids)
    assert (got - want).abs().max().item() <= TOL


@pytest.mark.parametrize(
    "scheme",
    [StringConfig(shifted_offset=40, local_window=8), StringConfig(shifted_offset=9, local_window=9)]
    + [ReRopeConfig(window=8), ReRopeConfig(window=1)],
    ids=repr,
)
def test_fused_pieces_equal_the_dense_regions(scheme):
    # The engine runs these plans on fused kernels through pieces(); its general dense path
    # reads regions() instead. Both must be the same attention.
    T, D = 3 * W + 5, 16
    plan = scheme.plan(torch.tensor([T]))
    pos = torch.arange(T)[None]
    R, V = len(plan.query_positions(pos)), len(plan.key_positions(pos))
    g = torch.Generator().manual_seed(0)
    q = torch.randn(R, 1, 4, T, D, generator=g)
    k, v = torch.randn(V, 1, 2, T, D, generator=g), torch.randn(1, 2, T, D, generator=g)
    fused = fused_attention(q, k, v, plan, None, D**-0.5)
    dense, _ = dense_region_attention(q, k, v, plan, pos, pos, None, D**-0.5)
    assert fused is not None and (fused - dense).abs().max().item() <= 1e-5


@pytest.mark.parametrize("length", [W + 9, 4 * W])
def test_string_and_rerope_registry_use_the_recommended_settings(length):
    # The factories, temperature included, against the dense rule of the recommended numbers.
    model = tiny_model("qwen3")
    ids = _ids(length)
    s, w = string_shifted_offset(W, length, 2), ReRopeConfig.recommended(W).window
    assert string_local_window(W) == 2 and w == 8
    for name, pe, factor in (
        ("string", string_pe(length, s, 2), STRING_ATTENTION_FACTOR),
        ("rerope", rerope_pe(length, w), 1.0),
    ):
        with method_context(name, model, W, length):
            got = _logits(model, ids)
        with dense_lampe(model, pe, attention_factor=factor):
            want = _logits(model, ids)
        assert (got - want).abs().max().item() <= TOL, name


@pytest.mark.parametrize("name", ["pi", "ntk", "yarn", "selfextend", "dca", "string", "rerope"])
def test_baselines_change_long_inputs(name):
    # Guards the comparisons above: a long input under a baseline must differ from the stock model.
    model = tiny_model("llama")
    ids = _ids(4 * W)
    stock = _logits(model, ids)
    with method_context(name, model, W, 4 * W):
        got = _logits(model, ids)
    assert (got - stock).abs().max().item() > 100 * TOL


@pytest.mark.parametrize("name", ["pi", "ntk", "yarn", "selfextend", "string", "rerope"])
def test_scaling_methods_are_stock_within_the_window(name):
    model = tiny_model("llama")
    ids = _ids(W)
    stock = _logits(model, ids)
    with method_context(name, model, W, W):
        got = _logits(model, ids)
    assert torch.equal(got, stock)


# --- decoding, batching, restoration ------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    [
        SelfExtendConfig(group=3, neighbor_window=8),
        DualChunkConfig(chunk_size=20, local_window=4),
        StringConfig(shifted_offset=40, local_window=4, attention_factor=1.1),
        ReRopeConfig(window=8),
    ],
)
def test_generate_with_cache_equals_one_prefill(scheme):
    model = tiny_model("llama")
    ids = _ids(3 * W)
    runner = RUNNERS[type(scheme)]
    with runner(model, scheme), torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
        prefill = _logits(model, out.sequences)
    steps = torch.stack(out.logits, dim=1)  # (1, 6, V)
    want = prefill[:, ids.shape[1] - 1 : -1]
    assert (steps - want).abs().max().item() <= TOL


@pytest.mark.parametrize("name", ["selfextend", "dca", "string", "rerope"])
def test_left_padded_batch_gives_each_rows_result(name):
    model = tiny_model("qwen2")
    long, short = _ids(3 * W, seed=1), _ids(2 * W + 7, seed=2)
    pad = long.shape[1] - short.shape[1]
    batch, mask = left_padded(long, short)
    with method_context(name, model, W, 3 * W):
        both = _logits(model, batch, attention_mask=mask)
        alone = [_logits(model, long), _logits(model, short)]
    assert (both[0] - alone[0][0]).abs().max().item() <= TOL
    assert (both[1, pad:] - alone[1][0]).abs().max().item() <= TOL


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_restores_the_model(name):
    model = tiny_model("llama")
    ids = _ids(4 * W)
    stock = _logits(model, ids)
    rotary, attentions = model.model.rotary_emb, [layer.self_attn for layer in model.model.layers]
    impl = model.config._attn_implementation
    profile = LampeConfig(head=4, tail=2, sigmoid=SigmoidMapping(a=0.02, b=-1.0, c=24.0))
    with method_context(name, model, W, 4 * W, profile):
        _logits(model, ids)
    assert model.model.rotary_emb is rotary
    assert all(layer.self_attn is attn for layer, attn in zip(model.model.layers, attentions, strict=True))
    assert model.config._attn_implementation == impl and "generate" not in model.__dict__
    assert torch.equal(_logits(model, ids), stock)


# --- registry contract --------------------------------------------------------------------------


def test_registry_names_and_errors():
    assert list(METHODS) == [
        "vanilla", "pi", "ntk", "yarn", "selfextend", "dca", "string", "rerope", "lampe-fixed", "lampe",
        "lampe-yarn", "lampe-ntk",
    ]  # fmt: skip
    model = tiny_model("llama")
    with pytest.raises(KeyError, match="unknown method 'longrope'.*vanilla"):
        method_context("longrope", model, W, 4 * W)
    with pytest.raises(ValueError, match="'lampe' needs a calibrated profile"):
        method_context("lampe", model, W, 4 * W, None)
    with pytest.raises(ValueError, match="length must be an integer >= 1"):
        method_context("pi", model, W, 0)


def test_lampe_methods_take_their_mapping_from_the_profile():
    model = tiny_model("llama")
    profile = LampeConfig(
        head=4, tail=2, sigmoid=SigmoidMapping(a=0.02, b=-1.0, c=30.0), attention_factor=1.1
    )
    with method_context("lampe-fixed", model, W, 4 * W, profile) as session:
        assert session.config.mapping_length == 0.75 * W and session.config.sigmoid is None
        assert (session.config.head, session.config.tail, session.config.attention_factor) == (4, 2, 1.1)
    with method_context("lampe", model, W, 4 * W, profile) as session:
        assert session.config is profile


def test_scaling_rejects_already_scaled_rope():
    model = tiny_model("llama", rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0})
    with pytest.raises(ValueError, match="'pi' rescales plain RoPE.*'linear'"):
        rope_parameters_of(model, "pi")


# --- cached decoding under every registered method (the hook's contract) ------------------------

_DECODE_PROFILE = LampeConfig(head=4, tail=2, sigmoid=SigmoidMapping(a=0.02, b=-1.0, c=24.0))


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_decodes_with_the_cache_as_one_prefill(name):
    """Greedy generate() with the KV cache gives the logits of one prefill of the sequence, for
    every method of the registry (so any method added later is covered)."""
    model = tiny_model("llama")
    ids, new = _ids(3 * W), 6
    with method_context(name, model, W, ids.shape[1] + new, _DECODE_PROFILE):
        sequence, steps = greedy(model, ids, new)
        prefill = _logits(model, sequence)
    assert (steps - prefill[:, ids.shape[1] - 1 : -1]).abs().max().item() <= TOL


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_decodes_a_left_padded_batch_as_each_row_alone(name):
    model = tiny_model("qwen2")
    long, short, new = _ids(3 * W, seed=1), _ids(2 * W + 7, seed=2), 4
    batch, mask = left_padded(long, short)
    with method_context(name, model, W, long.shape[1] + new, _DECODE_PROFILE):
        _, both = greedy(model, batch, new, attention_mask=mask)
        alone = [greedy(model, row, new)[1] for row in (long, short)]
    assert (both[0] - alone[0][0]).abs().max().item() <= TOL
    assert (both[1] - alone[1][0]).abs().max().item() <= TOL
