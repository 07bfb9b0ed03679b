"""Imaging model: turn a phantom into a synthetic HR-pQCT scan (arrays only).

Steps (domain notes §9.2): bone volume fraction on the phantom's grid (optionally
sub-voxel sampled) -> density (tissue / marrow mixture, mg HA/cm³) -> Gaussian point
spread function -> area-weighted resampling to the output voxel size -> Gaussian noise
-> Scanco native units (int16) through the scanner calibration:

    density = (density_slope / mu_scaling) * native + density_intercept

(ORMIR-XCT ``hrpqct_rescale.py``, Bonelab ``aim_calibration_header.py``, ITKIOScanco).
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Integral, Real

import numpy as np

from microarch._shared.validation import as_mask, as_spacing, non_negative_int

#: XtremeCT II calibration seen in a real header (ORMIR-XCT GRAY_JOINT example):
#: mu = native / mu_scaling [1/cm]; density = slope * mu + intercept [mg HA/cm³].
XTREMECT2_CALIBRATION = {
    "mu_scaling": 8192.0,
    "density_slope": 1603.51904,
    "density_intercept": -391.209015,
    "mu_water": 0.2409,
    "density_unit": "mg HA/ccm",
}

_INT16 = np.iinfo(np.int16)


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticScan:
    """A rendered scan.

    Attributes
    ----------
    native : ndarray of int16
        Scanco native units, as stored in an AIM file.
    density : ndarray of float32
        ``density_slope / mu_scaling * native + density_intercept`` (mg HA/cm³): what a
        reader returns, quantisation included.
    spacing : tuple of 3 float
        Output voxel size (mm).
    calibration : dict
        ``mu_scaling``, ``density_slope`` (mg HA/cm³ per 1/cm), ``density_intercept``
        (mg HA/cm³), ``mu_water`` (1/cm), ``density_unit``.
    fraction : ndarray of float32
        Bone volume fraction of each output voxel (area-weighted, before blur and
        noise): the ground truth at the scan's resolution.
    truth : dict
        Rendering parameters and ``BV/TV`` (mean of ``fraction``).
    """

    native: np.ndarray
    density: np.ndarray
    spacing: tuple
    calibration: dict
    fraction: np.ndarray
    truth: dict

    def __repr__(self) -> str:
        return f"SyntheticScan(shape={self.native.shape}, spacing={self.spacing})"


def _nonnegative(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite non-negative number; got {value!r}")
    return float(value)


def _check_calibration(calibration):
    if calibration is None:
        return dict(XTREMECT2_CALIBRATION)
    missing = {"mu_scaling", "density_slope", "density_intercept"} - set(calibration)
    if missing:
        raise ValueError(f"calibration lacks {sorted(missing)}; see XTREMECT2_CALIBRATION")
    full = dict(XTREMECT2_CALIBRATION)
    full.update(calibration)
    if float(full["mu_scaling"]) <= 0 or float(full["density_slope"]) == 0:
        raise ValueError("calibration needs mu_scaling > 0 and a non-zero density_slope")
    return full


def _box_resample_axis(image, axis, h_in, h_out, n_out):
    """Average ``image`` over output voxels of size ``h_out`` along ``axis``.

    Weights are the exact overlaps of input and output voxels, normalised per output
    voxel (an output voxel reaching past the input's end averages the part it covers).
    """
    n_in = image.shape[axis]
    edges_out = np.arange(n_out + 1) * h_out
    first = np.minimum(np.floor(edges_out[:-1] / h_in + 1e-9).astype(np.int64), n_in - 1)
    last = np.clip(np.ceil(edges_out[1:] / h_in - 1e-9).astype(np.int64), 1, n_in) - 1
    last = np.maximum(last, first)
    width = int(np.max(last - first)) + 1
    sources, weights = [], []
    for step in range(width):
        source = first + step
        lo = np.maximum(edges_out[:-1], source * h_in)
        hi = np.minimum(edges_out[1:], (source + 1) * h_in)
        weights.append(np.where(source <= last, np.clip(hi - lo, 0.0, None), 0.0))
        sources.append(np.minimum(source, n_in - 1))
    total = np.sum(weights, axis=0)
    # An output voxel entirely past the input's end repeats the last input voxel.
    weights[0] = np.where(total > 0, weights[0], 1.0)
    total = np.where(total > 0, total, 1.0)
    shape = [1] * image.ndim
    shape[axis] = n_out
    out = None
    for source, weight in zip(sources, weights):
        term = np.take(image, source, axis=axis) * (weight / total).astype(np.float32).reshape(
            shape
        )
        out = term if out is None else out + term
    return out


def _resample(image, spacing_in, spacing_out, shape_out):
    for axis in range(3):
        if (
            math.isclose(spacing_in[axis], spacing_out[axis], rel_tol=1e-9)
            and image.shape[axis] == shape_out[axis]
        ):
            continue
        image = _box_resample_axis(
            image, axis, spacing_in[axis], spacing_out[axis], shape_out[axis]
        )
    return np.ascontiguousarray(image, dtype=np.float32)


def render_scan(
    source,
    *,
    spacing=None,
    spacing_out=0.0607,
    psf_sigma_voxels: float = 0.8,
    noise_sd: float = 80.0,
    tissue_density: float = 1100.0,
    marrow_density: float = 25.0,
    upsample: int = 1,
    seed: int = 0,
    calibration: dict | None = None,
    threads: int | None = None,
) -> SyntheticScan:
    """Render a phantom as an HR-pQCT scan in native units, with its calibration.

    Parameters
    ----------
    source : phantom or array_like of bool
        A phantom (anything with ``mask`` and ``spacing``; a :class:`TrabecularPhantom`
        or :class:`CorticalPhantom` can also be sampled below its voxel size) or a mask.
    spacing : float or tuple of 3 float, optional
        Voxel size (mm) of a plain mask; taken from a phantom otherwise.
    spacing_out : float or tuple of 3 float, optional
        Output voxel size (mm): 0.0607 (XtremeCT II) or 0.082 (XtremeCT I). The output
        covers the same physical box, ``round(n * spacing / spacing_out)`` voxels per axis.
    psf_sigma_voxels : float, optional
        Standard deviation of the Gaussian point spread function, in output voxels.
    noise_sd : float, optional
        Standard deviation of the added Gaussian noise (mg HA/cm³); real XtremeCT II soft
        tissue shows about 70-90.
    tissue_density, marrow_density : float, optional
        Density (mg HA/cm³) of bone tissue and of marrow / soft tissue.
    upsample : int, optional
        Sub-voxel samples per axis for phantoms that know their geometry (1 = use the
        voxel mask as it is).
    seed : int, optional
        Seed of the noise.
    calibration : dict, optional
        ``mu_scaling``, ``density_slope``, ``density_intercept`` (and optionally
        ``mu_water``); default :data:`XTREMECT2_CALIBRATION`.
    threads : int, optional
        numba threads for sub-voxel sampling.

    Returns
    -------
    SyntheticScan
        ``native`` (int16), ``density`` (float32, mg HA/cm³), ``spacing``,
        ``calibration``, ``fraction`` and ``truth``.

    Notes
    -----
    The density image is mixed linearly from the bone fraction, blurred with the PSF on
    the input grid (sigma converted to input voxels per axis), then averaged over each
    output voxel (exact overlap weights), so partial volume and blur are both modelled.
    Noise is added in density units and the result is quantised to native int16:
    ``native = round((density - intercept) * mu_scaling / slope)``.

    References
    ----------
    Whittier DE et al. (2020) Guidelines for the assessment of bone density and
    microarchitecture in vivo using high-resolution peripheral quantitative computed
    tomography. Osteoporos Int 31:1607-1627. doi:10.1007/s00198-020-05438-5

    Examples
    --------
    >>> from microarch.phantoms import plate, render_scan
    >>> scan = render_scan(plate(4, spacing=0.0607), noise_sd=0.0, psf_sigma_voxels=0.0)
    >>> scan.native.dtype.name, round(float(scan.density.max()))
    ('int16', 1100)
    """
    if hasattr(source, "mask") and hasattr(source, "spacing"):
        mask = as_mask(source.mask, name="source.mask")
        if spacing is not None and as_spacing(spacing) != tuple(source.spacing):
            raise ValueError("spacing differs from the phantom's own spacing; leave it out")
        spacing_in = as_spacing(source.spacing)
    else:
        mask = as_mask(source, name="source")
        spacing_in = as_spacing(spacing)
    spacing_out = as_spacing(spacing_out, name="spacing_out")
    psf = _nonnegative(psf_sigma_voxels, "psf_sigma_voxels")
    noise = _nonnegative(noise_sd, "noise_sd")
    for value, name in ((tissue_density, "tissue_density"), (marrow_density, "marrow_density")):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number (mg HA/cm³); got {value!r}")
    if isinstance(upsample, bool) or not isinstance(upsample, Integral) or not 1 <= upsample <= 4:
        raise ValueError(f"upsample must be an integer from 1 to 4; got {upsample!r}")
    if upsample > 1 and not hasattr(source, "volume_fraction"):
        raise ValueError(
            "upsample > 1 needs a phantom that knows its geometry (TrabecularPhantom, "
            "CorticalPhantom); a voxel mask has nothing below its voxel size"
        )
    non_negative_int(seed, name="seed")
    calibration = _check_calibration(calibration)

    if upsample > 1:
        fraction_in = source.volume_fraction(int(upsample), threads=threads)
    else:
        fraction_in = mask.astype(np.float32)
    shape_out = tuple(
        max(1, round(n * h_in / h_out))
        for n, h_in, h_out in zip(mask.shape, spacing_in, spacing_out)
    )
    density = np.float32(marrow_density) + np.float32(tissue_density - marrow_density) * fraction_in
    if psf > 0:
        from scipy import ndimage

        sigma = [psf * h_out / h_in for h_in, h_out in zip(spacing_in, spacing_out)]
        density = ndimage.gaussian_filter(density, sigma=sigma, mode="nearest", truncate=4.0)
    density = _resample(density, spacing_in, spacing_out, shape_out)
    fraction = _resample(fraction_in, spacing_in, spacing_out, shape_out)
    if noise > 0:
        rng = np.random.default_rng(int(seed))
        density += noise * rng.standard_normal(shape_out, dtype=np.float32)

    scale = float(calibration["mu_scaling"]) / float(calibration["density_slope"])
    intercept = float(calibration["density_intercept"])
    native_float = np.rint((density.astype(np.float64) - intercept) * scale)
    native = np.clip(native_float, _INT16.min, _INT16.max).astype(np.int16)
    density_read = (native.astype(np.float64) / scale + intercept).astype(np.float32)
    truth = {
        "tissue_density": float(tissue_density),
        "marrow_density": float(marrow_density),
        "psf_sigma_voxels": psf,
        "noise_sd": noise,
        "upsample": int(upsample),
        "spacing_in": tuple(spacing_in),
        "seed": int(seed),
        "BV/TV": float(fraction.mean(dtype=np.float64)),
        "n_clipped": int(np.count_nonzero(native_float != native)),
    }
    return SyntheticScan(
        native=native,
        density=density_read,
        spacing=tuple(spacing_out),
        calibration=calibration,
        fraction=fraction,
        truth=truth,
    )
