"""RULER-style synthetic tasks (Hsieh et al. 2024, "RULER", arXiv 2404.06654), built offline.

The LaMPE paper's headline benchmark is RULER; this module builds a subset of its task families
from material that ships with the package, so any model can be scored without downloads:

- ``niah_single``: one needle ("the special number for KEY is VALUE") in repeated filler
  sentences; the answer is VALUE.
- ``niah_multikey``: four needles with different keys in a PG-19 book passage (the shipped
  sample); one key is asked.
- ``vt`` (variable tracking): two chains ``VAR A = 12345``, ``VAR B = VAR A``, ... of five
  variables each, spread through filler; every variable of the asked chain is an answer.
- ``cwe`` (common words extraction): a numbered list of words in which five words appear six
  times each and every other word once; the five frequent words are the answers.

Prompts are assembled from separately tokenized pieces (like ``_passkey``), so a prompt has at
most the requested number of tokens and falls short of it by less than one filler piece. Every
draw comes from ``random.Random`` seeded by (task, seed, sample index): the same seed gives the
same keys, values and depths at every length and for every method.

Scoring follows RULER's ``string_match_all``: the fraction of the answers found in the model's
output, so a sample scores in [0, 1]; here a match must be a whole word (case-insensitive),
so that "art" is not found in "party".
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

from .._checks import check_integer
from ._generation import evaluate_generation, mean_score
from ._passkey import _encode
from ._ruler_prompts import (
    RulerSources,
    assemble,
    book_units,
    filler_units,
    random_name,
    random_number,
)

__all__ = [
    "DEFAULT_NEW_TOKENS",
    "RULER_TASKS",
    "TASKS",
    "RulerResult",
    "RulerSample",
    "RulerSources",
    "RulerTask",
    "evaluate_ruler",
    "ruler_samples",
    "score_answer",
]

logger = logging.getLogger(__name__)

NIAH_TASK = (
    "Some special numbers are hidden in the text below. Memorize them: you will be asked for "
    "one of them afterwards."
)
NIAH_NEEDLE = " The special number for {key} is {value}."
NIAH_QUESTION = " What is the special number for {key}? The special number for {key} is"
MULTIKEY_NEEDLES = 4  # needles per multikey prompt; one of them is asked
VT_TASK = "Memorize the variable assignments hidden in the text below."
VT_VALUE = " VAR {name} = {value}."
VT_COPY = " VAR {name} = VAR {source}."
VT_QUESTION = (
    " Question: which variables are assigned the value {value}, directly or through other "
    "variables? Answer: the variables assigned {value} are:"
)
VT_CHAINS, VT_HOPS = 2, 4  # chains per prompt (the first is asked), copies per chain
CWE_TASK = "Below is a numbered list of words. Some of the words appear more often than others."
CWE_ITEM = " {number}. {word}"
CWE_QUESTION = (
    " Question: what are the {k} most frequent words in the list above? Answer: the {k} most "
    "frequent words are:"
)
CWE_COMMON, CWE_COMMON_FREQ = 5, 6  # five words six times each; every other word once


@dataclass(frozen=True)
class RulerSample:
    """One prompt and its answers.

    Args:
        task: one of ``TASKS``.
        input_ids: ``(1, n)`` int64 token ids, n <= the requested prompt length.
        answers: the strings a correct output contains (one for niah, several for vt and cwe).
    """

    task: str
    input_ids: torch.Tensor
    answers: tuple[str, ...]

    def score(self, answer: str) -> float:
        """``score_answer`` of ``answer`` against this prompt's answers."""
        return score_answer(answer, self.answers)


def score_answer(prediction: str, answers: Sequence[str]) -> float:
    """The fraction of ``answers`` that appear in ``prediction`` as whole words, ignoring case.

    Example: ``score_answer(" ABCDE, FGHIJ and more", ["ABCDE", "FGHIJ", "KLMNO", "PQRST"])``
    -> 0.5; ``score_answer(" 1234567.", ["1234567"])`` -> 1.0; ``score_answer(" 12345678",
    ["1234567"])`` -> 0.0.
    """
    if not answers:
        raise ValueError("answers must not be empty")
    found = sum(
        re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", prediction, re.IGNORECASE) is not None
        for answer in answers
    )
    return found / len(answers)


