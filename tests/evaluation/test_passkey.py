"""Passkey prompts, scoring, and generation under every method (offline, character tokenizer)."""

from __future__ import annotations

import pytest
import torch
from char_tokenizer import char_tokenizer
from conftest import TINY_WINDOW, tiny_model

from lampe_calib import LampeConfig
from lampe_calib.evaluation._passkey import (
    FILLER,
    NEEDLE,
    QUESTION,
    TASK,
    build_passkey_prompt,
    evaluate_passkey,
    first_number,
    passkey_prompts,
)
from lampe_calib.methods import METHODS, method_context

W = TINY_WINDOW


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


def test_first_number():
    assert first_number(" 48213. Remember it.") == "48213"
    assert first_number("key is 0123 and 99") == "0123"
    assert first_number(" the pass key") is None


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_prompt_layout_and_length(tokenizer, depth):
    length = 1000
    prompt = build_passkey_prompt(tokenizer, length, depth, "48213")
    ids = prompt.input_ids[0].tolist()
    fixed = 1 + len(TASK) + len(NEEDLE.format(key="48213")) + len(QUESTION)
    repeats = (length - fixed) // len(FILLER)
    assert len(ids) == fixed + repeats * len(FILLER) <= length < len(ids) + len(FILLER)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith(TASK) and text.endswith(QUESTION)
    assert text.count("48213") == 2
    needle = tokenizer.decode(ids[prompt.key_position :], skip_special_tokens=True)
    assert needle.startswith(NEEDLE.format(key="48213"))
    before = round(depth * repeats)
    assert prompt.key_position == 1 + len(TASK) + before * len(FILLER)


def test_prompts_are_reproducible_five_digit_keys(tokenizer):
    a = passkey_prompts(tokenizer, 600, depths=(0.0, 0.5, 1.0), samples=2, seed=7)
    b = passkey_prompts(tokenizer, 900, depths=(0.0, 0.5, 1.0), samples=2, seed=7)
    c = passkey_prompts(tokenizer, 600, depths=(0.0, 0.5, 1.0), samples=2, seed=8)
    assert [p.key for p in a] == [p.key for p in b] != [p.key for p in c]
    assert [p.depth for p in a] == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    assert all(len(p.key) == 5 and p.key.isdigit() for p in a)
    assert len({p.key for p in a}) > 1


def test_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="depth"):
        build_passkey_prompt(tokenizer, 1000, 1.5, "12345")
    with pytest.raises(ValueError, match="length 100 is too short"):
        build_passkey_prompt(tokenizer, 100, 0.5, "12345")
    with pytest.raises(ValueError, match="samples"):
        passkey_prompts(tokenizer, 1000, samples=0)


class _Oracle(torch.nn.Module):
    """Answers with the key it finds in the prompt (or a wrong one), and counts its contexts."""

    def __init__(self, tokenizer, wrong: bool = False) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.wrong, self.entered = tokenizer, wrong, 0

    def generate(self, ids, attention_mask, max_new_tokens, do_sample, pad_token_id):
        assert not do_sample and attention_mask.shape == ids.shape
        key = first_number(self.tokenizer.decode(ids[0]))
        answer = f" {'00000' if self.wrong else key}. Remember"
        new = self.tokenizer.encode(answer, add_special_tokens=False)[:max_new_tokens]
        return torch.cat([ids, torch.tensor([new])], dim=1)


@pytest.mark.parametrize("wrong,accuracy", [(False, 1.0), (True, 0.0)])
def test_evaluate_scores_answers_and_enters_one_context_per_prompt(tokenizer, wrong, accuracy):
    oracle = _Oracle(tokenizer, wrong)
    prompts = passkey_prompts(tokenizer, 800, depths=(0.0, 1.0), samples=2)
    seen = []

    class Counting:
        def __enter__(self):
            oracle.entered += 1

        def __exit__(self, *exc):
            return False

    result = evaluate_passkey(
        oracle,
        tokenizer,
        prompts,
        800,
        context=Counting,
        max_new_tokens=8,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.accuracy == accuracy and result.correct == 4 * accuracy and len(result.trials) == 4
    assert oracle.entered == 4 and seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [t.key for t in result.trials] == [p.key for p in prompts]


@pytest.mark.parametrize("name", list(METHODS))
def test_generation_runs_under_every_method(tokenizer, name):
    # A random model answers garbage; what must hold is that generate() runs under each
    # method at 12·W and the model comes back unchanged.
    model = tiny_model("llama", vocab_size=len(tokenizer))
    length, new = 12 * W, 4
    prompts = [build_passkey_prompt(tokenizer, length - new, 0.5, "12345")]
    profile = LampeConfig(head=4, tail=2, mapping_length=24)
    result = evaluate_passkey(
        model,
        tokenizer,
        prompts,
        length,
        context=lambda: method_context(name, model, W, length, profile),
        max_new_tokens=new,
    )
    (trial,) = result.trials
    assert trial.prompt_tokens <= length - new and isinstance(trial.answer, str)
    assert model.model.layers[0].self_attn.__class__.__name__ == "LlamaAttention"


def test_one_generation_evaluator_scores_each_prompt_by_its_own_answer(tokenizer):
    """Passkey prompts and RULER samples go through the same evaluator, each scored by itself."""
    from lampe_calib.evaluation._generation import evaluate_generation
    from lampe_calib.evaluation._ruler import RulerSources, ruler_samples

    oracle = _Oracle(tokenizer)  # answers the first number of the prompt
    keys = passkey_prompts(tokenizer, 800, depths=(0.0, 1.0), samples=1)
    needle = ruler_samples(tokenizer, "niah_single", 800, sources=RulerSources.from_texts(["word " * 5]))
    result = evaluate_generation(oracle, tokenizer, [*keys, *needle], max_new_tokens=12)
    assert result.scores == (1.0, 1.0, 1.0) and result.accuracy == 1.0
    assert [first_number(o) for o in result.outputs] == [keys[0].key, keys[1].key, needle[0].answers[0]]
    wrong = evaluate_generation(_Oracle(tokenizer, wrong=True), tokenizer, keys, max_new_tokens=12)
    assert (
        wrong.scores == (0.0, 0.0)
        and evaluate_passkey(_Oracle(tokenizer, wrong=True), tokenizer, keys, 800, max_new_tokens=12).correct
        == 0
    )
