"""Shared fixtures: tiny random models of every supported family (built offline)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

# Pretraining window of the tiny models: lengths up to 4·W stay cheap for the dense reference.
TINY_WINDOW = 32

_COMMON = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=TINY_WINDOW,
    # Larger than the usual 0.02 so that positions move the logits well above the test tolerance.
    initializer_range=0.1,
)

TINY_FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "mistral": (MistralConfig, MistralForCausalLM, {"sliding_window": None}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),  # q/k/v biases
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"head_dim": 16}),  # q/k norms
}

# Sliding window of the hybrid tiny models: a quarter of W, so 4·W inputs cut it 16 times.
TINY_SLIDING = 8
_GEMMA = {"head_dim": 16, "query_pre_attn_scalar": 24}  # a scale that is not D ** -0.5
# Families with sliding-window layers, soft-capping or fused projections (tests/engine/test_families.py).
HYBRID_FAMILIES = {
    "gemma": (GemmaConfig, GemmaForCausalLM, {"head_dim": 16}),
    "gemma2": (
        Gemma2Config,
        Gemma2ForCausalLM,
        # Sliding, global, sliding; a soft-cap low enough to bend the logits of these weights.
        # Eager attention for the stock model: transformers 5.0 gives Gemma 2 SDPA by default,
        # which leaves the soft-cap out; later releases choose eager themselves.
        {
            **_GEMMA,
            "num_hidden_layers": 3,
            "sliding_window": TINY_SLIDING,
            "attn_logit_softcapping": 2.0,
            "attn_implementation": "eager",
        },
    ),
    "gemma3": (
        Gemma3TextConfig,
        Gemma3ForCausalLM,
        {
            **_GEMMA,
            "num_hidden_layers": 3,
            "sliding_window": TINY_SLIDING,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            # Each layer type its own base, as Gemma 3 (1e4 local, 1e6 global; smaller here so
            # that positions move these tiny logits).
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                "full_attention": {"rope_type": "default", "rope_theta": 5e4},
            },
        },
    ),
    "phi3": (Phi3Config, Phi3ForCausalLM, {"pad_token_id": 0, "eos_token_id": 2}),  # one fused qkv_proj
    "mistral-sliding": (MistralConfig, MistralForCausalLM, {"sliding_window": TINY_SLIDING}),
}


def tiny_model(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A small random model of `family` (``TINY_FAMILIES`` or ``HYBRID_FAMILIES``) in fp32 eval mode."""
    config_cls, model_cls, extra = {**TINY_FAMILIES, **HYBRID_FAMILIES}[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**_COMMON, **extra, **overrides})).eval()
    if family == "qwen2":  # random biases, so a wrong bias path cannot pass by accident
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    if family in HYBRID_FAMILIES:  # greedy runs of a batch never stop early at an end token
        model.generation_config.eos_token_id = None
    return model


@pytest.fixture(params=list(TINY_FAMILIES))
def family_model(request) -> torch.nn.Module:
    return tiny_model(request.param)


def left_padded(*rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, n_b)`` token rows -> a left-padded ``(B, max n)`` batch (pad id 0) and its mask."""
    width = max(r.shape[-1] for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - r.shape[-1] :] = r
        mask[b, width - r.shape[-1] :] = 1
    return ids, mask


def greedy(model, ids: torch.Tensor, new: int, attention_mask: torch.Tensor | None = None):
    """Greedy ``generate()`` with the KV cache: ``(sequences (B, S + new), step logits (B, new, V))``.

    The mask is always passed: generate() would otherwise take the pad id 0 inside random prompts
    for padding."""
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=new,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    return out.sequences, torch.stack(out.logits, dim=1)


@pytest.fixture(autouse=True)
def user_profiles_home(tmp_path_factory, monkeypatch: pytest.MonkeyPatch):
    """Each test's own ``LAMPE_CALIB_HOME``: no test reads or writes the real user's profiles."""
    home = tmp_path_factory.mktemp("lampe-home")
    monkeypatch.setenv("LAMPE_CALIB_HOME", str(home))
    return home
