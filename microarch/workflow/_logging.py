"""Send a job's log records, warnings and stderr to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def job_log(path, *, level=logging.INFO):
    """Write log records, warnings and stderr of the block to ``path``.

    Used by the workflow's rule scripts: everything the job reports (microarch's
    ``logging`` records, ``DegenerateInputWarning`` and other warnings, stray stderr
    output of libraries) ends up in the rule's ``log:`` file. The previous logging
    configuration and ``sys.stderr`` are restored afterwards.

    Parameters
    ----------
    path : path-like
        Log file (created, or appended to).
    level : int
        Lowest level of the records kept.

    Examples
    --------
    >>> import logging, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "job.log")
    >>> with job_log(path):
    ...     logging.getLogger("microarch.demo").info("measured %d scans", 3)
    >>> "measured 3 scans" in open(path).read()
    True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    previous_level = root.level
    with open(path, "a", encoding="utf-8") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(True)
        old_stderr = sys.stderr
        sys.stderr = stream
        try:
            yield logging.getLogger("microarch.workflow")
        except BaseException:
            logging.getLogger("microarch.workflow").exception("the job failed")
            raise
        finally:
            sys.stderr = old_stderr
            logging.captureWarnings(False)
            root.removeHandler(handler)
            root.setLevel(previous_level)
