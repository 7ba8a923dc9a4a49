"""The names other layers compare against, in a module that imports nothing (calibration and
the command lines read them without loading torch)."""

from __future__ import annotations

__all__ = ["LAMPE", "STOCK"]

# The rotary a method or a calibration runs on: the model's own (STOCK), or a rescaled base
# LaMPE composes with (``BASES``, derived from the method entries).
STOCK = "stock"

# LaMPE's name: the method a profile calibrates unless it names another (``profile.method``).
LAMPE = "lampe"
