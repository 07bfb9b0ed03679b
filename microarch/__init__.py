"""microarch: HR-pQCT trabecular bone microarchitecture.

Read scanner files, segment bone, measure trabecular structure, and compare visits of the
same person to separate what recovers after aromatase-inhibitor withdrawal from what does
not ("skeletal memory").

Importing the package is cheap and has no side effects: submodules (and numba) load on
first use, e.g. ``from microarch import measure``.
"""

import importlib

__version__ = "0.1.0.dev0"

_SUBMODULES = ("io", "segment", "measure", "longitudinal", "phantoms", "qc")

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
