"""Lazy re-exports (PEP 562) for the package's ``__init__`` modules: a public name is imported
from the private module that defines it the first time it is used, so importing a package (or
``lampe_calib`` itself) loads no heavy library and no sibling it does not need."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, modules: Mapping[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``; ``modules`` maps each module
    (relative to ``package``) to the public names it defines, space-separated.

    Example, in ``engine/__init__.py``:
    ``__all__, __getattr__, __dir__ = lazy_exports(__name__, {"._rope": "Rope rotate_many"})``.
    """
    exports = {name: module for module, names in modules.items() for name in names.split()}
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(importlib.import_module(package), name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
