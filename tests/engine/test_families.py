"""The families beyond Llama/Mistral/Qwen against the dense fp32 reference, under every method:
Gemma (v1), Gemma 2 (logit soft-capping, hybrid sliding/global layers), Gemma 3 (hybrid layers
with a rotary per layer type, q/k norms, query_pre_attn_scalar), Phi-3 (fused qkv projection)
and Mistral with a sliding window (every layer local)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import (
    HYBRID_FAMILIES,
    TINY_FAMILIES,
    TINY_SLIDING,
    TINY_WINDOW,
    greedy,
    left_padded,
    tiny_model,
)
from dense_reference import dense_lampe, dense_rule, pe_matrix, relative

from lampe_calib import LampeConfig, SigmoidMapping, apply_lampe, model_info
from lampe_calib.engine import _hook
from lampe_calib.engine._family import attention_scale, head_dim_of, layer_spans
from lampe_calib.engine._plan import Piece
from lampe_calib.engine._window import WindowPlan
from lampe_calib.methods import (
    FIXED_MAPPING_FRACTION,
    METHODS,
    RESCALED_BASE_FACTOR,
    method_context,
)
from lampe_calib.methods._dca import DualChunkConfig
from lampe_calib.methods._rerope import ReRopeConfig
from lampe_calib.methods._selfextend import SelfExtendConfig
from lampe_calib.methods._string import StringConfig

TOL = 1e-4  # fp32 through a 3-layer model; the engine's contract
W = TINY_WINDOW
FAMILIES = list(HYBRID_FAMILIES)
PROFILE = LampeConfig(head=4, tail=2, sigmoid=SigmoidMapping(a=0.02, b=-1.0, c=24.0), attention_factor=1.05)


def _ids(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 96, (1, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, use_cache=False, **kwargs).logits


def _rescaled_rotary(model, base: str, scale: float):
    """The model's rotary class built from a config whose global RoPE is ``base`` (yarn or ntk)
    at factor s over the window W, written from the YaRN paper's and NTK's definitions."""
    config = copy.deepcopy(model.config)
    per_type = "full_attention" in config.rope_parameters
    theta = (config.rope_parameters["full_attention"] if per_type else config.rope_parameters)["rope_theta"]
    if base == "yarn":
        params = {"rope_type": "yarn", "rope_theta": theta, "factor": scale}
        params["original_max_position_embeddings"] = W
    else:
        D = head_dim_of(config)
        params = {"rope_type": "default", "rope_theta": theta * scale ** (D / (D - 2))}
    config.rope_parameters = {**config.rope_parameters, "full_attention": params} if per_type else params
    config.max_position_embeddings = W
    return type(model.model.rotary_emb)(config=config)


def _reference(name: str, model, length: int):
    """``(global rotary, PE (L × L), attention factor)`` of method ``name``'s own rule at L, for
    the layers that see the whole input (the reference keeps sliding layers stock); the global
    rotary is None for the model's own."""
    d = relative(length)[2]
    head, tail, factor = PROFILE.head, PROFILE.tail, PROFILE.attention_factor
    schemes = {
        "selfextend": lambda: SelfExtendConfig.recommended(W, length),
        "dca": lambda: DualChunkConfig.recommended(W),
        "string": lambda: StringConfig.recommended(W, length),
        "rerope": lambda: ReRopeConfig.recommended(W),
    }
    if name == "vanilla":
        return None, d, 1.0
    if name == "pi":
        return None, d * W / length, 1.0
    if name in ("ntk", "yarn"):
        return _rescaled_rotary(model, name, length / W), d, 1.0
    if name in schemes:
        scheme = schemes[name]()
        return None, dense_rule(scheme, length), scheme.attention_factor
    if name == "lampe-fixed":
        return None, pe_matrix(length, FIXED_MAPPING_FRACTION * W, head, tail), factor
    if name == "lampe":
        return None, pe_matrix(length, PROFILE.mapping_length_for(length), head, tail), factor
    rotary = _rescaled_rotary(model, name.removeprefix("lampe-"), float(RESCALED_BASE_FACTOR))
    mapping = FIXED_MAPPING_FRACTION * RESCALED_BASE_FACTOR * W
    return rotary, pe_matrix(length, mapping, head, tail), factor


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_matches_the_dense_reference(family, name):
    model = tiny_model(family)
    length = 4 * W
    ids = _ids(length)
    with method_context(name, model, W, length, PROFILE):
        got = _logits(model, ids)
    rotary, pe, factor = _reference(name, model, length)
    with dense_lampe(model, pe, factor, global_rotary=rotary):
        want = _logits(model, ids)
    assert (got - want).abs().max().item() <= TOL


