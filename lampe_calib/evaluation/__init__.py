"""Evaluation: long documents (PG-19, code), perplexity, passkey retrieval and RULER-style
tasks, each run the same way under every method; the generation tasks through one evaluator
(``evaluate_generation``), their rates with a Wilson interval (``wilson_interval``)."""

from __future__ import annotations

from .._lazy import lazy_exports

# Module -> the public names it defines.
_MODULES = {
    "._books": "DEFAULT_SAMPLES Books BooksAtLength load_books",
    "._sources": "DataSource resolve_data",
    "._perplexity": "PerplexityResult evaluate_perplexity",
    "._bootstrap": "paired_ratio paired_ratio_interval",
    "._generation": "GenerationResult evaluate_generation",
    "._rates": "wilson_interval",
    "._passkey": "PasskeyResult evaluate_passkey passkey_prompts",
    "._ruler": "TASKS RulerResult RulerSources evaluate_ruler ruler_samples score_answer",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
