"""``lampe-eval --json``: a results file written cell by cell, resumable, refused when it was
made with other settings (docs/design.md §6).

A cell is one (method, length) of ``ppl`` or ``passkey``, one (task, method, length) of
``ruler``. Each finished cell is written at once (atomically: the file on disk always holds whole
cells), so a crash loses at most the cell in flight; the same command again reads the file back
and skips the cells it holds. The settings that change a cell's value (model, data, samples,
seed, dtype, ...) are recorded once; methods, lengths and tasks are not settings, since they only
choose which cells exist, so a later run may add some.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ResultsFile", "cell_key", "settings_difference"]

# The flag behind each setting, for the message that refuses a file made with other settings.
SETTING_FLAGS = {
    "command": "the command",
    "model": "--model",
    "data": "--data",
    "samples": "--samples",
    "seed": "--seed",
    "dtype": "--dtype",
    "depths": "--depths",
    "new_tokens": "--new-tokens",
    "profile": "--profile",
}


def cell_key(row: Mapping[str, Any]) -> tuple:
    """What identifies a cell: ``(task, method, length)``, task None outside RULER.

    Example: ``cell_key({"method": "pi", "length": 512, "ppl": 9.1})`` -> ``(None, "pi", 512)``.
    """
    return (row.get("task"), row["method"], int(row["length"]))


def settings_difference(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The first setting whose value differs, as ``"FLAG: file X, now Y"``; None when they agree.

    Example: ``settings_difference({"seed": 0}, {"seed": 1})`` -> ``"--seed: file 0, now 1"``.
    """
    for name in dict.fromkeys([*stored, *current]):
        if stored.get(name) != current.get(name):
            flag = SETTING_FLAGS.get(name, name)
            return f"{flag}: file {stored.get(name)!r}, now {current.get(name)!r}"
    return None


class ResultsFile:
    """The rows of a run, kept in memory and, with a ``path``, on disk after every added cell.

    Args:
        path: the ``--json`` file, or None to keep the rows in memory only.
        settings: what the cells' values depend on (see the module docstring), but the profile,
            which is known once the model is loaded and is recorded by ``set_profile``.
        header: top-level fields written beside ``settings`` and ``results`` (model, command, ...).
        finish: called on the list of rows before each write, to add what depends on several
            cells (the PPL ratios to a reference); returns the rows to write.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        settings: Mapping[str, Any],
        header: Mapping[str, Any],
        finish: Callable[[list[dict]], list[dict]] | None = None,
    ) -> None:
        self.path = None if path is None else Path(path).expanduser()
        self.settings = {**settings, "profile": None}
        self.header = dict(header)
        self.finish = finish
        self.rows: list[dict] = []
        if self.path is not None:
            self._check_and_read()

    def _check_and_read(self) -> None:
        """Before any work: the directory takes a new file, an existing file is ours and agrees."""
        path = self.path
        assert path is not None
        flag = f"--json {str(path)!r}"
        if path.is_dir():
            raise ValueError(f"{flag}: is a directory; give a file name such as results.json")
        if not path.parent.is_dir():
            raise ValueError(f"{flag}: directory {str(path.parent)!r} does not exist")
        try:  # the way the file will be written: a temporary file beside it, then a rename
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as error:
            raise ValueError(f"{flag}: cannot write in {str(path.parent)!r} ({error.strerror})") from None
        os.close(fd)
        os.unlink(probe)
        if not path.exists():
            return
        if not os.access(path, os.W_OK):
            raise ValueError(f"{flag}: the file exists and is read-only")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{flag}: exists but is not a lampe-eval results file ({error})") from None
        if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
            raise ValueError(
                f"{flag}: exists but records no settings (not written by this version of lampe-eval); "
                "give another file"
            )
        stored = dict(data["settings"])
        # The profile is compared once the model is loaded (``set_profile``).
        self.settings["profile"] = stored.pop("profile", None)
        difference = settings_difference(stored, {k: v for k, v in self.settings.items() if k != "profile"})
        if difference is not None:
            raise ValueError(
                f"{flag} was made with other settings ({difference}); "
                "give another file or the same settings to resume it"
            )
        self.rows = [dict(row) for row in data.get("results", [])]

    def set_profile(self, profile: Any) -> None:
        """Record the profile the profile methods use; refuse one other than the file's.

        A file made without a profile (no profile method) takes one: only those methods read it.
        """
        stored = self.settings.get("profile")
        if stored is not None and profile is not None and stored != profile:
            raise ValueError(
                f"--json {str(self.path)!r} was made with other settings "
                f"(--profile: file {stored!r}, now {profile!r}); give another file or the same settings"
            )
        self.settings["profile"] = stored if profile is None else profile

    def get(self, key: tuple) -> dict | None:
        """The row of cell ``key`` (``cell_key``), or None when it has not run."""
        return next((row for row in self.rows if cell_key(row) == key), None)

    def add(self, row: dict) -> None:
        """Add (or replace) a finished cell and write the file."""
        self.rows = [r for r in self.rows if cell_key(r) != cell_key(row)] + [row]
        if self.finish is not None:
            self.rows = self.finish(self.rows)
        self.write()

    def refresh(self) -> None:
        """Apply ``finish`` to the rows read back (a new ``--reference`` changes every ratio) and
        write the file if that changed them."""
        if self.finish is None or not self.rows:
            return
        rows = self.finish(self.rows)
        if rows != self.rows:
            self.rows = rows
            self.write()

    def write(self) -> None:
        if self.path is None:
            return
        from ..calibration._profiles import write_atomic

        # One line per cell: the per-book and per-block lists would otherwise take a line per number.
        head = json.dumps({**self.header, "settings": self.settings}, indent=1)
        rows = ",\n".join("  " + json.dumps(row) for row in self.rows)
        text = head[:-2] + ',\n "results": [\n' + rows + "\n ]\n}\n"
        write_atomic(self.path, text.encode("utf-8"))
