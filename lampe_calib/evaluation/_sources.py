"""Where the long documents come from: a ``--data`` value resolved to a source, and its texts
read through ``datasets`` (docs/design.md §3.1). A ``--data`` value is one of

- a JSONL file, or a directory of JSONL/parquet files, with a ``text`` field per row;
- ``pg19`` (or ``pg19:SPLIT``): PG-19 from the Hugging Face hub, ``emozilla/pg19`` (a parquet
  copy of ``deepmind/pg19``, whose loading script current ``datasets`` no longer runs), when the
  hub is reachable; offline, ``pg19`` and ``pg19:validation`` fall back to the sample shipped in
  the package (``assets/pg19_sample``: the 10 books of the project's PG-19 validation subset,
  first 280,000 characters each);
- ``code:DIR`` (or ``code:train:DIR``, ``code:test:DIR``): a directory of Python source files
  turned into long documents, one per directory (``code_documents``), for domain transfer;
  e.g. the interpreter's own standard library,
  ``python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])"``.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import socket
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "PG19_HUB_ID",
    "TITLE_FIELDS",
    "CacheNotWritable",
    "DataSource",
    "code_documents",
    "code_split",
    "check_datasets_cache",
    "hub_reachable",
    "read_texts",
    "resolve_data",
    "shipped_sample",
]

logger = logging.getLogger(__name__)

PG19_HUB_ID = "emozilla/pg19"
PG19_SPLITS = ("train", "validation", "test")
_JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
_PARQUET_SUFFIXES = (".parquet",)
TITLE_FIELDS = ("short_book_title", "title")


@dataclass(frozen=True)
class DataSource:
    """Where books come from: ``kind`` is "files" (local JSONL/parquet), "hub" or "sample".

    ``files`` lists the local files in the order they are read (empty for "hub").
    """

    kind: str
    location: str
    split: str
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("files", "hub", "sample", "code"):
            raise ValueError(f"kind must be 'files', 'hub', 'sample' or 'code', got {self.kind!r}")

    def describe(self) -> str:
        """One line for logs and provenance, e.g. ``"pg19 sample (validation, 10 books shipped)"``."""
        if self.kind == "hub":
            return f"{self.location} ({self.split}, Hugging Face hub)"
        if self.kind == "sample":
            return f"pg19 sample shipped with lampe-calib ({self.split})"
        if self.kind == "code":
            return f"Python sources under {self.location} ({self.split})"
        return self.location


def hub_reachable(timeout: float = 3.0) -> bool:
    """True unless offline mode is set or the hub endpoint refuses a TCP connection in ``timeout`` s.

    A plain ``load_dataset`` on a machine without network retries for ~25 s before failing.
    """
    import huggingface_hub

    if huggingface_hub.is_offline_mode():
        return False
    host = urlparse(huggingface_hub.constants.ENDPOINT).hostname
    if host is None:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _sample_path() -> Path:
    return Path(str(resources.files("lampe_calib").joinpath("assets", "pg19_sample", "validation.jsonl")))


def shipped_sample() -> DataSource:
    """The PG-19 sample shipped in the package (10 validation books): the default data of the
    commands, readable offline.

    Example: ``shipped_sample().describe()`` -> ``"pg19 sample shipped with lampe-calib (validation)"``.
    """
    path = _sample_path()
    return DataSource("sample", str(path), "validation", (str(path),))


def resolve_data(data: str | os.PathLike[str], online: bool | None = None) -> DataSource:
    """Turn a ``--data`` value into a ``DataSource``.

    Args:
        data: ``pg19``, ``pg19:SPLIT`` (train, validation or test), ``code:[SPLIT:]DIR``, a JSONL
            file, or a directory.
        online: whether to use the hub for ``pg19``; None probes it (``hub_reachable``).

    Raises:
        ValueError: unknown split, a path that does not exist, a directory without data files,
            or ``pg19:train``/``pg19:test`` while offline.

    Example: ``resolve_data("pg19", online=False).kind`` -> ``"sample"``.
    """
    text = os.fspath(data)
    if text.startswith("code:"):
        return _resolve_code(text)
    if text == "pg19" or text.startswith("pg19:"):
        split = text.partition(":")[2] or "validation"
        if split not in PG19_SPLITS:
            raise ValueError(f"--data: PG-19 split must be one of {PG19_SPLITS}, got {split!r}")
        if online is None:
            online = hub_reachable()
        if online:
            return DataSource("hub", PG19_HUB_ID, split)
        if split != "validation":
            raise ValueError(
                f"--data {text!r}: the Hugging Face hub is unreachable and the shipped PG-19 sample "
                "holds the validation split only; pass a local JSONL file or directory"
            )
        logger.info("Hugging Face hub unreachable: using the PG-19 sample shipped in the package")
        path = _sample_path()
        return DataSource("sample", str(path), split, (str(path),))
    path = Path(text).expanduser()
    if path.is_file():
        if not path.name.endswith(_JSON_SUFFIXES + _PARQUET_SUFFIXES):
            raise ValueError(f"--data {text!r}: expected a .jsonl or .parquet file")
        return DataSource("files", str(path), "train", (str(path),))
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.name.endswith(_JSON_SUFFIXES + _PARQUET_SUFFIXES))
        if not files:
            raise ValueError(f"--data {text!r}: the directory holds no .jsonl or .parquet file")
        return DataSource("files", str(path), "train", tuple(files))
    raise ValueError(f"--data {text!r}: not 'pg19', 'pg19:SPLIT', an existing JSONL file or a directory")


# Code documents: a directory with less source than this is too short to be a long-context
# document (about 5K tokens of a code tokenizer), and one document keeps at most the cap
# (the shipped PG-19 books hold 280,000 characters each).
CODE_MIN_CHARS = 20_000
CODE_MAX_CHARS = 1_000_000
CODE_SPLITS = ("all", "train", "test")
# One directory in CODE_TEST_MODULUS is held out (chosen by a CRC of its relative path, so adding
# or removing other directories never moves a document between splits).
CODE_TEST_MODULUS = 5
_THIRD_PARTY = frozenset({"site-packages", "dist-packages"})


def _resolve_code(text: str) -> DataSource:
    rest = text.removeprefix("code:")
    split, sep, location = rest.partition(":")
    if not sep or split not in ("train", "test"):
        split, location = "all", rest
    path = Path(location).expanduser()
    if not path.is_dir():
        raise ValueError(f"--data {text!r}: code:DIR needs an existing directory of .py files")
    # Installed third-party packages are left out, so a standard library gives the same
    # corpus on every machine with that Python version.
    files = tuple(
        sorted(
            str(p)
            for p in path.rglob("*.py")
            if p.is_file() and not _THIRD_PARTY.intersection(p.relative_to(path).parts)
        )
    )
    if not files:
        raise ValueError(f"--data {text!r}: the directory holds no .py file")
    return DataSource("code", str(path), split, files)


def code_split(name: str) -> str:
    """The split of a code document named by its directory relative to the root.

    Example: ``code_split("json")`` -> ``"test"`` or ``"train"``, the same on every machine
    (``zlib.crc32``, not Python's salted ``hash``).
    """
    return "test" if zlib.crc32(name.encode("utf-8")) % CODE_TEST_MODULUS == 0 else "train"


def code_documents(root: str | os.PathLike[str], files: Sequence[str], split: str = "all") -> list[dict]:
    """Python files grouped into one document per directory, in a deterministic order.

    Each document concatenates the directory's own ``.py`` files (not its subdirectories') in
    sorted order, each after a ``# file: RELPATH`` line, up to ``CODE_MAX_CHARS``; directories
    with fewer than ``CODE_MIN_CHARS`` characters of source, and files that are not UTF-8, are
    left out. ``split`` keeps the documents of ``code_split`` "train" or "test" ("all": every one).

    Example: a root with ``pkg/a.py`` and ``pkg/b.py`` (30K characters together) gives
    ``[{"text": "# file: pkg/a.py\n...# file: pkg/b.py\n...", "title": "pkg"}]``.
    """
    if split not in CODE_SPLITS:
        raise ValueError(f"split must be one of {CODE_SPLITS}, got {split!r}")
    root = Path(root)
    groups: dict[str, list[Path]] = {}
    for file in sorted(Path(f) for f in files):
        groups.setdefault(file.parent.relative_to(root).as_posix(), []).append(file)
    documents = []
    for name in sorted(groups):
        if split != "all" and code_split(name) != split:
            continue
        parts, size = [], 0
        for file in groups[name]:
            try:
                source = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            part = f"# file: {file.relative_to(root).as_posix()}\n{source}\n"
            parts.append(part)
            size += len(part)
            if size >= CODE_MAX_CHARS:
                break
        text = "".join(parts)[:CODE_MAX_CHARS]
        if len(text) >= CODE_MIN_CHARS:
            documents.append({"text": text, "title": name})
    return documents


def _jsonl_problem(path: str) -> str | None:
    """What is wrong with a JSONL file, found by reading it (only once ``datasets`` failed on it).

    Example: a file whose second line is ``{"text": `` -> ``"line 2 is not valid JSON (Expecting value)"``.
    """
    if path.endswith(".gz"):
        return None
    seen = False
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                seen = True
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    return f"line {number} is not valid JSON ({error.msg})"
                if not isinstance(row, dict) or "text" not in row:
                    return f"line {number} is not a JSON object with a 'text' field"
                text = row["text"]
                if text is not None and not isinstance(text, str):
                    shown = json.dumps(text)[:40]
                    return f"line {number}: its 'text' is {type(text).__name__} {shown}, not a string"
    except (OSError, UnicodeDecodeError) as error:
        return f"cannot be read as UTF-8 text ({error})"
    return None if seen else "holds no books (the file is empty)"


@contextmanager
def _datasets_quiet() -> Iterator[None]:
    """``datasets`` logs a file it cannot parse before raising; the error raised here says it."""
    library = logging.getLogger("datasets")
    level = library.level
    library.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        library.setLevel(level)


class CacheNotWritable(ValueError):
    """The ``datasets`` cache cannot be written: the environment's fault, not the data's."""


def check_datasets_cache() -> None:
    """Raise ``CacheNotWritable`` (one line, with the fix) when ``datasets`` cannot write its cache
    (``HF_DATASETS_CACHE``, by default under ``HF_HOME`` or ``~/.cache/huggingface``): reading a
    local JSONL or parquet file goes through it, and its own error names the data file."""
    import datasets

    cache = Path(datasets.config.HF_DATASETS_CACHE)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=cache, prefix=".lampe-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        home = os.environ.get("HOME")
        raise CacheNotWritable(
            f"the datasets cache {str(cache)!r} cannot be written ({reason}; HOME is {home!r}): "
            "set HF_DATASETS_CACHE (or HF_HOME) to a writable directory"
        ) from None


def _utf8_problem(path: str) -> str | None:
    """Where a file stops being UTF-8, read in 1 MiB pieces; None when it is UTF-8 throughout.

    Example: a file ``b'{"text": "caf\\xe9"}\\n'`` -> ``"is not UTF-8 text (byte 0xe9 on line 1)"``.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                at = min(error.start, len(chunk) - 1)
                line += chunk[:at].count(b"\n")
                return f"is not UTF-8 text (byte 0x{chunk[at]:02x} on line {line})"
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return f"is not UTF-8 text (it ends inside a character, line {line})"
    return None


def _load_files(files: Sequence[str]) -> Any:
    import datasets

    json_files = [f for f in files if f.endswith(_JSON_SUFFIXES)]
    parquet_files = [f for f in files if f.endswith(_PARQUET_SUFFIXES)]
    for path in json_files:
        problem = None if path.endswith(".gz") else _utf8_problem(path)
        if problem:
            raise ValueError(f"--data: {path} {problem}; save it as UTF-8")
    check_datasets_cache()
    parts = []
    for builder, group in (("json", json_files), ("parquet", parquet_files)):
        if not group:
            continue
        try:
            with _datasets_quiet():
                part = datasets.load_dataset(builder, data_files=group, split="train")
        except (datasets.exceptions.DatasetGenerationError, ValueError, StopIteration, OSError) as error:
            for path in group if builder == "json" else ():
                problem = _jsonl_problem(path)
                if problem:
                    raise ValueError(
                        f"--data: {path} {problem}; each line must be one JSON object with a 'text' field"
                    ) from error
            detail = " ".join(str(error).split())[:200] or type(error).__name__
            raise ValueError(f"--data: cannot read {', '.join(group)}: {detail}") from error
        if "text" not in part.column_names:
            raise ValueError(f"--data: {', '.join(group)} has no 'text' field (fields: {part.column_names})")
        feature = part.features["text"]
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            for path in group if builder == "json" else ():
                problem = _jsonl_problem(path)
                if problem:
                    raise ValueError(f"--data: {path} {problem}")
            raise ValueError(f"--data: {', '.join(group)}: the 'text' field holds {feature}, not strings")
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    keep = ["text"] + [name for name in TITLE_FIELDS if all(name in p.column_names for p in parts)]
    return datasets.concatenate_datasets([p.select_columns(keep) for p in parts])


def read_texts(source: DataSource) -> Any:
    """The rows of ``source`` as a ``datasets.Dataset`` with a ``text`` column."""
    if source.kind == "hub":
        import datasets

        logger.info("loading %s split %s from the Hugging Face hub", source.location, source.split)
        return datasets.load_dataset(source.location, split=source.split)
    if source.kind == "code":
        import datasets

        documents = code_documents(source.location, source.files, source.split)
        if not documents:
            raise ValueError(
                f"--data: no directory under {source.location} ({source.split}) holds "
                f"{CODE_MIN_CHARS} characters of Python source"
            )
        return datasets.Dataset.from_list(documents)
    return _load_files(source.files)
