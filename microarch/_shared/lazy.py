"""Lazy public names for the subpackages: a name's module is imported on first use.

Keeps ``import microarch.measure`` (and friends) light -- no numba, SimpleITK or
Snakemake until a function that needs them is touched.
"""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package, exports, names):
    """``(__getattr__, __dir__)`` for ``package``, whose ``exports`` map each public name
    to the private submodule defining it; ``names`` is the package's ``__all__``."""

    def __getattr__(name):
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        vars(sys.modules[package])[name] = value  # later lookups skip __getattr__
        return value

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__
