"""A fast random trabecular-like structure for benchmarks.

Bone is a shell around the zero level set of a smooth Gaussian random field: the voxels
where ``|field|`` is below its ``bv_tv`` quantile. The zero set of such a field is a
single interconnected, sponge-like surface, so the shell looks like a network of curved
plates and struts (Cahn 1965's spinodal patterns), unlike thresholded blobs which fall
apart into particles at BV/TV 0.2. The field is periodic, so the volume tiles.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from microarch._shared.validation import as_spacing, non_negative_int


def random_trabecular(
    shape,
    *,
    spacing=0.0607,
    seed: int = 0,
    bv_tv: float = 0.2,
    correlation_mm: float = 0.2,
    anisotropy: float = 1.3,
):
    """Random trabecular-like bone with a prescribed BV/TV, in about a second at 256³.

    Parameters
    ----------
    shape : tuple of 3 int
        Image shape (z, y, x).
    spacing : float or tuple of 3 float, optional
        Voxel size (mm).
    seed : int, optional
        Random seed; the same seed, shape and parameters give the same volume.
    bv_tv : float, optional
        Bone volume fraction, met to within one voxel (up to ties).
    correlation_mm : float, optional
        Standard deviation (mm) of the Gaussian smoothing of white noise across z; it sets
        the size of the marrow spaces (the default gives Tb.Sp of roughly 0.6-0.8 mm).
    anisotropy : float, optional
        The smoothing is this many times longer along z.

    Returns
    -------
    Phantom
        ``truth``: ``BV``, ``TV``, ``BV/TV`` (digitised), ``n_voxels`` and ``parameters``
        (no Euler characteristic: computing it would double the run time; use
        ``skimage.measure.euler_number`` when needed).

    Examples
    --------
    >>> from microarch.phantoms import random_trabecular
    >>> bone = random_trabecular((32, 32, 32), seed=7)
    >>> round(bone.truth["BV/TV"], 3)
    0.2
    """
    from scipy import fft

    from microarch._shared import threads
    from microarch.phantoms._analytic import Phantom
    from microarch.phantoms._trabecular import _as_shape

    shape = _as_shape(shape)
    spacing = as_spacing(spacing)
    non_negative_int(seed, name="seed")
    if isinstance(bv_tv, bool) or not isinstance(bv_tv, Real) or not 0 < bv_tv < 1:
        raise ValueError(f"bv_tv must lie strictly between 0 and 1; got {bv_tv!r}")
    for value, name in ((correlation_mm, "correlation_mm"), (anisotropy, "anisotropy")):
        if (
            isinstance(value, bool)
            or not isinstance(value, Real)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name} must be a positive number; got {value!r}")

    rng = np.random.default_rng(int(seed))
    field = rng.standard_normal(shape, dtype=np.float32)
    sigma = [
        correlation_mm * anisotropy / spacing[0],
        correlation_mm / spacing[1],
        correlation_mm / spacing[2],
    ]
    # Periodic Gaussian smoothing in Fourier space; pocketfft splits the work over
    # independent lines, so the result is the same for any number of workers.
    workers = threads.available()
    spectrum = fft.rfftn(field, workers=workers)
    frequencies = [fft.fftfreq(shape[0]), fft.fftfreq(shape[1]), fft.rfftfreq(shape[2])]
    for axis, (f, s) in enumerate(zip(frequencies, sigma)):
        transfer = np.exp(-2.0 * (math.pi * f * s) ** 2).astype(np.float32)
        spectrum *= transfer.reshape([-1 if a == axis else 1 for a in range(3)])
    field = fft.irfftn(spectrum, s=shape, workers=workers)
    del spectrum
    np.abs(field, out=field)
    n_bone = round(bv_tv * field.size)
    if n_bone == 0:
        mask = np.zeros(shape, dtype=bool)
    else:
        threshold = np.partition(field.ravel(), n_bone - 1)[n_bone - 1]
        mask = field <= threshold
    count = int(np.count_nonzero(mask))
    voxel_volume = float(np.prod(spacing))
    truth = {
        "BV": count * voxel_volume,
        "TV": field.size * voxel_volume,
        "BV/TV": count / field.size,
        "n_voxels": count,
        "parameters": {
            "kind": "random_trabecular",
            "shape": shape,
            "spacing": tuple(spacing),
            "seed": int(seed),
            "bv_tv": float(bv_tv),
            "correlation_mm": float(correlation_mm),
            "anisotropy": float(anisotropy),
        },
    }
    return Phantom(mask=mask, spacing=tuple(spacing), truth=truth)
