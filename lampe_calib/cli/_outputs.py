"""Where ``lampe-calibrate`` writes, checked before the model loads.

The profile directory (``--out``) and the sweep's storage (``--storage``, by default
``OUT/<name>.db``) must be writable, must not be inside the installed package (whose shipped
profiles and studies are read-only to the tools; ``--update-shipped`` lets a maintainer
regenerate ``lampe_calib/profiles``), and must not replace a read-only file. An SQLite storage
that exists must be a readable database. Each failure is a ``ValueError``: one line, exit 2,
nothing written.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from importlib import resources
from pathlib import Path

from ..calibration._profiles import shipped_profiles_dir, user_profiles_dir

__all__ = [
    "check_storage",
    "check_targets",
    "default_out",
    "resolve_out",
    "sqlite_url",
    "start_from_shipped",
]


def _package_dir() -> Path:
    return Path(str(resources.files("lampe_calib"))).resolve()


def _resolved(option: str, text: str, path: Path) -> Path:
    """``path`` with every symbolic link followed; a link loop is a user error, not a crash."""
    try:
        return path.expanduser().resolve()
    except (RuntimeError, OSError) as error:  # RuntimeError: Python < 3.13's "Symlink loop"
        raise ValueError(
            f"{option} {text!r}: cannot resolve the path (a symbolic link loop?): {error}"
        ) from None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _refuse_package(option: str, text: str, path: Path, update_shipped: bool) -> None:
    """Refuse a path inside the installed package, except the shipped profiles directory under
    ``--update-shipped``."""
    if not _inside(path, _package_dir()):
        return
    shipped = shipped_profiles_dir().resolve()
    if update_shipped and _inside(path, shipped):
        return
    hint = (
        "only lampe_calib/profiles may be written, with --update-shipped"
        if update_shipped
        else f"the tools never change shipped files; omit {option} to use {user_profiles_dir()} "
        "(or --update-shipped to regenerate a shipped profile, for maintainers)"
    )
    raise ValueError(f"{option} {text!r} is inside the installed package ({path}); {hint}")


def default_out(update_shipped: bool) -> Path:
    """The profile directory without ``--out``: the user's (``user_profiles_dir``), or the
    package's own under ``--update-shipped``."""
    return shipped_profiles_dir() if update_shipped else user_profiles_dir()


def _check_writable_dir(option: str, text: str, out: Path) -> None:
    """``out`` is a directory, or creatable: its nearest existing parent one we can write in
    (tried with an unnamed temporary file: permissions, read-only mounts and root all count)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {text!r} exists and is not a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {text!r}: {str(parent)!r} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise ValueError(
            f"{option} {text!r}: cannot write in {str(parent)!r} ({error.strerror or error}); "
            "choose another directory"
        ) from None


def resolve_out(text: str | None, update_shipped: bool) -> Path:
    """The checked profile directory for ``--out`` (None: ``default_out``)."""
    shown = text if text is not None else str(default_out(update_shipped))
    out = _resolved("--out", shown, Path(shown))
    _check_writable_dir("--out", shown, out)
    _refuse_package("--out", shown, out, update_shipped)
    return out


def _read_only(path: Path) -> bool:
    """No write permission bit at all, or none for us (root ignores the bits: they still say
    the owner meant the file to stay as it is)."""
    mode = path.stat().st_mode
    return not mode & 0o222 or not os.access(path, os.W_OK)


def check_targets(out: Path, name: str) -> None:
    """Refuse to replace a read-only ``OUT/<name>.json`` or ``.png``."""
    for path in (out / f"{name}.json", out / f"{name}.png"):
        if path.is_file() and _read_only(path):
            raise ValueError(
                f"{path} is read-only; lampe-calibrate never replaces a read-only profile "
                "(choose another --out, or make it writable)"
            )


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of the SQLite file ``path``, quoted: a ``?`` or ``%41`` in a
    directory name stays part of the file name.

    Example: ``sqlite_url(Path("/runs/a?b/x.db"))`` -> ``"sqlite:////runs/a%3Fb/x.db"``.
    """
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def check_storage(text: str, update_shipped: bool, *, default: bool = False) -> None:
    """An SQLite file storage: not inside the package, its directory writable (``default``:
    ``OUT``'s, created later, may not exist yet), and if it exists, writable and a database
    SQLite can read. Other databases are checked on opening."""
    from sqlalchemy.engine import make_url

    from ..calibration.sweep._db import check_storage_url

    url = make_url(text) if default else check_storage_url(text)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    shown = url.render_as_string(hide_password=True)
    path = _resolved("--storage", shown, Path(url.database))
    _refuse_package("--storage", shown, path, update_shipped)
    _check_writable_dir("--storage", shown, path.parent)
    if not path.exists():
        return
    if not path.is_file():
        raise ValueError(f"--storage {shown}: {path} is not a file")
    if _read_only(path):
        raise ValueError(
            f"--storage {shown}: {path} is read-only; a sweep records its trials there "
            "(copy it, or make it writable)"
        )
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise ValueError(f"--storage {shown}: cannot open {path}: {error}") from None
    try:
        bad = connection.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as error:
        raise ValueError(f"--storage {shown}: {path} is not a readable SQLite database ({error})") from None
    finally:
        connection.close()
    if bad != "ok":
        raise ValueError(f"--storage {shown}: {path} is a damaged SQLite database ({bad})")


def _stored_signature(path: Path, study: str) -> dict | None:
    """The ``signature`` of ``study`` in the SQLite storage ``path``, read without writing."""
    import json

    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        row = connection.execute(
            "SELECT a.value_json FROM study_user_attributes a JOIN studies s ON a.study_id = s.study_id "
            "WHERE s.study_name = ? AND a.key = 'signature'",
            (study,),
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return None if row is None else json.loads(row[0])


def start_from_shipped(out: Path, name: str, signature: dict) -> Path | None:
    """Copy the shipped study ``<name>.db`` to ``OUT`` when ``OUT`` has none yet and the shipped
    one ran this very sweep (its ``signature``, the model's path aside): the run then resumes it
    (README's provenance commands) and the package's copy stays untouched. Returns the shipped
    file copied, or None."""
    shipped = shipped_profiles_dir() / f"{name}.db"
    target = out / f"{name}.db"
    if target.exists() or not shipped.is_file() or out.resolve() == shipped_profiles_dir().resolve():
        return None
    stored = _stored_signature(shipped, f"{name}:vanilla") or {}
    if {k: v for k, v in stored.items() if k != "model"} != signature:
        return None
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(shipped.read_bytes())
        os.chmod(temp, 0o644)  # the package's file may be read-only; the user's copy is theirs
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return shipped
