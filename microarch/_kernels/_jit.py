"""The one place that decides how microarch compiles numba kernels.

Caching is on when a writable cache location exists (``NUMBA_CACHE_DIR``, the package
``__pycache__`` or the user cache directory) and ``MICROARCH_NUMBA_CACHE`` is not "0".
numba raises at decoration time when it finds no writable location; we catch that and
compile without a cache, so a read-only install still imports and runs.
"""

from __future__ import annotations

import logging
import os

import numba

_log = logging.getLogger(__name__)


def _caching_requested() -> bool:
    return os.environ.get("MICROARCH_NUMBA_CACHE", "1").strip().lower() not in {"0", "false", "no"}


def njit(func=None, **options):
    """``numba.njit`` with microarch's cache policy; ``fastmath`` stays off (metrology)."""

    def decorate(f):
        if _caching_requested():
            try:
                return numba.njit(cache=True, **options)(f)
            except RuntimeError as exc:  # "cannot cache function ...: no locator available"
                _log.debug("numba cache unavailable for %s: %s", f.__qualname__, exc)
        return numba.njit(**options)(f)

    return decorate if func is None else decorate(func)
