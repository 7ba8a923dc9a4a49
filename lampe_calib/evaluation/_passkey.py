"""Passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention", arXiv 2305.16300, §4.2).

The classic prompt, as used by the PI, YaRN, SelfExtend, DCA and LaMPE papers: a task line,
filler sentences repeated to the target length, a random 5-digit pass key stated once at a
chosen depth, and the question. The model must answer the key by greedy decoding through
``generate()``; a trial is correct when the first number it writes is the key.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._generation import evaluate_generation, greedy_answer

__all__ = [
    "PasskeyPrompt",
    "PasskeyResult",
    "PasskeyTrial",
    "build_passkey_prompt",
    "evaluate_passkey",
    "first_number",
    "greedy_answer",
    "passkey_prompts",
]

logger = logging.getLogger(__name__)

TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
# Five digits: 10000..99999 (the papers' keys); the answer needs a few tokens beyond them.
KEY_RANGE = (10000, 99999)
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_NEW_TOKENS = 10


def first_number(text: str) -> str | None:
    """The first run of digits in ``text``, or None.

    Example: ``first_number(" 48213. Remember")`` -> ``"48213"``; ``first_number(" the")`` -> None.
    """
    match = re.search(r"\d+", text)
    return match.group() if match else None


@dataclass(frozen=True)
class PasskeyPrompt:
    """One passkey prompt.

    Args:
        input_ids: ``(1, n)`` int64 token ids, n <= the requested length.
        key: the 5-digit pass key, as text.
        depth: where the key sits in the filler, 0 (start) to 1 (end).
        key_position: index of the needle's first token in ``input_ids``.
    """

    input_ids: torch.Tensor
    key: str
    depth: float
    key_position: int

    def score(self, answer: str) -> float:
        """1 when the first number of ``answer`` is the key, else 0."""
        return float(first_number(answer) == self.key)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def build_passkey_prompt(tokenizer: Any, length: int, depth: float, key: str) -> PasskeyPrompt:
    """The passkey prompt with as many filler sentences as fit in ``length`` tokens.

    Pieces are tokenized separately and joined, so the token count is exact; the key goes after
    ``round(depth · k)`` of the k filler repetitions. Special tokens the tokenizer puts in front
    of a text (a BOS) come first.

    Example: with a 25-token filler and ``length=1000``, k = 35 and depth 0.5 puts the key
    after 18 of them (the prompt then has about 960 tokens).
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth!r}")
    prefix = list(tokenizer("", add_special_tokens=True)["input_ids"])
    task, filler = _encode(tokenizer, TASK), _encode(tokenizer, FILLER)
    needle, question = _encode(tokenizer, NEEDLE.format(key=key)), _encode(tokenizer, QUESTION)
    fixed = len(prefix) + len(task) + len(needle) + len(question)
    repeats = (length - fixed) // len(filler)
    if repeats < 1:
        raise ValueError(
            f"length {length} is too short for a passkey prompt (needs at least {fixed + len(filler)} tokens)"
        )
    before = round(depth * repeats)
    head = prefix + task + filler * before
    ids = head + needle + filler * (repeats - before) + question
    assert len(ids) <= length
    return PasskeyPrompt(torch.tensor([ids], dtype=torch.long), key, depth, len(head))


def passkey_prompts(
    tokenizer: Any, length: int, depths: Sequence[float] = DEFAULT_DEPTHS, samples: int = 1, seed: int = 0
) -> list[PasskeyPrompt]:
    """``samples`` prompts per depth, keys drawn from ``random.Random(seed)`` (the same keys for
    every method and length with the same seed).

    Example: ``len(passkey_prompts(tok, 1024, depths=(0.0, 0.5, 1.0), samples=2))`` -> 6.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples!r}")
    rng = random.Random(seed)
    keys = [str(rng.randint(*KEY_RANGE)) for _ in range(samples * len(depths))]
    return [
        build_passkey_prompt(tokenizer, length, depth, keys[d * samples + s])
        for d, depth in enumerate(depths)
        for s in range(samples)
    ]


@dataclass(frozen=True)
class PasskeyTrial:
    """One generation: the prompt's key and depth, the decoded answer, its verdict."""

    key: str
    depth: float
    prompt_tokens: int
    answer: str
    correct: bool


@dataclass(frozen=True)
class PasskeyResult:
    """All trials at one length."""

    length: int
    trials: tuple[PasskeyTrial, ...]

    @property
    def correct(self) -> int:
        return sum(trial.correct for trial in self.trials)

    @property
    def accuracy(self) -> float:
        """Fraction of correct trials (0 with no trial)."""
        return self.correct / len(self.trials) if self.trials else 0.0


def evaluate_passkey(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[PasskeyPrompt],
    length: int,
    context: Callable[[], AbstractContextManager[Any]] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: Callable[[int, int], None] | None = None,
) -> PasskeyResult:
    """Greedy-decode every prompt under a fresh ``context()`` and score the answers
    (``_generation.evaluate_generation``, kept as trials with their keys and depths).

    Args:
        model: a causal LM on its device.
        tokenizer: its tokenizer (decodes the answers).
        prompts: from ``passkey_prompts`` (each ``(1, n)``).
        length: the nominal length, recorded in the result.
        context: builds the method's context manager (one per generation); None = stock model.
        max_new_tokens: tokens generated per prompt.
        progress: called as ``progress(done, total)`` after each prompt.
    """
    result = evaluate_generation(model, tokenizer, prompts, context, max_new_tokens, progress)
    trials = tuple(
        PasskeyTrial(p.key, p.depth, p.input_ids.shape[1], answer, score == 1.0)
        for p, answer, score in zip(prompts, result.outputs, result.scores, strict=True)
    )
    logger.debug("passkey L=%d: %d of %d keys found", length, sum(t.correct for t in trials), len(trials))
    return PasskeyResult(length, trials)
