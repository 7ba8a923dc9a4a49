"""Library noise the tools and the notebook do not pass on: progress bars the libraries draw for
themselves, and warnings that are wrong or expected for what this toolkit does.

- transformers' "exceeded the model's predefined maximum length" on every ``generate()`` past the
  window: running past the window is the point of an extension method.
- transformers' GGUF advice to load packed weights in float32 ("... stay quantized regardless"):
  the toolkit picks its dtype on purpose (bfloat16 runs are measured in README).
- tqdm's "IProgress not found. Please update jupyter and ipywidgets" (a ``TqdmWarning``) when a
  library imports ``tqdm.auto`` in a notebook without ipywidgets: the bars are off anyway.

Each is dropped by a filter on the logger that emits it, matching its message, so every other
warning of those modules, and every warning of ours, still shows.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["QUIETED_WARNINGS", "quiet_libraries"]

# (logger, a fragment of the message): the warnings dropped.
QUIETED_WARNINGS = (
    ("transformers.generation.stopping_criteria", "friendly reminder - the current text generation call"),
    ("transformers.quantizers.quantizer_gguf", "stay quantized regardless"),
)


class _DropMessages(logging.Filter):
    """Drops the records whose message holds one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_libraries(progress: bool = True) -> None:
    """Silence, for this process, ``QUIETED_WARNINGS`` and (with ``progress``) the libraries' own
    progress bars (transformers' loading bars, datasets' ones, and the GGUF loader's raw tqdm,
    which only tqdm's ``TQDM_DISABLE`` reaches; tqdm reads it when first imported, so call this
    before anything imports tqdm). Calling it again changes nothing.

    Example: ``from lampe_calib import quiet_libraries; quiet_libraries()`` at the top of a notebook.
    """
    for name, fragment in QUIETED_WARNINGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages((fragment,)))
    if not progress:
        return
    os.environ["TQDM_DISABLE"] = "1"
    warnings.filterwarnings("ignore", message="IProgress not found")
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
