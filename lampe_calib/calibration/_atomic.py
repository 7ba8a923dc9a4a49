"""Files replaced atomically: one (``write_atomic``), or several of one directory together
(``write_together``: a profile and its figure). A reader sees the old files or the new ones,
never a part, and no temporary file is left either way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic", "write_together"]


def _write_temp(path: Path, data: bytes) -> str:
    """``data`` in a new temporary file beside ``path`` (flushed to disk), with ``path``'s mode."""
    # mkstemp creates 0600 files: keep an existing file's mode, else the usual 0644.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return temp


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and
    ``os.replace``: a reader sees the old file or the new one, never a partial one."""
    write_together([(path, data)])


def write_together(files: list[tuple[str | os.PathLike[str], bytes]]) -> None:
    """Replace several files of one directory together or not at all (a profile and its figure).

    Every new content is written to a temporary file first (a full disk fails there, before any
    file is replaced); then each old file is kept as a hard link while the new ones are renamed
    into place, and put back if a rename fails. No temporary file is left either way.
    """
    paths = [Path(p) for p, _ in files]
    temps: list[str] = []
    links: list[str] = []  # the old files, kept until every new one is in place
    replaced: list[tuple[Path, str | None]] = []
    try:
        for path, (_, data) in zip(paths, files, strict=True):
            temps.append(_write_temp(path, data))
        for path, temp in zip(paths, temps, strict=True):
            old = None
            if len(paths) > 1 and path.exists():
                old = tempfile.mktemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
                os.link(path, old)
                links.append(old)
            os.replace(temp, path)
            replaced.append((path, old))
    except BaseException:
        for path, old in reversed(replaced):  # put the old files back (or remove a new one)
            if old is None:
                path.unlink(missing_ok=True)
            else:
                os.replace(old, path)
        for temp in temps:
            Path(temp).unlink(missing_ok=True)
        raise
    finally:
        for old in links:
            Path(old).unlink(missing_ok=True)