@pytest.mark.parametrize("length,mapping,mode", [(2 * W, 24, "exact"), (3 * W + 5, 40.5, "floor")])
@pytest.mark.parametrize("family", FAMILIES)
def test_lampe_matches_the_dense_reference_at_other_lengths(family, length, mapping, mode):
    model = tiny_model(family)
    ids = _ids(length, seed=length)
    config = LampeConfig(head=4, tail=2, mapping_length=mapping, mode=mode, attention_factor=1.07)
    with apply_lampe(model, config):
        got = _logits(model, ids)
    with dense_lampe(model, pe_matrix(length, mapping, 4, 2, mode), attention_factor=1.07):
        want = _logits(model, ids)
    assert (got - want).abs().max().item() <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_only_layers_that_see_the_whole_input_are_remapped(family):
    """Guards the comparisons: LaMPE changes a model with global layers; with only sliding
    layers (Mistral's window on every layer) it is the stock model, window included."""
    model = tiny_model(family)
    ids = _ids(4 * W)
    stock = _logits(model, ids)
    with apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
        got = _logits(model, ids)
    if all(span.window is not None for span in layer_spans(model.config)):
        assert (got - stock).abs().max().item() <= TOL
    else:
        assert (got - stock).abs().max().item() > 100 * TOL


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_decodes_as_one_prefill_and_a_left_padded_batch_as_each_row(family, name):
    model = tiny_model(family)
    long, short, new = _ids(3 * W, seed=1), _ids(2 * W + 7, seed=2), 4
    batch, mask = left_padded(long, short)
    with method_context(name, model, W, long.shape[1] + new, PROFILE):
        sequence, steps = greedy(model, long, new)
        prefill = _logits(model, sequence)
        _, both = greedy(model, batch, new, attention_mask=mask)
        short_alone = greedy(model, short, new)[1]
    assert (steps - prefill[:, long.shape[1] - 1 : -1]).abs().max().item() <= TOL
    assert (both[0] - steps[0]).abs().max().item() <= TOL
    assert (both[1] - short_alone[0]).abs().max().item() <= TOL


def test_sliding_layers_run_their_window_as_one_band_piece(monkeypatch):
    """Gemma 3's local layers: the fused band piece [0, w − 1] with stock positions, for the
    prefill and every decode step; the dense path (an S × T tile) never runs."""
    model = tiny_model("gemma3")
    plans = []
    fused = _hook.fused_attention

    def spy(queries, keys, values, plan, key_valid, scale, kernels):
        plans.append(plan)
        return fused(queries, keys, values, plan, key_valid, scale, kernels)

    def refuse(*args, **kwargs):
        raise AssertionError("the dense path ran")

    monkeypatch.setattr(_hook, "fused_attention", spy)
    monkeypatch.setattr(_hook, "dense_region_attention", refuse)
    with apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
        greedy(model, _ids(4 * W), 3)
    local = [p for p in plans if isinstance(p, WindowPlan)]
    assert len(local) == 2 * 3 and len(plans) == 3 * 3  # 2 of 3 layers; prefill and 2 steps
    assert all(p.pieces() == (Piece(0, TINY_SLIDING - 1, 0, 0),) and not p.identity for p in local)


