"""Evaluation: long documents (PG-19, code), perplexity, passkey retrieval and RULER-style
tasks, each run the same way under every method."""

from __future__ import annotations

from .._lazy import lazy_exports

# Public name -> the private module that defines it.
_EXPORTS = {
    "DEFAULT_SAMPLES": "._books",
    "Books": "._books",
    "BooksAtLength": "._books",
    "load_books": "._books",
    "DataSource": "._sources",
    "resolve_data": "._sources",
    "PerplexityResult": "._perplexity",
    "evaluate_perplexity": "._perplexity",
    "PasskeyResult": "._passkey",
    "evaluate_passkey": "._passkey",
    "passkey_prompts": "._passkey",
    "TASKS": "._ruler",
    "RulerResult": "._ruler",
    "RulerSources": "._ruler",
    "evaluate_ruler": "._ruler",
    "ruler_samples": "._ruler",
    "score_answer": "._ruler",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
