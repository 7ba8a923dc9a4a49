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
    from transformers import GemmaConfig, GemmaForCausalLM

    model = GemmaForCausalLM(
        GemmaConfig(
            num_hidden_layers=1,
            hidden_size=32,
            intermediate_size=32,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            vocab_size=50,
        )
    )
    with pytest.raises(ValueError, match="gemma.*supported"):
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