@pytest.mark.parametrize("family", ["gemma3", "gemma2"])
def test_rescaling_methods_touch_the_global_layers_rotary_only(family):
    """PI, NTK, YaRN and LaMPE on a rescaled base give the global layer (1 of 3) the rescaled
    table; the sliding layers keep their own (Gemma 3: a table per layer type; Gemma 2: one
    table for both, which the methods may not rescale for the sliding layers)."""
    model = tiny_model(family)
    rotary = model.model.rotary_emb
    hybrid = family == "gemma3"  # one table per layer type
    local = (rotary.sliding_attention_inv_freq if hybrid else rotary.inv_freq).clone()
    full = (rotary.full_attention_inv_freq if hybrid else rotary.inv_freq).clone()
    theta = 5e4 if family == "gemma3" else 1e4
    length = 4 * W
    s, D = length / W, head_dim_of(model.config)
    ntk = 1.0 / (theta * s ** (D / (D - 2))) ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
    expected = {"pi": full / s, "ntk": ntk}
    for name in ("pi", "ntk", "yarn", "lampe-yarn", "lampe-ntk"):
        with method_context(name, model, W, length, PROFILE):
            ropes = [layer.self_attn.session.rope for layer in model.model.layers]
            assert [torch.equal(r.inv_freq, local) for r in ropes] == [True, False, True], name
            assert ropes[0].scale == ropes[2].scale == 1.0, name
            if name in expected:
                assert torch.allclose(ropes[1].inv_freq, expected[name], rtol=1e-6), name
            if name.endswith("yarn"):
                assert ropes[1].scale > 1.0, name  # YaRN's temperature, on the global layer only
        assert model.model.rotary_emb is rotary


@pytest.mark.parametrize("family", list(TINY_FAMILIES) + FAMILIES)
def test_the_family_entry_reads_scale_and_head_size_as_the_model(family):
    model = tiny_model(family)
    for layer in model.model.layers:
        assert attention_scale(model.config) == pytest.approx(layer.self_attn.scaling, rel=1e-12)
        assert head_dim_of(model.config) == layer.self_attn.head_dim
    windows = [span.window for span in layer_spans(model.config)]
    want = {"gemma2": [TINY_SLIDING, None, TINY_SLIDING], "gemma3": [TINY_SLIDING, None, TINY_SLIDING]}
    want["mistral-sliding"] = [TINY_SLIDING] * model.config.num_hidden_layers
    assert windows == want.get(family, [None] * model.config.num_hidden_layers)


def test_model_info_of_a_hybrid_model():
    info = model_info(tiny_model("gemma3"))
    assert (info.family, info.window, info.rope_theta, info.sliding_window) == ("gemma3_text", W, 5e4, 8)
    assert info.head_dim == 16


@pytest.mark.parametrize(
    "family,overrides,message",
    [
        ("phi3", {"partial_rotary_factor": 0.5}, "partial_rotary_factor 0.5 rotates part of each head"),
        ("mistral-sliding", {"sliding_window": 2 * W}, "sliding window 64 exceeds the pretraining window"),
        ("gemma3", {"use_bidirectional_attention": True}, "bidirectional attention"),
    ],
)
def test_what_the_engine_cannot_serve_is_refused(family, overrides, message):
    model = tiny_model(family, **overrides)
    with pytest.raises(ValueError, match=message):
        with apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
            pass


def test_a_loaded_soft_capped_model_attends_with_its_soft_cap(tmp_path):
    """``load_model`` gives Gemma 2 eager attention: SDPA, transformers 5.0's default for it,
    leaves the soft-cap out (the stock model's logits would be another model's)."""
    from char_tokenizer import char_tokenizer

    from lampe_calib import load_model
    from lampe_calib.models._loading import _attend_with_soft_cap

    ids = _ids(2 * W)
    eager = tiny_model("gemma2")
    want = _logits(eager, ids)
    # Saved without an attention choice: loading takes the library's default, then ours.
    tiny_model("gemma2", attn_implementation=None).save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    model, _ = load_model(tmp_path)
    assert model.config._attn_implementation == "eager"
    torch.testing.assert_close(_logits(model, ids), want, rtol=0, atol=0)
    # A model that holds SDPA (whatever the release) is switched to eager.
    eager.config._attn_implementation = "sdpa"
    _attend_with_soft_cap(eager)
    assert eager.config._attn_implementation == "eager"
    torch.testing.assert_close(_logits(eager, ids), want, rtol=0, atol=0)
