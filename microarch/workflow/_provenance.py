"""Provenance records: versions, parameters, input checksums, threads, time."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import sys
from pathlib import Path

# Packages whose version can change a result (read from metadata: nothing is imported).
_PACKAGES = ("numpy", "scipy", "scikit-image", "SimpleITK", "numba", "porespy", "pandas",
             "matplotlib", "tifffile", "snakemake")
_CHUNK = 1 << 20


def checksum(path, *, algorithm="sha256") -> str:
    """Hex digest of a file, or of a folder's files (sorted relative names and contents).

    A DICOM series is a folder; its checksum covers every file in it.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.bin")
    >>> with open(path, "wb") as handle:
    ...     _ = handle.write(b"abc")
    >>> checksum(path)[:16]
    'ba7816bf8f01cfea'
    """
    path = Path(path)
    digest = hashlib.new(algorithm)
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(item.relative_to(path)).encode("utf-8") + b"\0")
            _update(digest, item)
    else:
        _update(digest, path)
    return digest.hexdigest()


def _update(digest, path):
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)


def _version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance(*, inputs=(), parameters=None, threads=None) -> dict:
    """A provenance record to keep beside a result.

    Parameters
    ----------
    inputs : iterable of path-like
        Files (or folders) read; each gets its size and SHA-256.
    parameters : mapping, optional
        The parameters the result depends on.
    threads : int, optional
        Threads the computation used.

    Returns
    -------
    dict
        ``microarch`` version, ``python``, ``platform``, ``packages`` (versions of the
        libraries that can change a result), ``numba_threading_layer`` when numba is
        loaded, ``threads``, ``parameters``, ``inputs`` (``path``, ``bytes``, ``sha256``)
        and ``created`` (UTC, ISO 8601).

    Examples
    --------
    >>> record = provenance(parameters={"sigma": 0.8}, threads=2)
    >>> sorted(record)  # doctest: +NORMALIZE_WHITESPACE
    ['created', 'inputs', 'microarch', 'numba_threading_layer', 'packages', 'parameters',
     'platform', 'python', 'threads']
    >>> record["parameters"], record["threads"]
    ({'sigma': 0.8}, 2)
    """
    import microarch

    files = []
    for item in inputs:
        if item is None:
            continue
        path = Path(item)
        size = (sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                if path.is_dir() else path.stat().st_size)
        files.append({"path": os.fspath(item), "bytes": int(size),
                      "sha256": checksum(path)})
    record = {
        "microarch": microarch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "threads": threads,
        "parameters": dict(parameters or {}),
        "inputs": files,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            record["numba_threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet
            record["numba_threading_layer"] = None
    return record
