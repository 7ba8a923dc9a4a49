"""Long documents (evaluation/_sources.py, _books.py): sources, seeded selection, first-L tokens, errors."""

from __future__ import annotations

import json

import datasets
import huggingface_hub.constants
import pytest
from calib_support import SAMPLE, bpe_tokenizer, sample_texts, write_jsonl
from char_tokenizer import char_tokenizer

from lampe_calib.evaluation._books import choose_books, load_books, tokenize_prefix
from lampe_calib.evaluation._sources import (
    DataSource,
    code_documents,
    code_split,
    hub_reachable,
    resolve_data,
)


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_shipped_sample_is_small_and_complete():
    assert SAMPLE.stat().st_size <= 3_000_000
    rows = [json.loads(line) for line in SAMPLE.open(encoding="utf-8")]
    assert len(rows) == 10
    assert all(set(row) == {"text", "short_book_title", "author"} for row in rows)
    assert min(len(row["text"]) for row in rows) > 250_000


def test_offline_pg19_falls_back_to_the_shipped_sample():
    assert not hub_reachable()
    source = resolve_data("pg19")
    assert source.kind == "sample" and source.split == "validation"
    assert source.files == (str(SAMPLE),)
    assert resolve_data("pg19:validation", online=False).kind == "sample"
    assert resolve_data("pg19:test", online=True) == DataSource("hub", "emozilla/pg19", "test")


@pytest.mark.parametrize(
    "value, message",
    [
        ("pg19:test", "holds the validation split only"),
        ("pg19:dev", "split must be one of"),
        ("no/such/file.jsonl", "not 'pg19'"),
    ],
)
def test_bad_data_values(value, message):
    with pytest.raises(ValueError, match=message):
        resolve_data(value, online=False)


def test_bad_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="expected a .jsonl or .parquet file"):
        resolve_data(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="holds no .jsonl or .parquet file"):
        resolve_data(tmp_path)


def test_choose_books_is_a_seeded_permutation():
    picked = choose_books(10, 4, seed=3)
    assert picked == choose_books(10, 4, seed=3)
    assert len(set(picked)) == 4 and all(0 <= i < 10 for i in picked)
    assert choose_books(10, 10, seed=0) != choose_books(10, 10, seed=1)
    assert sorted(choose_books(10, 10, seed=0)) == list(range(10))
    with pytest.raises(ValueError, match="samples=11 but the data holds only 10 books"):
        choose_books(10, 11, seed=0)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        choose_books(10, 0, seed=0)


def test_tokenize_prefix_equals_the_full_tokenization():
    tokenizer = bpe_tokenizer()
    text = sample_texts(1, 12_000)[0]
    full = tokenizer(text)["input_ids"]
    for n in (1, 17, 500, 1000):
        assert tokenize_prefix(text, tokenizer, n).tolist() == full[:n]
    assert tokenize_prefix("short text", tokenizer, 1000).tolist() == tokenizer("short text")["input_ids"]


def test_load_books_from_a_jsonl_file(tmp_path):
    texts = ["a" * 50, "b" * 300, "c" * 120, "d" * 400]
    path = write_jsonl(tmp_path / "books.jsonl", texts, short_book_title=["A", "B", "C", "D"])
    books = load_books(path, char_tokenizer(), max_length=200, samples=4, seed=0)
    assert books.source.kind == "files"
    assert sorted(books.titles) == ["A", "B", "C", "D"]
    # The char tokenizer adds <s>: a text of n characters has n + 1 tokens.
    at = books.at_length(100)
    assert at.skipped == 1 and len(at.tokens) == 3
    assert all(t.shape == (100,) for t in at.tokens)
    assert books.at_length(200).skipped == 2
    again = load_books(path, char_tokenizer(), max_length=200, samples=4, seed=0)
    assert again.rows == books.rows
    with pytest.raises(ValueError, match="none of the 4 selected books has 200 tokens|length must be"):
        books.at_length(201)


def test_no_book_long_enough_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "books.jsonl", ["tiny", "small"])
    books = load_books(path, char_tokenizer(), max_length=64, samples=2, seed=0)
    with pytest.raises(ValueError, match="none of the 2 selected books has 64 tokens"):
        books.at_length(64)


