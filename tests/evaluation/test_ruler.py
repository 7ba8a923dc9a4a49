"""RULER-style tasks (lampe_calib/_ruler.py): determinism, recoverable answers, token budgets,
scoring, and every method on every task through ``lampe-eval ruler`` (character tokenizer)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import torch
from calib_support import minimal_profile
from char_tokenizer import char_tokenizer
from conftest import TINY_WINDOW, tiny_model

from lampe_calib.cli import eval_main
from lampe_calib.evaluation._passkey import FILLER
from lampe_calib.evaluation._ruler import (
    CWE_COMMON,
    CWE_COMMON_FREQ,
    DEFAULT_NEW_TOKENS,
    TASKS,
    VT_HOPS,
    RulerSample,
    RulerSources,
    evaluate_ruler,
    ruler_samples,
    score_answer,
)
from lampe_calib.methods import METHODS

W = TINY_WINDOW


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def sources():
    return RulerSources.shipped()


def _text(tokenizer, sample: RulerSample) -> str:
    return tokenizer.decode(sample.input_ids[0], skip_special_tokens=True)


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_per_seed_and_different_across_seeds(tokenizer, sources, task):
    a = ruler_samples(tokenizer, task, 1500, samples=3, seed=1, sources=sources)
    b = ruler_samples(tokenizer, task, 1500, samples=3, seed=1, sources=sources)
    c = ruler_samples(tokenizer, task, 1500, samples=3, seed=2, sources=sources)
    assert [s.answers for s in a] == [s.answers for s in b]
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(a, b, strict=True))
    assert [s.answers for s in a] != [s.answers for s in c]
    assert len({s.answers for s in a}) == 3  # the samples of one seed differ too


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length", [700, 1500, 3000])
def test_prompts_fill_the_budget(tokenizer, sources, task, length):
    # Short of the budget by less than one haystack piece: a filler repetition, a book sentence
    # (cut at 400 characters) or, for cwe, one list item.
    slack = {"niah_single": len(FILLER), "vt": len(FILLER), "niah_multikey": 401, "cwe": 16}[task]
    for sample in ruler_samples(tokenizer, task, length, samples=2, sources=sources):
        assert length - slack < sample.input_ids.shape[1] <= length


def test_niah_answers_are_in_the_prompt(tokenizer, sources):
    for task, needles in (("niah_single", 1), ("niah_multikey", 4)):
        for sample in ruler_samples(tokenizer, task, 2000, samples=4, sources=sources):
            text = _text(tokenizer, sample)
            (value,) = sample.answers
            found = dict(re.findall(r"The special number for (\w+) is (\d{7})\.", text))
            asked = re.search(r"What is the special number for (\w+)\?", text).group(1)
            assert len(found) == needles and found[asked] == value
            assert text.count(value) == 1


def test_vt_chain_resolves_to_the_answers(tokenizer, sources):
    for sample in ruler_samples(tokenizer, "vt", 2000, samples=4, sources=sources):
        text = _text(tokenizer, sample)
        value = {}
        for name, source in re.findall(r"VAR (\w+) = (VAR \w+|\d+)\.", text):
            # in order of appearance: a copy's source is always assigned before it
            value[name] = value[source[4:]] if source.startswith("VAR ") else source
        asked = re.search(r"assigned the value (\d+),", text).group(1)
        holders = {name for name, v in value.items() if v == asked}
        assert holders == set(sample.answers) and len(sample.answers) == VT_HOPS + 1
        assert len(value) == 2 * (VT_HOPS + 1)  # the distractor chain is there too


def test_cwe_counts(tokenizer, sources):
    for sample in ruler_samples(tokenizer, "cwe", 2000, samples=3, sources=sources):
        words = re.findall(r"\d+\. (\w+)", _text(tokenizer, sample))
        counts = Counter(words)
        assert len(sample.answers) == CWE_COMMON
        assert all(counts[w] == CWE_COMMON_FREQ for w in sample.answers)
        assert all(n == 1 for w, n in counts.items() if w not in sample.answers)
        assert len(counts) > CWE_COMMON + 50  # many distractors at this length


def test_too_short_and_bad_arguments(tokenizer, sources):
    for task in TASKS:
        with pytest.raises(ValueError, match="too short"):
            ruler_samples(tokenizer, task, 60, sources=sources)
    with pytest.raises(KeyError, match="unknown task 'qa'"):
        ruler_samples(tokenizer, "qa", 1000, sources=sources)
    with pytest.raises(ValueError, match="samples"):
        ruler_samples(tokenizer, "vt", 1000, samples=0, sources=sources)
    with pytest.raises(ValueError, match="answers"):
        score_answer("x", [])


@pytest.mark.parametrize(
    "prediction, answers, score",
    [
        (" 4076131. The grass", ["4076131"], 1.0),
        (" the number is 4076131", ["4076131"], 1.0),
        (" 40761312", ["4076131"], 0.0),  # a longer number is not the answer
        (" 407613", ["4076131"], 0.0),
        (" qmgns, ABCDE and XYZZY", ["QMGNS", "ABCDE", "KLMNO", "PQRST"], 0.5),
        (" river, garden, shot", ["river", "garden", "shot", "frank", "tale"], 0.6),
        (" party art", ["art"], 1.0),
        (" party", ["art"], 0.0),
        ("", ["a", "b"], 0.0),
    ],
)
def test_score_answer(prediction, answers, score):
    assert score_answer(prediction, answers) == pytest.approx(score)


class _Parrot(torch.nn.Module):
    """Writes a fixed text as its answer, whatever the prompt."""

    def __init__(self, tokenizer, text: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.text = tokenizer, text

    def generate(self, ids, attention_mask, max_new_tokens, do_sample, pad_token_id):
        new = self.tokenizer.encode(self.text, add_special_tokens=False)[:max_new_tokens]
        return torch.cat([ids, torch.tensor([new])], dim=1)


def test_evaluate_scores_outputs(tokenizer, sources):
    samples = ruler_samples(tokenizer, "vt", 1000, samples=2, sources=sources)
    first = samples[0].answers
    parrot = _Parrot(tokenizer, " " + ", ".join(first[:3]))  # 3 of 5 names of sample 0
    seen = []
    result = evaluate_ruler(
        parrot, tokenizer, samples, 1000, max_new_tokens=200, progress=lambda d, t: seen.append(d)
    )
    assert result.scores[0] == pytest.approx(0.6) and result.outputs[0].strip().startswith(first[0])
    assert result.scores[1] == 0.0 and result.accuracy == pytest.approx(0.3) and seen == [1, 2]
    # the default budget of new tokens is the task's
    short = evaluate_ruler(_Parrot(tokenizer, " x" * 100), tokenizer, samples[:1], 1000)
    assert len(short.outputs[0]) == DEFAULT_NEW_TOKENS["vt"]
    with pytest.raises(ValueError, match="one task"):
        evaluate_ruler(parrot, tokenizer, samples + ruler_samples(tokenizer, "cwe", 1000), 1000)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    model = tiny_model("llama", vocab_size=len(tokenizer))
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    profile = path / "profile.json"
    profile.write_text(json.dumps(minimal_profile(W)))
    return path


def test_every_method_runs_every_task_through_the_cli(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # the title names a long temporary path
    # A random model answers garbage; what must hold is that generate() runs under each
    # method for each task and the JSON holds one row per (task, method, length).
    out = tmp_path / "ruler.json"
    argv = ["ruler", "--model", str(model_dir), "--profile", str(model_dir / "profile.json")]
    argv += ["--methods", ",".join(METHODS), "--lengths", "16W", "--samples", "1", "--new-tokens", "2"]
    assert eval_main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(f"RULER accuracy, {task} (1 prompts per cell)" in printed for task in TASKS)
    rows = json.loads(out.read_text())["results"]
    assert [(r["task"], r["method"]) for r in rows] == [(t, m) for t in TASKS for m in METHODS]
    assert all(r["length"] == 16 * W and r["samples"] == 1 and 0.0 <= r["accuracy"] <= 1.0 for r in rows)
