"""The sweep tests' tiny model and books (a random 2-layer Llama; two shipped PG-19 books as
characters, up to 128 tokens)."""

from __future__ import annotations

import pytest
from calib_support import tiny_llama
from char_tokenizer import char_tokenizer

from lampe_calib.evaluation import load_books


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab_size=len(char_tokenizer()))


@pytest.fixture(scope="module")
def books():
    return load_books("pg19", char_tokenizer(), max_length=128, samples=2, seed=0, online=False)
