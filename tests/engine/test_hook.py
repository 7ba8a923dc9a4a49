"""apply_lampe leaves the model as it was, touches no transformers class, and rejects bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM
from transformers.models.llama import modeling_llama

from lampe_calib import LampeConfig, SigmoidMapping, apply_lampe


def _class_state():
    return {
        name: dict(vars(cls))
        for name, cls in vars(modeling_llama).items()
        if isinstance(cls, type) and cls.__module__ == modeling_llama.__name__
    }


def test_model_is_restored_exactly():
    model = tiny_model("llama")
    ids = torch.randint(0, 96, (1, 100))
    before_modules = [(n, id(m)) for n, m in model.named_modules()]
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    impl = model.config._attn_implementation
    # transformers memoizes a capability check on the class the first time anyone calls
    # set_attn_implementation; warm that cache so the snapshot sees only what apply_lampe does.
    model.set_attn_implementation("eager")
    model.set_attn_implementation(impl)
    classes = _class_state()
    with torch.no_grad():
        stock = model(ids).logits
        with apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
            assert type(model.model.layers[0].self_attn).__name__ == "LampeAttention"
            model(ids)
            assert "generate" in vars(model)
        after = model(ids).logits
    assert [(n, id(m)) for n, m in model.named_modules()] == before_modules
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    assert model.config._attn_implementation == impl
    assert "generate" not in vars(model)
    assert _class_state() == classes
    assert torch.equal(after, stock)


def test_model_is_restored_after_an_error():
    model = tiny_model("llama")
    with pytest.raises(RuntimeError, match="boom"):
        with apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
            raise RuntimeError("boom")
    assert type(model.model.layers[0].self_attn).__name__ == "LlamaAttention"
    assert LlamaForCausalLM.generate is type(model).generate


def test_non_rope_model_is_refused():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="gpt2.*rotary"):
        with apply_lampe(model, LampeConfig(mapping_length=100)):
            pass


def test_unsupported_architecture_is_refused():
    from transformers import OlmoConfig, OlmoForCausalLM

    model = OlmoForCausalLM(
        OlmoConfig(
            num_hidden_layers=1,
            hidden_size=32,
            intermediate_size=32,
            num_attention_heads=2,
            vocab_size=50,
            eos_token_id=None,
        )
    )
    with pytest.raises(ValueError, match="'olmo' is not supported.*gemma3_text, phi3"):
        with apply_lampe(model, LampeConfig(mapping_length=100)):
            pass


def test_wrong_second_argument_is_refused():
    with pytest.raises(ValueError, match="LampeConfig or a profile"):
        with apply_lampe(tiny_model("llama"), {"head": 4}):
            pass


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"head": -1, "mapping_length": 100}, "head"),
        ({"tail": -3, "mapping_length": 100}, "tail"),
        ({"head": 1.5, "mapping_length": 100}, "head"),
        ({"head": 32, "tail": 16, "mapping_length": 48}, "mapping_length"),
        ({"mapping_length": float("nan")}, "mapping_length"),
        ({}, "mapping_length"),
        ({"mapping_length": 100, "sigmoid": SigmoidMapping(1e-3, 0.0, 100.0)}, "mapping_length"),
        ({"mapping_length": 100, "mode": "round"}, "mode"),
        ({"mapping_length": 100, "attention_factor": 0}, "attention_factor"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LampeConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs,field",
    [({"a": -1.0}, "sigmoid.a"), ({"c": 0.0}, "sigmoid.c"), ({"b": float("inf")}, "sigmoid.b")],
)
def test_invalid_sigmoid_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SigmoidMapping(**{"a": 1e-3, "b": 0.0, "c": 100.0, **kwargs})


def test_config_round_trips_and_sigmoid_example():
    config = LampeConfig(
        head=8, tail=4, sigmoid=SigmoidMapping(1.0493097327094324e-04, -2.466638011138158, 6204.409324666837)
    )
    assert LampeConfig.from_dict(config.to_dict()) == config
    assert abs(config.mapping_length_for(8192) - 1036.13) < 0.01
    tiny = LampeConfig(head=8, tail=4, sigmoid=SigmoidMapping(1e-3, -20.0, 100.0))
    assert tiny.mapping_length_for(1) == 13.0  # a value below head + tail is raised to head + tail + 1


# --- The transformers hook refuses what it does not understand ------------------------------


def _lampe_inputs(model, length: int = 8):
    hidden = torch.randn(1, length, model.config.hidden_size)
    positions = torch.arange(length)[None]
    return hidden, model.model.rotary_emb(hidden, positions)


def test_swapped_attention_refuses_an_unknown_keyword():
    import transformers

    model = tiny_model("llama")
    with torch.no_grad(), apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
        hidden, rope = _lampe_inputs(model)
        attn = model.model.layers[0].self_attn
        attn(hidden, position_embeddings=rope)  # the known keywords run
        with pytest.raises(TypeError, match=rf"kv_cache.*transformers {transformers.__version__}.*>=5"):
            attn(hidden, position_embeddings=rope, kv_cache=object())


def test_swapped_attention_refuses_two_different_caches():
    from transformers import DynamicCache

    model = tiny_model("llama")
    with torch.no_grad(), apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
        hidden, rope = _lampe_inputs(model)
        attn = model.model.layers[0].self_attn
        with pytest.raises(TypeError, match="two different caches"):
            attn(hidden, position_embeddings=rope, cache=DynamicCache(), past_key_values=DynamicCache())


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_swapped_attention_takes_the_cache_under_either_name(name):
    """The cache filled through either keyword holds this layer's keys (both rotations)."""
    from transformers import DynamicCache

    model = tiny_model("llama")
    cache = DynamicCache()
    with torch.no_grad(), apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
        hidden, rope = _lampe_inputs(model, 40)
        model.model.layers[0].self_attn(hidden, position_embeddings=rope, **{name: cache})
    assert cache.get_seq_length(0) == 40


