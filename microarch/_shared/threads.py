"""One place to set how many threads microarch and its libraries use.

Snakemake sets OMP_NUM_THREADS but not numba's or ITK's thread count, so every pipeline
script calls :func:`limit` with ``snakemake.threads`` first.
"""

from __future__ import annotations

import contextlib
import os


def available() -> int:
    """Number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def limit(n: int | None) -> int:
    """Use at most ``n`` threads in numba and SimpleITK; return the count in effect.

    ``None`` means all available CPUs. numba can never exceed ``NUMBA_NUM_THREADS``, which
    is fixed when numba starts.
    """
    import numba

    n = available() if n is None else int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1; got {n}")
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    except ImportError:  # pragma: no cover - SimpleITK is a dependency
        pass
    return n


@contextlib.contextmanager
def threads(n: int | None):
    """Context manager: run the block with ``n`` threads, then restore numba's and
    SimpleITK's previous counts."""
    import numba
    import SimpleITK as sitk

    previous = numba.get_num_threads()
    previous_itk = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    limit(n)
    try:
        yield
    finally:
        numba.set_num_threads(previous)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous_itk)