def test_directory_of_jsonl_and_parquet(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ["x" * 100, "y" * 100])
    datasets.Dataset.from_dict({"text": ["z" * 100], "extra": [1]}).to_parquet(str(tmp_path / "b.parquet"))
    books = load_books(tmp_path, char_tokenizer(), max_length=50, samples=3, seed=1)
    firsts = sorted(char_tokenizer().decode(t[1:2]) for t in books.tokens)
    assert firsts == ["x", "y", "z"]
    assert books.titles[0].startswith("row ")


def test_missing_text_field(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"body": "no text field"}) + "\n")
    with pytest.raises(ValueError, match="has no 'text' field"):
        load_books(tmp_path / "bad.jsonl", char_tokenizer(), max_length=8, samples=1, seed=0)


def test_pg19_sample_books():
    books = load_books("pg19", char_tokenizer(), max_length=64, samples=3, seed=0)
    assert books.source.kind == "sample" and len(books.rows) == 3
    assert all(t.numel() == 64 for t in books.tokens)


def _write_package(root, name: str, files: dict[str, int]) -> None:
    package = root / name
    package.mkdir(parents=True, exist_ok=True)
    for file, lines in files.items():
        (package / file).write_text("".join(f"value_{i} = {i}  # {file}\n" for i in range(lines)))


def test_code_directory_becomes_one_document_per_directory(tmp_path):
    # 1,000 lines of ~25 characters: a directory above CODE_MIN_CHARS; "tiny" stays below it.
    _write_package(tmp_path, "pkg", {"b.py": 500, "a.py": 500, "notes.txt": 900})
    _write_package(tmp_path, "pkg/sub", {"c.py": 1000})
    _write_package(tmp_path, "tiny", {"d.py": 3})
    _write_package(tmp_path, "site-packages/thirdparty", {"e.py": 1000})
    (tmp_path / "pkg" / "latin1.py").write_bytes(b"x = '\xe9'\n" * 3000)  # not UTF-8: left out
    source = resolve_data(f"code:{tmp_path}")
    assert source.kind == "code" and source.split == "all"
    assert not any("site-packages" in f for f in source.files)
    docs = code_documents(source.location, source.files)
    assert [d["title"] for d in docs] == ["pkg", "pkg/sub"]
    text = docs[0]["text"]
    assert text.index("# file: pkg/a.py\n") == 0 and text.index("# file: pkg/b.py\n") > 0
    assert "value_499 = 499  # a.py" in text and "notes.txt" not in text and "latin1" not in text
    assert code_documents(source.location, source.files) == docs  # deterministic
    # load_books reads them as books with a text field
    books = load_books(source, char_tokenizer(), max_length=100, samples=2, seed=0)
    assert sorted(books.titles) == ["pkg", "pkg/sub"]
    assert all(t.shape == (100,) for t in books.tokens)


def test_code_splits_partition_the_documents(tmp_path):
    names = [f"pkg{i}" for i in range(20)]
    for name in names:
        _write_package(tmp_path, name, {"m.py": 1000})
    titles = {}
    for split in ("train", "test"):
        source = resolve_data(f"code:{split}:{tmp_path}")
        assert source.split == split
        titles[split] = {d["title"] for d in code_documents(source.location, source.files, split)}
        assert all(code_split(t) == split for t in titles[split])
    assert titles["train"] and titles["test"] and not titles["train"] & titles["test"]
    assert titles["train"] | titles["test"] == set(names)


def test_code_directory_errors(tmp_path):
    with pytest.raises(ValueError, match="code:DIR needs an existing directory"):
        resolve_data(f"code:{tmp_path}/missing")
    with pytest.raises(ValueError, match="holds no .py file"):
        resolve_data(f"code:{tmp_path}")
    _write_package(tmp_path, "tiny", {"d.py": 3})
    with pytest.raises(ValueError, match="holds 20000 characters of Python source"):
        load_books(f"code:{tmp_path}", char_tokenizer(), max_length=100, samples=None, seed=0)
