"""Reading a profile's JSON fields: each check names the field (``profile field 'lampe.head'
must be ...``), and a config's own validation error is given that name too (``config_error``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .._checks import check_integer

__all__ = [
    "SCHEMA_VERSION",
    "as_config_errors",
    "fail",
    "get",
    "integer",
    "known_keys",
    "list_of",
    "mapping",
    "number",
    "plain",
    "text",
]

SCHEMA_VERSION = 1
# The keys each section may hold: anything else is refused, like an unknown top-level key (a
# typo such as "atention_factor" would otherwise be ignored and its default used).
_KEYS = {
    "model": ("alias", "source", "revision", "family", "head_dim"),
    "rope": ("theta", "type", "scaling"),
    "lampe": ("head", "tail", "mode", "attention_factor", "base"),
    "lampe.base": ("type", "factor"),
    "sigmoid": (
        *("status", "message", "missing", "a", "b", "c", "c_mode", "r2", "ci", "points", "alternatives"),
        *("objective", "fits"),  # the fit used (argmin or excess) and every fit made
    ),
    "sigmoid.ci": ("a", "b", "c", "level", "resamples"),
    "curves": (
        *("length", "mappings", "ppl", "nll", "unmapped_ppl", "vanilla_ppl", "m_star", "remapped"),
        *("bound", "books", "tokens", "book_tokens", "skipped"),
    ),
    "provenance": (
        *("imported", "source", "dataset", "split", "samples", "seed", "books", "search", "lengths"),
        *("study", "dtype", "versions", "date", "command", "seconds", "notes"),
    ),
}


def known_keys(path: str, section: Mapping[str, Any], kind: str | None = None) -> None:
    """Refuse a key of ``section`` that schema ``kind`` (default: ``path``) does not list."""
    unknown = sorted(set(section) - set(_KEYS[kind or path]))
    if unknown:
        raise ValueError(
            f"profile field '{path}.{unknown[0]}' is not part of schema version {SCHEMA_VERSION}"
        )


def fail(path: str, expected: str, value: Any) -> ValueError:
    """Example: ``fail("window", "an integer >= 1", 0)`` -> ``profile field 'window' must be an
    integer >= 1, got 0``."""
    return ValueError(f"profile field '{path}' must be {expected}, got {value!r}")


@contextmanager
def as_config_errors(section: str) -> Iterator[None]:
    """Name a config's validation error by its profile field: ``head must be ...`` raised while
    building the ``section`` config becomes ``profile field 'section.head' must be ...``."""
    try:
        yield
    except ValueError as error:
        name, sep, rest = str(error).partition(" must be ")
        if not sep:
            raise
        field = name.removeprefix(f"{section}.")
        raise ValueError(f"profile field '{section}.{field}' must be {rest}") from None


def number(path: str, value: Any, *, optional: bool = False, positive: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(path, "a finite number" + (" or null" if optional else ""), value)
    if positive and value <= 0:
        raise fail(path, "> 0", value)
    return float(value)


def integer(path: str, value: Any, minimum: int, *, optional: bool = False) -> int | None:
    """``check_integer`` (the configs' own), naming the profile field."""
    if value is None and optional:
        return None
    return check_integer(f"profile field '{path}'", value, minimum)


def text(path: str, value: Any, *, optional: bool = False, choices: tuple[str, ...] = ()) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (choices and value not in choices):
        raise fail(path, f"one of {choices}" if choices else "a string", value)
    return value


def mapping(path: str, value: Any, *, optional: bool = False) -> dict[str, Any] | None:
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise fail(path, "an object", value)
    return dict(value)


def list_of(path: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise fail(path, "a list", value)
    return list(value)


def plain(value: Any) -> Any:
    """A deep copy as plain JSON types (dicts, lists)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def get(data: Mapping[str, Any], key: str, path: str) -> Any:
    """``data[key]``; a missing key is named ``path.key`` (``key`` at the top level)."""
    if key not in data:
        raise ValueError(
            f"profile field '{path}.{key}' is missing" if path else f"profile field '{key}' is missing"
        )
    return data[key]