def _niah_single(tokenizer, budget, rng, sources):
    """One needle at a random depth of repeated filler.

    Example (text): "Some special numbers are hidden ... The grass is green. ... The special
    number for harbour is 4076131. ... What is the special number for harbour? The special
    number for harbour is" -> answers ``("4076131",)``.
    """
    key, value, depth = rng.choice(sources.words), random_number(rng, 7), rng.random()
    needle = NIAH_NEEDLE.format(key=key, value=value)
    ids = assemble(
        tokenizer,
        budget,
        NIAH_TASK,
        filler_units(tokenizer),
        [(depth, needle)],
        NIAH_QUESTION.format(key=key),
    )
    return ids, (value,)


def _niah_multikey(tokenizer, budget, rng, sources):
    """Four needles with distinct keys and values at random depths of a book passage; one asked.

    Example (text): "... The special number for window is 1870044. ... The special number for
    letter is 5521907. ... What is the special number for letter? ..." -> ``("5521907",)``.
    """
    keys = rng.sample(sources.words, MULTIKEY_NEEDLES)
    values = [random_number(rng, 7) for _ in keys]
    asked = rng.randrange(MULTIKEY_NEEDLES)
    needles = sorted(
        (rng.random(), NIAH_NEEDLE.format(key=k, value=v)) for k, v in zip(keys, values, strict=True)
    )
    units = book_units(tokenizer, rng, sources.books)
    ids = assemble(tokenizer, budget, NIAH_TASK, units, needles, NIAH_QUESTION.format(key=keys[asked]))
    return ids, (values[asked],)


def _vt(tokenizer, budget, rng, sources):
    """Two chains of variable copies in filler, each chain in order; the first chain is asked.

    Example (text): "... VAR QWERT = 50412. ... VAR ASDFG = VAR QWERT. ... VAR ZXCVB = VAR
    ASDFG. ..." (and another chain) -> every name of the chain of 50412:
    ``("QWERT", "ASDFG", "ZXCVB", ...)``.
    """
    names: list[str] = []
    while len(names) < VT_CHAINS * (VT_HOPS + 1):
        name = random_name(rng)
        if name not in names:
            names.append(name)
    values = rng.sample(range(10000, 100000), VT_CHAINS)
    inserts = []
    for chain in range(VT_CHAINS):
        members = names[chain * (VT_HOPS + 1) : (chain + 1) * (VT_HOPS + 1)]
        depths = sorted(rng.random() for _ in members)
        inserts.append((depths[0], VT_VALUE.format(name=members[0], value=values[chain])))
        for depth, source, name in zip(depths[1:], members[:-1], members[1:], strict=True):
            inserts.append((depth, VT_COPY.format(name=name, source=source)))
    inserts.sort(key=lambda item: item[0])  # stable: a chain's statements keep their order
    question = VT_QUESTION.format(value=values[0])
    ids = assemble(tokenizer, budget, VT_TASK, filler_units(tokenizer), inserts, question)
    return ids, tuple(names[: VT_HOPS + 1])


def _cwe(tokenizer, budget, rng, sources):
    """A shuffled numbered list: five words six times each, as many other words once as fit.

    Example (text): "Below is a numbered list of words. ... 1. river 2. garden 3. river
    4. silence ... Question: what are the 5 most frequent words ..." -> the five frequent words.
    """
    if len(sources.words) < CWE_COMMON + 1:
        raise ValueError(
            f"cwe needs more than {CWE_COMMON} distinct words, the sources hold {len(sources.words)}"
        )
    pool = list(sources.words)
    rng.shuffle(pool)
    common, rare = pool[:CWE_COMMON], pool[CWE_COMMON:]
    order_seed = rng.random()
    head, tail = CWE_TASK, CWE_QUESTION.format(k=CWE_COMMON)

    def build(k: int) -> list[int]:
        words = common * CWE_COMMON_FREQ + rare[:k]
        random.Random(order_seed).shuffle(words)
        items = "".join(CWE_ITEM.format(number=n, word=w) for n, w in enumerate(words, 1))
        prefix = list(tokenizer("", add_special_tokens=True)["input_ids"])
        return prefix + _encode(tokenizer, head) + _encode(tokenizer, items) + _encode(tokenizer, tail)

    # The most rare words that fit (binary search: the token count grows with k).
    low, high = 0, len(rare)
    if len(build(0)) > budget:
        raise ValueError(f"length {budget} is too short for cwe (it needs {len(build(0))} tokens)")
    while low < high:
        middle = (low + high + 1) // 2
        if len(build(middle)) <= budget:
            low = middle
        else:
            high = middle - 1
    return build(low), tuple(common)


