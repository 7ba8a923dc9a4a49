"""Where profiles live, and reading and writing them (docs/design.md §3.4): versioned JSON,
validated on load (``Profile``), written atomically.

The shipped profiles are inside the package (``lampe_calib/profiles``, read-only to the tools),
a user's own calibrations in ``user_profiles_dir()`` (``$LAMPE_CALIB_HOME/profiles``, else
``$XDG_DATA_HOME/lampe-calib/profiles``, else ``~/.local/share/lampe-calib/profiles``), where
``lampe-calibrate`` writes by default. ``load_profile(name)`` looks there first: a user's
calibration of a model wins over the shipped one of the same name, and says so (a warning).
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from ._atomic import write_atomic, write_together
from ._profile import SCHEMA_VERSION, STATUSES, Profile

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "Profile",
    "find_profile",
    "load_profile",
    "profile_bytes",
    "save_profile",
    "shipped_profiles",
    "shipped_profiles_dir",
    "user_profiles_dir",
    "write_atomic",
    "write_together",
]

logger = logging.getLogger(__name__)


def profile_bytes(profile: Profile) -> bytes:
    """``profile`` as the indented UTF-8 JSON that ``save_profile`` writes."""
    text = json.dumps(profile.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    return text.encode("utf-8")


def save_profile(profile: Profile, path: str | os.PathLike[str]) -> None:
    """Write ``profile`` as indented JSON to ``path``, atomically."""
    write_atomic(path, profile_bytes(profile))


def shipped_profiles_dir() -> Path:
    """The package's own profiles (``lampe_calib/profiles``): read, never written, by the tools."""
    return Path(str(resources.files("lampe_calib").joinpath("profiles")))


_shipped_dir = shipped_profiles_dir


def user_profiles_dir() -> Path:
    """Where a user's calibrations go by default and where ``load_profile(name)`` looks first:
    ``$LAMPE_CALIB_HOME/profiles``, else ``$XDG_DATA_HOME/lampe-calib/profiles``, else
    ``~/.local/share/lampe-calib/profiles`` (the XDG default).

    Example: with ``LAMPE_CALIB_HOME=/data/lampe`` -> ``Path("/data/lampe/profiles")``.
    """
    home = os.environ.get("LAMPE_CALIB_HOME")
    if home:
        return Path(home).expanduser() / "profiles"
    data = os.environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return Path(data).expanduser() / "lampe-calib" / "profiles"


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in the package (``lampe_calib/profiles/*.json``)."""
    return sorted(p.stem for p in shipped_profiles_dir().glob("*.json"))


def _user_profiles() -> list[str]:
    try:
        return sorted(p.stem for p in user_profiles_dir().glob("*.json"))
    except OSError:
        return []


def find_profile(name_or_path: str | os.PathLike[str]) -> Path:
    """The file ``load_profile`` reads for ``name_or_path``: the path itself when it is a file,
    else ``user_profiles_dir()/<name>.json``, else the shipped ``<name>.json``.

    Raises:
        ValueError: none of these exists (the message lists the names there are).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    bare = text and os.sep not in text and not text.endswith(".json")
    if bare:
        for directory in (user_profiles_dir(), shipped_profiles_dir()):
            candidate = directory / f"{text}.json"
            if candidate.is_file():
                return candidate
    mine = _user_profiles()
    yours = f"; yours in {user_profiles_dir()}: {', '.join(mine)}" if mine else ""
    raise ValueError(
        f"profile {text!r} is neither a JSON file nor a shipped profile "
        f"({', '.join(shipped_profiles())}){yours}"
    )


def _read_json(path: Path) -> Any:
    """The JSON value in ``path``; every way it can fail is one ``ValueError`` naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"profile {path}: cannot read: {error.strerror or error}") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"profile {path}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at offset {error.start})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"profile {path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from error
    except RecursionError:
        raise ValueError(f"profile {path}: not a profile: JSON nested too deeply") from None


def load_profile(name_or_path: str | os.PathLike[str]) -> Profile:
    """A profile by name ("reference", "llama3-8b", ...) or a profile JSON file.

    A name is looked up in ``user_profiles_dir()`` first, then among the shipped profiles: a
    user's own calibration of a model (``lampe-calibrate --model reference`` writes
    ``reference.json`` there) is found by name right after the run, and wins over the shipped
    one, with a warning naming both files (load the shipped one by its path to use it).

    Raises:
        ValueError: neither a file nor a known name (listing them), not UTF-8, invalid JSON, or
            a bad field (named, e.g. ``profile field 'sigmoid.a' must be > 0 …``); the message
            is one line starting with the file.

    Example: ``apply_lampe(model, load_profile("reference"))``.
    """
    path = find_profile(name_or_path)
    text = os.fspath(name_or_path)
    shipped = shipped_profiles_dir() / f"{text}.json"
    if path.parent == user_profiles_dir() and shipped.is_file():
        logger.warning("profile %r: your calibration %s (not the shipped %s)", text, path, shipped)
    else:
        logger.info("profile %r: %s", text, path)
    data = _read_json(path)
    try:
        return Profile.from_dict(data)
    except ValueError as error:
        raise ValueError(f"profile {path}: {error}") from error
    except RecursionError:
        raise ValueError(f"profile {path}: not a profile: JSON nested too deeply") from None
