"""The one place that decides how microarch compiles numba kernels.

Whether kernels are cached on disk is decided once per process (:func:`cache_enabled`):
off when ``MICROARCH_NUMBA_CACHE`` is "0"; otherwise on when numba has a writable place
to put the cache -- ``NUMBA_CACHE_DIR`` if it is set (numba then uses nothing else),
else this package's ``__pycache__`` or numba's user-wide cache directory. A read-only
install without ``NUMBA_CACHE_DIR`` therefore compiles in memory and still imports. Should
numba still refuse a cache at decoration time, that kernel compiles without one.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile

import numba

_log = logging.getLogger(__name__)


def _writable(folder: str) -> bool:
    """Whether files can be created in ``folder`` (made if missing)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


@functools.cache
def cache_enabled() -> bool:
    """Whether kernels compiled in this process are cached on disk (decided once)."""
    setting = os.environ.get("MICROARCH_NUMBA_CACHE", "1").strip().lower()
    if setting in {"0", "false", "no"}:
        return False
    if numba.config.CACHE_DIR:  # NUMBA_CACHE_DIR: numba looks nowhere else
        return _writable(numba.config.CACHE_DIR)
    if _writable(os.path.join(os.path.dirname(__file__), "__pycache__")):
        return True
    from numba.misc.appdirs import AppDirs

    return _writable(AppDirs(appname="numba", appauthor=False).user_cache_dir)


def njit(func=None, **options):
    """``numba.njit`` with microarch's cache policy; ``fastmath`` stays off (metrology)."""

    def decorate(f):
        if cache_enabled():
            try:
                return numba.njit(cache=True, **options)(f)
            except RuntimeError as exc:  # "cannot cache function ...: no locator available"
                _log.debug("numba cache unavailable for %s: %s", f.__qualname__, exc)
        return numba.njit(**options)(f)

    return decorate if func is None else decorate(func)
