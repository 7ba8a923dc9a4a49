"""Helpers for the calibration tests: an offline BPE tokenizer, tiny Llama models, book files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from char_tokenizer import char_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SAMPLE = Path(__file__).resolve().parents[1] / "lampe_calib" / "assets" / "pg19_sample" / "validation.jsonl"
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "lampe_calib" / "assets" / "reference"
TINY_W = 32


def sample_texts(count: int = 3, chars: int = 20_000) -> list[str]:
    """The first ``chars`` characters of the first ``count`` books of the shipped PG-19 sample."""
    with SAMPLE.open(encoding="utf-8") as f:
        return [json.loads(line)["text"][:chars] for _, line in zip(range(count), f, strict=False)]


def bpe_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in memory on a little PG-19 text (offline, well under a second)."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(sample_texts(2, 30_000), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>")


def tiny_llama(vocab_size: int = 128, window: int = TINY_W, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer random Llama with window ``window`` in fp32 eval mode."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=window,
        initializer_range=0.1,
    )
    return LlamaForCausalLM(config).eval()


def tiny_model_dir(path: Path, window: int = TINY_W) -> Path:
    """A tiny random Llama and a character tokenizer saved as a local model directory."""
    tokenizer = char_tokenizer()
    model = tiny_llama(vocab_size=len(tokenizer), window=window)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, texts: list[str], **fields: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            row = {"text": text, **{k: v[i] for k, v in fields.items()}}
            f.write(json.dumps(row) + "\n")
    return path


def minimal_profile(window: int = TINY_W) -> dict:
    """A minimal valid profile (schema 1) for the tiny models: imported m(L), no curves."""
    return {
        "schema_version": 1,
        "model": {"alias": "tiny", "source": None, "revision": None},
        "window": window,
        "rope": {"theta": 10000.0, "type": "default", "scaling": {}},
        "lampe": {"head": 4, "tail": 2, "mode": "exact", "attention_factor": 1.0},
        "sigmoid": {
            "status": "imported",
            "a": 0.02,
            "b": -1.0,
            "c": 24.0,
            "c_mode": "free",
            "r2": None,
            "ci": None,
        },
        "curves": [],
        "provenance": {"imported": True},
    }
