"""``quiet_libraries``: the listed library warnings are dropped, every other warning of the same
loggers still shows, and the listed messages still exist in the installed libraries."""

from __future__ import annotations

import importlib
import inspect
import logging

import pytest

from lampe_calib._quiet import QUIETED_WARNINGS, quiet_libraries


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("name, fragment", QUIETED_WARNINGS)
def test_listed_warnings_are_dropped_and_others_kept(name, fragment):
    # The message still comes from that module: a reworded warning would slip through unnoticed.
    module = importlib.import_module(name)
    assert fragment in inspect.getsource(module)
    quiet_libraries(progress=False)
    quiet_libraries(progress=False)  # again: one filter, not two
    logger = logging.getLogger(name)
    assert sum(type(f).__name__ == "_DropMessages" for f in logger.filters) == 1
    records = _Records()
    logger.addHandler(records)
    try:
        logger.warning("Note: the text here %s", fragment)
        logger.warning("another warning of the same module")
    finally:
        logger.removeHandler(records)
    assert records.messages == ["another warning of the same module"]
