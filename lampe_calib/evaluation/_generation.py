"""The one generation evaluator: greedy answers to prompts under a method, each scored by its prompt.

Passkey and every RULER task run through ``evaluate_generation``: a prompt holds its token ids
and scores an answer (``PasskeyPrompt.score``, ``RulerSample.score``), so a new generation task
only builds prompts; decoding, contexts and progress are here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["GenerationPrompt", "GenerationResult", "evaluate_generation", "greedy_answer", "mean_score"]

logger = logging.getLogger(__name__)


class GenerationPrompt(Protocol):
    """What ``evaluate_generation`` needs of a prompt: ``input_ids`` ``(1, n)`` int64 and a
    ``score(answer)`` in [0, 1] of the decoded answer."""

    input_ids: torch.Tensor

    def score(self, answer: str) -> float: ...


@dataclass(frozen=True)
class GenerationResult:
    """Each prompt's decoded answer and score, in the order of the prompts."""

    outputs: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def accuracy(self) -> float:
        """The mean score (0 with no prompt)."""
        return mean_score(self.scores)


def mean_score(scores: Sequence[float]) -> float:
    """The mean of ``scores``, 0 when there is none.

    Example: ``mean_score([1.0, 0.0, 0.5])`` -> 0.5; ``mean_score([])`` -> 0.0.
    """
    return sum(scores) / len(scores) if scores else 0.0


def greedy_answer(
    model: nn.Module,
    tokenizer: Any,
    input_ids: torch.Tensor,
    context: Callable[[], AbstractContextManager[Any]] | None,
    max_new_tokens: int,
) -> str:
    """Greedy-decode ``max_new_tokens`` after ``input_ids`` ``(1, n)`` int64 under a fresh
    ``context()`` (None: the stock model) and return the new text, special tokens dropped."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = input_ids.to(device)
    with context() if context is not None else nullcontext(), torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def evaluate_generation(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[GenerationPrompt],
    context: Callable[[], AbstractContextManager[Any]] | None = None,
    max_new_tokens: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Greedy-decode every prompt under a fresh ``context()`` and score each answer.

    Args:
        model: a causal LM on its device.
        tokenizer: its tokenizer (decodes the answers).
        prompts: each with ``input_ids`` ``(1, n)`` int64 and ``score(answer)``.
        context: builds the method's context manager (one per generation); None = stock model.
        max_new_tokens: tokens generated per prompt.
        progress: called as ``progress(done, total)`` after each prompt.
    """
    outputs, scores = [], []
    for index, prompt in enumerate(prompts):
        answer = greedy_answer(model, tokenizer, prompt.input_ids, context, max_new_tokens)
        outputs.append(answer)
        scores.append(float(prompt.score(answer)))
        logger.debug("prompt %d of %d: answer %r, score %.2f", index + 1, len(prompts), answer, scores[-1])
        if progress is not None:
            progress(index + 1, len(prompts))
    return GenerationResult(tuple(outputs), tuple(scores))
