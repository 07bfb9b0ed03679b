"""Progress of long computations, through the standard :mod:`logging` machinery.

Full-size scans take minutes per measure, so the long stages say when they start and
how long they took. Nothing is printed: a caller sees the messages by configuring
logging (``logging.basicConfig(level=logging.INFO)``, the CLI's ``--verbose``, or a
workflow job's log file).
"""

from __future__ import annotations

import contextlib
import logging
import time


@contextlib.contextmanager
def stage(log: logging.Logger, what: str):
    """Log ``what`` at DEBUG when it starts and at INFO, with its duration, when it ends.

    Examples
    --------
    >>> import logging
    >>> with stage(logging.getLogger("demo"), "counting"):
    ...     total = sum(range(10))
    """
    log.debug("%s ...", what)
    start = time.perf_counter()
    yield
    log.info("%s: %.1f s", what, time.perf_counter() - start)