def test_custom_position_ids_are_refused():
    model = tiny_model("llama")
    ids = torch.randint(0, 96, (1, 40))
    with torch.no_grad(), apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
        model(ids, position_ids=torch.arange(40)[None])  # the default positions run
        with pytest.raises(ValueError, match="position_ids"):
            model(ids, position_ids=torch.arange(40)[None] + 5)


def test_attention_with_an_unknown_signature_is_refused():
    """A future attention interface (here a renamed cache keyword) is refused on entry."""
    from torch import nn

    model = tiny_model("llama")

    class RenamedCache(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.layer_idx = inner, inner.layer_idx

        def forward(self, hidden_states, position_embeddings=None, attention_mask=None, kv_store=None):
            raise AssertionError("never called")

    model.model.layers[0].self_attn = RenamedCache(model.model.layers[0].self_attn)
    with pytest.raises(ValueError, match=r"kv_store.*supported: transformers >=5\.0,<6"):
        with apply_lampe(model, LampeConfig(head=4, tail=2, mapping_length=24)):
            pass
    assert type(model.model.layers[1].self_attn).__name__ == "LlamaAttention"


def test_mask_hook_refuses_an_unknown_keyword_and_keeps_every_tokens_padding():
    from lampe_calib.engine._interface import padding_mask

    assert padding_mask(batch_size=1, kv_length=4, attention_mask=torch.ones(1, 4)) is None
    with pytest.raises(TypeError, match="chunk_size"):
        padding_mask(batch_size=1, kv_length=4, chunk_size=2)
    # A sliding layer whose cache dropped 30 of 40 keys still gets the padding of all 40 tokens
    # (positions count from the first); the engine applies the window itself.
    mask = torch.ones(1, 40, dtype=torch.bool)
    mask[0, :3] = False
    got = padding_mask(batch_size=1, kv_length=10, kv_offset=30, attention_mask=mask, local_size=16)
    assert torch.equal(got, mask)


def test_declared_transformers_range_is_the_supported_one():
    """pyproject.toml declares the range the hook is tested on (both ends in CI)."""
    import re
    from pathlib import Path

    from lampe_calib.engine._hook import SUPPORTED_TRANSFORMERS

    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert re.findall(r'"(transformers[^"]*)"', pyproject) == [f"transformers{SUPPORTED_TRANSFORMERS}"]


def test_ci_floors_are_the_declared_floors():
    """.ci/floor.txt pins each key dependency at the floor pyproject.toml declares."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    pins = dict(re.findall(r"^([\w-]+)==(\S+)$", (root / ".ci" / "floor.txt").read_text(), re.M))
    declared = dict(re.findall(r'"([\w-]+)>=([\d.]+),<\d+"', (root / "pyproject.toml").read_text()))
    assert pins
    for name, version in pins.items():
        assert declared[name] in (version, version.removesuffix(".0")), name
