"""LaMPE on a rescaled RoPE base (``lampe-yarn``, ``lampe-ntk``) against a dense reference: the
same weights under a model built with the YaRN/NTK config, run with LaMPE's relative positions."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import TINY_WINDOW, tiny_model
from dense_reference import dense_lampe, pe_matrix

from lampe_calib import LampeConfig
from lampe_calib.methods import FIXED_MAPPING_FRACTION, RESCALED_BASE_FACTOR, method_context

TOL = 1e-4  # fp32 through a 2-layer model; the engine's contract
W = TINY_WINDOW
PROFILE = LampeConfig(head=4, tail=2, mapping_length=24, attention_factor=1.1)


def _ids(length: int) -> torch.Tensor:
    return torch.randint(0, 96, (1, length), generator=torch.Generator().manual_seed(0))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def _rescaled_twin(model, base: str) -> torch.nn.Module:
    """The same weights in a model whose config carries the rescaled base (factor s, window W),
    written from the YaRN paper's and NTK's definitions, not through swap_rope_parameters."""
    config = copy.deepcopy(model.config)
    theta = config.rope_parameters["rope_theta"]
    s = RESCALED_BASE_FACTOR
    if base == "yarn":
        config.rope_parameters = {
            "rope_type": "yarn",
            "rope_theta": theta,
            "factor": float(s),
            "original_max_position_embeddings": W,
        }
    else:
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        config.rope_parameters = {"rope_type": "default", "rope_theta": theta * s ** (dim / (dim - 2))}
    config.max_position_embeddings = W
    twin = type(model)(config).eval()
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.mark.parametrize("base", ["yarn", "ntk"])
@pytest.mark.parametrize("length", [2 * W, 4 * W])
def test_lampe_on_a_rescaled_base_equals_the_dense_reference(family_model, base, length):
    ids = _ids(length)
    mapping = FIXED_MAPPING_FRACTION * RESCALED_BASE_FACTOR * W
    assert mapping < length  # LaMPE compresses at both lengths
    twin = _rescaled_twin(family_model, base)
    if base == "yarn":
        assert twin.model.rotary_emb.attention_scaling == pytest.approx(0.1 * math.log(2) + 1)
    with dense_lampe(twin, pe_matrix(length, mapping, PROFILE.head, PROFILE.tail), PROFILE.attention_factor):
        want = _logits(twin, ids)
    with method_context(f"lampe-{base}", family_model, W, length, PROFILE) as session:
        got = _logits(family_model, ids)
        assert session.config.mapping_length == mapping and session.config.head == PROFILE.head
    assert (got - want).abs().max().item() <= TOL
    # The base matters: LaMPE with the same mapping on the stock rotary is another model.
    with dense_lampe(
        family_model, pe_matrix(length, mapping, PROFILE.head, PROFILE.tail), PROFILE.attention_factor
    ):
        stock_base = _logits(family_model, ids)
    assert (got - stock_base).abs().max().item() > 100 * TOL


@pytest.mark.parametrize("name", ["lampe-yarn", "lampe-ntk"])
def test_rescaled_lampe_is_stock_within_the_window_and_restores_the_model(name):
    model = tiny_model("llama")
    ids = _ids(W)
    stock = _logits(model, ids)
    rotary = model.model.rotary_emb
    with method_context(name, model, W, W, PROFILE):
        assert torch.equal(_logits(model, ids), stock)
    with method_context(name, model, W, 4 * W, LampeConfig(head=4, tail=2, mapping_length=24)) as session:
        assert model.model.rotary_emb is not rotary
        assert session.rope.inv_freq.equal(model.model.rotary_emb.inv_freq.float())
        assert session.config.mapping_length == 0.75 * 2 * W and session.config.attention_factor == 1.0
    assert model.model.rotary_emb is rotary and torch.equal(_logits(model, ids), stock)
