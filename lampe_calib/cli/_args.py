"""Argument parsing shared by the commands: the argparse subclass whose usage errors become one
line, token sizes ("512", "2W", "8K", comma lists), numbers, depths and registry names."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["ArgumentParser", "parse_depths", "parse_floats", "parse_names", "parse_sizes"]

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[wWkK]?)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors (a bad value, an unknown or missing flag) raise ``ValueError``,
    so that they too come out as one line with exit code 2 (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"{message} (see {self.prog} --help)")


def parse_sizes(option: str, values: Sequence[str], window: int | None = None) -> list[int]:
    """Token counts from ``values``: ``N`` tokens, ``NW`` N times the window W, ``NK`` N·1024,
    each value possibly a comma list.

    Without ``window`` only the syntax is checked (the W-relative ones come back as 0).

    Example: ``parse_sizes("--lengths", ["128,2W", "4w, 8K"], window=256)`` -> ``[128, 512, 1024, 8192]``.
    """
    sizes = []
    for item in (part.strip() for value in values for part in value.split(",")):
        if not item:
            raise ValueError(f"{option}: an empty value in {', '.join(values)!r}")
        match = _SIZE.fullmatch(item)
        if match is None:
            raise ValueError(f"{option}: {item!r} is not a token count (e.g. 512, 2W, 8K)")
        unit = match["unit"].lower()
        if unit == "w" and window is None:
            sizes.append(0)
            continue
        value = float(match["number"]) * {"": 1, "w": window or 0, "k": 1024}[unit]
        if not value.is_integer():
            raise ValueError(f"{option}: {item!r} is not a whole number of tokens ({value:g})")
        sizes.append(int(value))
    if not sizes:
        raise ValueError(f"{option}: no value given")
    return sizes


def parse_floats(option: str, values: Sequence[str]) -> list[float]:
    """Numbers from ``values``, each possibly a comma list.

    Example: ``parse_floats("--attention-factor", ["1,1.1", "1.2"])`` -> ``[1.0, 1.1, 1.2]``.
    """
    out = []
    for item in (part for value in values for part in value.split(",") if part.strip()):
        try:
            out.append(float(item))
        except ValueError:
            raise ValueError(f"{option}: expected numbers, got {item!r}") from None
    return out


def parse_depths(text: str) -> tuple[float, ...]:
    """``--depths``: comma-separated key depths in [0, 1].

    Example: ``parse_depths("0, 0.5,1")`` -> ``(0.0, 0.5, 1.0)``.
    """
    try:
        depths = tuple(float(x) for x in text.split(","))
    except ValueError as error:
        raise ValueError(f"--depths {text!r}: not a list of numbers") from error
    if not all(0.0 <= d <= 1.0 for d in depths):
        raise ValueError(f"--depths {text!r}: each depth must be in [0, 1]")
    return depths


def parse_names(text: str, flag: str, kind: str, known: Sequence[str]) -> tuple[str, ...]:
    """Comma-separated names from ``known``, each once, in the given order.

    Example: ``parse_names("vt, vt,cwe", "--tasks", "task", TASKS)`` -> ``("vt", "cwe")``.
    """
    names = []
    for name in (part.strip() for part in text.split(",")):
        if name not in known:
            raise KeyError(f"{flag}: unknown {kind} {name!r}; known: {', '.join(known)}")
        if name not in names:
            names.append(name)
    return tuple(names)
