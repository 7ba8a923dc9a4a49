"""The chunked perplexity evaluator (lampe_calib/_perplexity.py) against full-logits loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from calib_support import TINY_W, tiny_llama

from lampe_calib import LampeConfig, apply_lampe
from lampe_calib.evaluation._perplexity import (
    PerplexityResult,
    evaluate_perplexity,
    token_nll,
    token_nll_blocks,
)

VOCAB = 128


def _books(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g) for n in lengths]


def _full_logits_nll(model, book, config=None):
    """The reference: one forward pass, the whole (L, vocab) logits tensor, summed cross-entropy."""
    with torch.no_grad():
        if config is None:
            logits = model(book[None]).logits[0]
        else:
            with apply_lampe(model, config):
                logits = model(book[None]).logits[0]
    return F.cross_entropy(logits[:-1].double(), book[1:], reduction="sum").item()


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab_size=VOCAB)


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_chunked_equals_full_logits_vanilla(model, chunk_size):
    books = _books([3 * TINY_W, 3 * TINY_W, 50])
    result = evaluate_perplexity(model, books, chunk_size=chunk_size, batch_size=2)
    for nll, tokens, book in zip(result.nll, result.tokens, books, strict=True):
        assert tokens == book.numel() - 1
        assert nll == pytest.approx(_full_logits_nll(model, book), rel=1e-5)
    total = sum(_full_logits_nll(model, b) for b in books)
    assert result.ppl == pytest.approx(math.exp(total / sum(b.numel() - 1 for b in books)), rel=1e-5)


def test_chunked_equals_full_logits_under_lampe(model):
    config = LampeConfig(head=4, tail=2, mapping_length=24)
    books = _books([4 * TINY_W, 4 * TINY_W])
    result = evaluate_perplexity(model, books, context=lambda: apply_lampe(model, config), chunk_size=16)
    for nll, book in zip(result.nll, books, strict=True):
        assert nll == pytest.approx(_full_logits_nll(model, book, config), rel=1e-5)
    # Remapping changes the loss: the context is really applied.
    assert result.nll != evaluate_perplexity(model, books).nll


def test_batch_size_does_not_change_results(model):
    books = _books([40, 40, 40, 25, 40])
    one = evaluate_perplexity(model, books, batch_size=1)
    many = evaluate_perplexity(model, books, batch_size=3)
    assert many.tokens == one.tokens
    assert many.nll == pytest.approx(one.nll, rel=1e-5)


def test_progress_is_reported(model):
    seen = []
    evaluate_perplexity(model, _books([20] * 5), batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_token_nll_shapes():
    hidden = torch.randn(2, 5, 8)
    head = torch.nn.Linear(8, 11, bias=False)
    targets = torch.randint(0, 11, (2, 5))
    out = token_nll(hidden, targets, head, chunk_size=2)
    assert out.shape == (2,) and out.dtype == torch.float64
    expected = F.cross_entropy(head(hidden).transpose(1, 2), targets, reduction="none").sum(-1)
    assert torch.allclose(out, expected.double(), rtol=1e-6)


def test_result_arithmetic_and_round_trip():
    result = PerplexityResult(nll=(10.0, 20.0), tokens=(10, 10))
    assert result.total_nll == 30.0 and result.total_tokens == 20
    assert result.ppl == pytest.approx(math.exp(1.5))
    assert result.book_ppl == pytest.approx((math.e, math.exp(2.0)))
    assert result.subset([1, 1]) == PerplexityResult((20.0, 20.0), (10, 10))
    assert PerplexityResult.from_dict(result.to_dict()) == result
    assert PerplexityResult((1e6,), (1,)).ppl == math.inf


@pytest.mark.parametrize(
    "nll, tokens, message",
    [
        ((1.0,), (1, 2), "one entry per book"),
        ((), (), "at least one book"),
        ((1.0,), (0,), "tokens must be > 0"),
    ],
)
def test_result_validation(nll, tokens, message):
    with pytest.raises(ValueError, match=message):
        PerplexityResult(nll, tokens)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="at least one book"):
        evaluate_perplexity(model, [])
    with pytest.raises(ValueError, match=r"books\[0\] must be a 1-D tensor"):
        evaluate_perplexity(model, [torch.zeros(1, 5, dtype=torch.long)])
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        evaluate_perplexity(model, _books([5]), chunk_size=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        evaluate_perplexity(model, _books([5]), batch_size=0)


@pytest.mark.parametrize("chunk_size, block_size", [(5, 7), (16, 4), (1024, 1024)])
def test_block_sums_equal_full_logits_per_position(model, chunk_size, block_size):
    book = _books([3 * TINY_W + 5])[0]
    with torch.no_grad():
        logits = model(book[None]).logits[0]
        hidden = model.get_decoder()(input_ids=book[None]).last_hidden_state
        blocks = token_nll_blocks(
            hidden[:, :-1], book[None, 1:], model.get_output_embeddings(), chunk_size, block_size
        )
    loss = F.cross_entropy(logits[:-1].double(), book[1:], reduction="none")  # (S,)
    want = torch.stack([part.sum() for part in loss.split(block_size)])
    assert blocks.shape == (1, -(-(book.numel() - 1) // block_size))
    torch.testing.assert_close(blocks[0], want, rtol=1e-5, atol=1e-6)


def test_result_keeps_each_books_blocks(model):
    books = _books([2500, 700])  # 2499 predicted tokens: blocks of 1024, 1024 and 451
    result = evaluate_perplexity(model, books, chunk_size=300)
    assert result.block_tokens == ((1024, 1024, 451), (699,))
    assert [len(b) for b in result.block_nll] == [3, 1]
    for blocks, nll in zip(result.block_nll, result.nll, strict=True):
        assert math.fsum(blocks) == pytest.approx(nll, rel=1e-12)
    assert result.subset([1, 1]).block_nll == (result.block_nll[1],) * 2
    with pytest.raises(ValueError, match="block_nll must hold"):
        PerplexityResult(result.nll, result.tokens, ((1.0,), (1.0,)))
