"""Calibration profiles: versioned JSON (docs/design.md §3.4), validated on load, written atomically.

A profile says which model it is for (alias, source, revision, window W, RoPE), how LaMPE is
run (head, tail, mode, attention factor), the fitted ``m(L)`` with its quality, the measured
V-curves, and where it all came from. ``Profile.to_lampe_config()`` turns it into the
``LampeConfig`` that ``apply_lampe`` runs, so ``apply_lampe(model, load_profile("reference"))``
works. The ``sigmoid.status`` is "fitted", "imported" (values taken from another release,
not re-calibrated) or "degenerate" (no usable fit; ``message`` says why). A fitted
``sigmoid`` may also hold ``objective`` (the fit used: "argmin" or "excess") and ``fits``
(every fit made, with its R² and leave-one-length-out excess).

A profile of another method (``lampe-calibrate --method``, docs/design.md §6) has ``method`` and
``knob`` (per length the values tried, their PPL and the best; the best single value) instead
of LaMPE settings and a sigmoid; ``knob_values(L)`` gives what it chose for a length.

Where profiles live: the shipped ones inside the package (``lampe_calib/profiles``, read-only to
the tools), a user's own calibrations in ``user_profiles_dir()`` (``$LAMPE_CALIB_HOME/profiles``,
else ``$XDG_DATA_HOME/lampe-calib/profiles``, else ``~/.local/share/lampe-calib/profiles``), where
``lampe-calibrate`` writes by default. ``load_profile(name)`` looks there first: a user's
calibration of a model wins over the shipped one of the same name, and says so (a warning).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._checks import is_integer
from ..methods._lampe import MODES, LampeConfig, SigmoidMapping
from ..models._facts import ModelFacts, check_transfer, portable_source

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

SCHEMA_VERSION = 1
STATUSES = ("fitted", "imported", "degenerate")
_SECTIONS = ("model", "window", "rope", "lampe", "sigmoid", "curves", "provenance")
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


def _known_keys(path: str, section: Mapping[str, Any], kind: str | None = None) -> None:
    unknown = sorted(set(section) - set(_KEYS[kind or path]))
    if unknown:
        raise ValueError(
            f"profile field '{path}.{unknown[0]}' is not part of schema version {SCHEMA_VERSION}"
        )


def _fail(path: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"profile field '{path}' must be {expected}, got {value!r}")


def _number(path: str, value: Any, *, optional: bool = False, positive: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, "a finite number" + (" or null" if optional else ""), value)
    if positive and value <= 0:
        raise _fail(path, "> 0", value)
    return float(value)


def _integer(path: str, value: Any, minimum: int, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if not is_integer(value) or value < minimum:
        raise _fail(path, f"an integer >= {minimum}", value)
    return value


def _text(path: str, value: Any, *, optional: bool = False, choices: tuple[str, ...] = ()) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (choices and value not in choices):
        raise _fail(path, f"one of {choices}" if choices else "a string", value)
    return value


def _mapping(path: str, value: Any, *, optional: bool = False) -> dict[str, Any] | None:
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise _fail(path, "an object", value)
    return dict(value)


def _list(path: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise _fail(path, "a list", value)
    return list(value)


def _plain(value: Any) -> Any:
    """A deep copy as plain JSON types (dicts, lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _get(data: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in data:
        raise ValueError(
            f"profile field '{path}.{key}' is missing" if path else f"profile field '{key}' is missing"
        )
    return data[key]


@dataclass(frozen=True)
class Profile:
    """A calibration profile; see the module docstring and docs/design.md §3.4 for the fields.

    Sections are kept as validated plain data (``model``, ``rope``, ``lampe``, ``sigmoid``,
    ``curves``, ``provenance``), so ``from_dict(p.to_dict()) == p`` and a profile diffs cleanly.

    Example:
        >>> profile = load_profile("llama3-8b")
        >>> round(profile.mapping_length(32768))
        4501
    """

    model: Mapping[str, Any]
    window: int
    rope: Mapping[str, Any]
    lampe: Mapping[str, Any]
    sigmoid: Mapping[str, Any]
    curves: tuple[Mapping[str, Any], ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    # The method the profile calibrates (docs/design.md §6) and, for one other than LaMPE, the knob it
    # chose per length (``_check_knob``); a LaMPE profile has no ``knob`` and no such fields in
    # its JSON.
    method: str = "lampe"
    knob: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.method != "lampe":
            _check_knob(self.method, _mapping("knob", self.knob))
            object.__setattr__(self, "knob", MappingProxyType(_plain(self.knob)))
        elif self.knob is not None:
            raise _fail("knob", "absent in a LaMPE profile (its m(L) is the sigmoid)", self.knob)
        self._validate()
        # Own, read-only copies: a profile never aliases (or lets anyone edit) the caller's data.
        for name in ("model", "rope", "lampe", "sigmoid", "provenance"):
            object.__setattr__(self, name, MappingProxyType(_plain(getattr(self, name))))
        object.__setattr__(self, "curves", tuple(MappingProxyType(_plain(c)) for c in self.curves))

    def _validate(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise _fail(
                "schema_version", f"{SCHEMA_VERSION} (this lampe-calib's schema)", self.schema_version
            )
        model = _mapping("model", self.model)
        _known_keys("model", model)
        _text("model.alias", _get(model, "alias", "model"))
        _text("model.source", _get(model, "source", "model"), optional=True)
        _text("model.revision", model.get("revision"), optional=True)
        _text("model.family", model.get("family"), optional=True)  # absent in profiles before facts
        _integer("model.head_dim", model.get("head_dim"), 1, optional=True)
        _integer("window", self.window, 1)
        rope = _mapping("rope", self.rope)
        _known_keys("rope", rope)
        _number("rope.theta", _get(rope, "theta", "rope"), positive=True)
        _text("rope.type", _get(rope, "type", "rope"))
        _mapping("rope.scaling", rope.get("scaling", {}))
        if self.method != "lampe":  # no LaMPE settings, no sigmoid: the knob holds the result
            return
        lampe = _mapping("lampe", self.lampe)
        _known_keys("lampe", lampe)
        head = _integer("lampe.head", _get(lampe, "head", "lampe"), 0)
        tail = _integer("lampe.tail", _get(lampe, "tail", "lampe"), 0)
        _text("lampe.mode", _get(lampe, "mode", "lampe"), choices=MODES)
        base = _mapping("lampe.base", lampe.get("base"), optional=True)  # absent: the stock rotary
        if base is not None:
            _known_keys("lampe.base", base)
            _text("lampe.base.type", _get(base, "type", "lampe.base"), choices=("yarn", "ntk"))
            _integer("lampe.base.factor", _get(base, "factor", "lampe.base"), 2)
        _number("lampe.attention_factor", _get(lampe, "attention_factor", "lampe"), positive=True)
        self._check_sigmoid(_mapping("sigmoid", self.sigmoid), head + tail)  # type: ignore[operator]
        if not isinstance(self.curves, (list, tuple)):
            raise _fail("curves", "a list", self.curves)
        for i, curve in enumerate(self.curves):
            curve = _mapping(f"curves[{i}]", curve)
            _known_keys(f"curves[{i}]", curve, "curves")
            _integer(f"curves[{i}].length", _get(curve, "length", f"curves[{i}]"), 2)
            mappings = _list(f"curves[{i}].mappings", _get(curve, "mappings", f"curves[{i}]"))
            ppl = _list(f"curves[{i}].ppl", _get(curve, "ppl", f"curves[{i}]"))
            if len(mappings) != len(ppl):
                raise _fail(f"curves[{i}].ppl", f"a list as long as mappings ({len(mappings)})", ppl)
            _integer(f"curves[{i}].books", _get(curve, "books", f"curves[{i}]"), 1)
            _integer(f"curves[{i}].tokens", _get(curve, "tokens", f"curves[{i}]"), 1)
        provenance = _mapping("provenance", self.provenance)
        _known_keys("provenance", provenance)
        if not isinstance(provenance.get("imported", False), bool):
            raise _fail("provenance.imported", "true or false", provenance.get("imported"))

    @staticmethod
    def _check_sigmoid(sigmoid: dict[str, Any], head_tail: int) -> None:
        _known_keys("sigmoid", sigmoid)
        status = _text("sigmoid.status", _get(sigmoid, "status", "sigmoid"), choices=STATUSES)
        if status == "degenerate":
            _text("sigmoid.message", _get(sigmoid, "message", "sigmoid"))
            return
        a = _number("sigmoid.a", _get(sigmoid, "a", "sigmoid"))
        _number("sigmoid.b", _get(sigmoid, "b", "sigmoid"))
        c = _number("sigmoid.c", _get(sigmoid, "c", "sigmoid"), positive=True)
        if a is not None and a <= 0:
            raise _fail("sigmoid.a", "> 0 (m grows with L)", a)
        if c is not None and c <= head_tail:
            raise _fail("sigmoid.c", f"> lampe.head + lampe.tail = {head_tail}", c)
        _text("sigmoid.c_mode", _get(sigmoid, "c_mode", "sigmoid"), choices=("fixed", "free"))
        _number("sigmoid.r2", sigmoid.get("r2"), optional=True)
        # Which fit the profile uses (absent in profiles made before the excess fit: "argmin").
        _text("sigmoid.objective", sigmoid.get("objective"), optional=True, choices=("argmin", "excess"))
        ci = _mapping("sigmoid.ci", sigmoid.get("ci"), optional=True)
        if ci:
            _known_keys("sigmoid.ci", ci)
        for name in ("a", "b", "c"):
            if ci and name in ci:
                bounds = _list(f"sigmoid.ci.{name}", ci[name])
                if len(bounds) != 2 or any(_number(f"sigmoid.ci.{name}", v) is None for v in bounds):
                    raise _fail(f"sigmoid.ci.{name}", "[low, high]", ci[name])

    @property
    def alias(self) -> str:
        return self.model["alias"]

    @property
    def status(self) -> str:
        return self.sigmoid["status"]

    def knob_values(self, length: int) -> dict[str, float]:
        """The knob value a non-LaMPE profile chose for inputs of ``length`` tokens: the best
        measured at that length, else the best single value over the calibrated lengths.

        Raises:
            ValueError: a LaMPE profile (its m(L) is ``mapping_length``).
        """
        if self.knob is None:
            raise ValueError(f"profile '{self.alias}' calibrates LaMPE: it has m(L), not knob values")
        best = {int(row["length"]): row["best"] for row in self.knob["lengths"]}
        return {self.knob["name"]: best.get(int(length), self.knob["single"])}

    def facts(self) -> ModelFacts:
        """The facts of the model the profile was fitted on (family and head size None in a
        profile written before they were recorded: then not compared)."""
        return ModelFacts(
            family=self.model.get("family"),
            window=self.window,
            rope_type=self.rope["type"],
            rope_theta=self.rope["theta"],
            rope_scaling=self.rope.get("scaling", {}),
            head_dim=self.model.get("head_dim"),
        )

    def check_model(self, model: Any, *, allow_transfer: bool = False) -> None:
        """Refuse ``model`` when a fact its positions depend on differs from the profile's
        (``ModelFacts``), unless ``allow_transfer``; log a transfer, and a model from another
        source whose facts are the same (a local copy, a fine-tune of the same base).

        Raises:
            ValueError: one line naming the profile's and the model's facts and what differs.
        """
        from ..models._registry import model_info  # (transformers: only when a model is checked)

        info = model_info(model)
        theirs, ours = ModelFacts.from_info(info), self.facts()
        mine = self.model.get("source") or self.alias
        source = portable_source(info) or type(model).__name__
        check_transfer(
            f"profile '{self.alias}' was fitted",
            (mine, ours),
            (source, theirs),
            allow_transfer=allow_transfer,
            same_source=self.alias in (info.alias, source) or mine == source,
            opt_in="pass allow_transfer=True (--allow-transfer) to apply it anyway",
        )

    def to_lampe_config(self) -> LampeConfig:
        """The ``LampeConfig`` with this profile's m(L), head, tail, mode and attention factor.

        Raises:
            ValueError: the profile is degenerate (holds no usable fit), or calibrates another method.
        """
        if self.method != "lampe":
            raise ValueError(f"profile '{self.alias}' calibrates method {self.method!r}, not LaMPE")
        if self.status == "degenerate":
            raise ValueError(f"profile '{self.alias}' holds no usable m(L) fit: {self.sigmoid['message']}")
        s = self.sigmoid
        return LampeConfig(
            head=self.lampe["head"],
            tail=self.lampe["tail"],
            sigmoid=SigmoidMapping(a=float(s["a"]), b=float(s["b"]), c=float(s["c"])),
            mode=self.lampe["mode"],
            attention_factor=float(self.lampe["attention_factor"]),
        )

    def curve_points(self) -> dict[int, tuple[list[float], list[float]]]:
        """``(m, log PPL)`` of each curve, the unmapped model at m = L when it was measured
        (``Curve.points``' convention, read back from the profile's records)."""
        points = {}
        for curve in self.curves:
            xs, ys = [float(m) for m in curve["mappings"]], [math.log(p) for p in curve["ppl"]]
            if curve.get("unmapped_ppl") is not None:
                xs.append(float(curve["length"]))
                ys.append(math.log(curve["unmapped_ppl"]))
            points[int(curve["length"])] = (xs, ys)
        return points

    def mapping_length(self, length: int) -> float:
        """m for an input of ``length`` tokens (``LampeConfig.mapping_length_for``)."""
        return self.to_lampe_config().mapping_length_for(length)

    def to_dict(self) -> dict[str, Any]:
        other = {} if self.method == "lampe" else {"method": self.method, "knob": _plain(self.knob)}
        return {
            **other,
            "schema_version": self.schema_version,
            "model": _plain(self.model),
            "window": self.window,
            "rope": _plain(self.rope),
            "lampe": _plain(self.lampe),
            "sigmoid": _plain(self.sigmoid),
            "curves": [_plain(c) for c in self.curves],
            "provenance": _plain(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        """A validated profile; ``ValueError`` names the first bad or missing field."""
        data = _mapping("(top level)", data)
        version = _get(data, "schema_version", "")
        if is_integer(version) and version > SCHEMA_VERSION:
            raise ValueError(
                f"profile field 'schema_version' is {version}, newer than this lampe-calib reads "
                f"({SCHEMA_VERSION}); upgrade lampe-calib"
            )
        unknown = sorted(set(data) - set(_SECTIONS) - {"schema_version", "method", "knob"})
        if unknown:
            raise ValueError(f"profile field '{unknown[0]}' is not part of schema version {SCHEMA_VERSION}")
        method = _text("method", data.get("method", "lampe"))
        # A profile of another method has no LaMPE settings or sigmoid of its own.
        optional = (
            ("curves", "provenance") if method == "lampe" else ("curves", "provenance", "lampe", "sigmoid")
        )
        values = {key: _get(data, key, "") for key in _SECTIONS if key not in optional}
        values.update({key: data.get(key, {}) for key in ("lampe", "sigmoid") if key in optional})
        return cls(
            method=method,
            knob=data.get("knob"),
            schema_version=version,
            curves=tuple(_list("curves", data.get("curves", []))),
            provenance=data.get("provenance", {}),
            **values,
        )


def _check_knob(method: str, knob: dict[str, Any]) -> None:
    """A non-LaMPE profile's ``knob``: ``name`` (the main knob), ``single`` (the best single value
    over lengths), ``points`` (evaluated points per length, the budget) and ``lengths``: per length,
    the ``values`` tried with their ``ppl``, the ``best`` value and the method's ``default``."""
    _text("knob.name", _get(knob, "name", "knob"))
    _number("knob.single", _get(knob, "single", "knob"))
    _integer("knob.points", _get(knob, "points", "knob"), 1)
    rows = _list("knob.lengths", _get(knob, "lengths", "knob"))
    for i, row in enumerate(rows):
        path = f"knob.lengths[{i}]"
        row = _mapping(path, row)
        _integer(f"{path}.length", _get(row, "length", path), 2)
        values = _list(f"{path}.values", _get(row, "values", path))
        ppl = _list(f"{path}.ppl", _get(row, "ppl", path))
        if len(values) != len(ppl) or not values:
            raise _fail(f"{path}.ppl", f"a non-empty list as long as values ({len(values)})", ppl)
        best = _number(f"{path}.best", _get(row, "best", path))
        if best not in values:
            raise _fail(f"{path}.best", f"one of the values tried {values}", best)
        _number(f"{path}.default", row.get("default"), optional=True)


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