@dataclass(frozen=True)
class RulerTask:
    """One RULER task: its name, the tokens generated per prompt by default, and the builder of
    a prompt, ``build(tokenizer, budget, rng, sources) -> (token ids, answers)``."""

    name: str
    new_tokens: int
    build: Callable[[Any, int, random.Random, RulerSources], tuple[list[int], tuple[str, ...]]]


# The tasks, in the order they run. Tokens generated per prompt: room for the answers (a 7-digit
# number; five variable names or five words with separators) and a few tokens of lead-in.
RULER_TASKS = {
    task.name: task
    for task in (
        RulerTask("niah_single", 16, _niah_single),
        RulerTask("niah_multikey", 16, _niah_multikey),
        RulerTask("vt", 32, _vt),
        RulerTask("cwe", 40, _cwe),
    )
}
TASKS = tuple(RULER_TASKS)
DEFAULT_NEW_TOKENS = {name: task.new_tokens for name, task in RULER_TASKS.items()}


def ruler_samples(
    tokenizer: Any,
    task: str,
    length: int,
    samples: int = 1,
    seed: int = 0,
    sources: RulerSources | None = None,
) -> list[RulerSample]:
    """``samples`` prompts of ``task`` with at most ``length`` tokens each.

    Args:
        tokenizer: a transformers tokenizer.
        task: one of ``TASKS``.
        length: the prompt's token budget (the generated tokens come on top).
        samples: number of prompts.
        seed: draws keys, values, depths and passages (sample i uses ``(task, seed, i)``).
        sources: books and words; None loads ``RulerSources.shipped()``.

    Example: ``[s.answers for s in ruler_samples(tok, "niah_single", 1024, samples=2)]``
    -> ``[("4076131",), ("9081234",)]``, the same on every call.
    """
    if task not in RULER_TASKS:
        raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    check_integer("samples", samples, 1)
    sources = sources if sources is not None else RulerSources.shipped()
    result = []
    for index in range(samples):
        rng = random.Random(f"{task}:{seed}:{index}")
        ids, answers = RULER_TASKS[task].build(tokenizer, length, rng, sources)
        result.append(RulerSample(task, torch.tensor([ids], dtype=torch.long), answers))
    return result


@dataclass(frozen=True)
class RulerResult:
    """The scores of one task at one length (one score in [0, 1] per sample)."""

    task: str
    length: int
    scores: tuple[float, ...]
    outputs: tuple[str, ...]

    @property
    def accuracy(self) -> float:
        """The mean score (0 with no sample)."""
        return mean_score(self.scores)


def evaluate_ruler(
    model: nn.Module,
    tokenizer: Any,
    samples: Sequence[RulerSample],
    length: int,
    context: Callable[[], AbstractContextManager[Any]] | None = None,
    max_new_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RulerResult:
    """Greedy-decode every sample (one task) under a fresh ``context()`` and score the outputs
    (``_generation.evaluate_generation``).

    Args:
        model: a causal LM on its device.
        tokenizer: its tokenizer.
        samples: from ``ruler_samples``, all of one task.
        length: the nominal length, recorded in the result.
        context: builds the method's context manager (one per generation); None = stock model.
        max_new_tokens: tokens generated per prompt; None: ``DEFAULT_NEW_TOKENS`` of the task.
        progress: called as ``progress(done, total)`` after each sample.
    """
    tasks = {sample.task for sample in samples}
    if len(tasks) != 1:
        raise ValueError(f"samples must all be of one task, got {sorted(tasks)}")
    (task,) = tasks
    new = max_new_tokens if max_new_tokens is not None else DEFAULT_NEW_TOKENS[task]
    result = evaluate_generation(model, tokenizer, samples, context, new, progress)
    logger.debug("ruler %s L=%d: mean score %.3f", task, length, result.accuracy)
    return RulerResult(task, length, result.scores, result.outputs)
