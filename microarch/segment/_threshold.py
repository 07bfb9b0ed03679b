"""Global-threshold bone segmentation of HR-pQCT scans (the Scanco standard protocols)."""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from microarch._shared.validation import as_roi, as_spacing, check_choice
from microarch.segment._errors import as_image
from microarch.segment._filters import (
    KERNELS,
    _as_sigma,
    _as_support,
    gaussian_filter,
    laplace_hamming_filter,
)

METHODS = ("gauss", "laplace_hamming")

#: Named parameter sets for :func:`threshold_bone` and :func:`~microarch.segment.compartments`.
#: Every entry can be overridden by the keyword of the same name.
PRESETS = MappingProxyType({
    # XtremeCT II standard: IPL seg_gauss sigma 0.8 voxel, support 1 voxel, 320 mg HA/cm³
    # in the trabecular and 450 mg HA/cm³ in the cortical compartment, upper 3000
    # (TimelapsedHRpQCT configs/defaults.yml; Scanco uct_evaluation scripts #29, #30).
    "xct2": MappingProxyType({
        "method": "gauss", "sigma": 0.8, "support": 1, "kernel": "sampled",
        "trabecular_threshold": 320.0, "cortical_threshold": 450.0,
        "upper_threshold": 3000.0, "min_size": 0, "relative_threshold": None,
        "epsilon": 0.45, "cutoff": 0.3, "amplitude": 1.0,
    }),
    # XtremeCT I standard (82 µm; Laib et al. 1998, Boutroy et al. 2005): trabecular bone
    # from a Laplace-Hamming filtered image thresholded at 40 % of its maximum. The
    # compartments are contoured as for XCT II (Gaussian, 450 mg HA/cm³). The filter
    # constants are those of the XCT II Laplace-Hamming protocol; this preset is
    # literature-derived and has not been checked against Scanco output.
    "xct1": MappingProxyType({
        "method": "laplace_hamming", "sigma": 0.8, "support": 1, "kernel": "sampled",
        "trabecular_threshold": None, "cortical_threshold": 450.0,
        "upper_threshold": math.inf, "min_size": 0, "relative_threshold": 0.40,
        "epsilon": 0.45, "cutoff": 0.3, "amplitude": 1.0,
    }),
})


def resolve_preset(preset, **overrides):
    """Parameters of ``preset`` with every non-None override applied."""
    check_choice(preset, tuple(PRESETS), name="preset")
    params = dict(PRESETS[preset])
    for key, value in overrides.items():
        if key not in params:
            raise TypeError(f"unknown segmentation parameter {key!r}")
        if value is not None:
            params[key] = value
    check_choice(params["method"], METHODS, name="method")
    check_choice(params["kernel"], KERNELS, name="kernel")
    _as_sigma(params["sigma"])
    _as_support(params["support"])
    for key in ("trabecular_threshold", "cortical_threshold", "upper_threshold"):
        value = params[key]
        if value is not None and math.isnan(float(value)):
            raise ValueError(f"{key} must be a number; got {value}")
    rel = params["relative_threshold"]
    if rel is not None and not (0.0 < float(rel) <= 1.0):
        raise ValueError(f"relative_threshold must be in (0, 1]; got {rel}")
    if int(params["min_size"]) < 0:
        raise ValueError(f"min_size must be >= 0 voxels; got {params['min_size']}")
    return params


def smooth(image, params):
    """The Gaussian-filtered image used for contouring and for the 'gauss' method."""
    return gaussian_filter(image, sigma=params["sigma"], support=params["support"],
                           kernel=params["kernel"])


def threshold_smoothed(smoothed, params, *, trabecular=None, cortical=None, image=None,
                       spacing=None):
    """Bone mask from an already Gaussian-filtered image (see :func:`threshold_bone`)."""
    from microarch.segment._morphology import remove_small_components

    upper = float(params["upper_threshold"])
    if params["method"] == "laplace_hamming":
        filtered = laplace_hamming_filter(image, spacing=spacing, epsilon=params["epsilon"],
                                          cutoff=params["cutoff"],
                                          amplitude=params["amplitude"])
        if params["trabecular_threshold"] is not None:
            level = float(params["trabecular_threshold"])
        elif params["relative_threshold"] is not None:
            level = float(params["relative_threshold"]) * float(filtered.max())
        else:
            raise ValueError("the Laplace-Hamming method needs relative_threshold or "
                             "trabecular_threshold")
        bone = (filtered >= level) & (filtered <= upper)
        if trabecular is not None or cortical is not None:
            region = np.zeros(bone.shape, bool)
            for mask in (trabecular, cortical):
                if mask is not None:
                    region |= mask
            bone &= region
    else:
        in_range = smoothed <= upper
        trab_level = params["trabecular_threshold"]
        if trab_level is None:
            raise ValueError("trabecular_threshold is required for the 'gauss' method")
        if trabecular is None and cortical is None:
            bone = (smoothed >= float(trab_level)) & in_range
        else:
            bone = np.zeros(smoothed.shape, bool)
            if trabecular is not None:
                bone |= trabecular & (smoothed >= float(trab_level))
            if cortical is not None:
                cort_level = params["cortical_threshold"]
                if cort_level is None:
                    raise ValueError("cortical_threshold is required with a cortical mask")
                # the cortical threshold takes precedence where the masks overlap
                bone &= ~cortical
                bone |= cortical & (smoothed >= float(cort_level))
            bone &= in_range
    min_size = int(params["min_size"])
    if min_size > 1:
        bone = remove_small_components(bone, min_size, 6)
    return np.ascontiguousarray(bone)


def threshold_bone(image, *, spacing, preset="xct2", trabecular_threshold=None,
                   cortical_threshold=None, upper_threshold=None, sigma=None, support=None,
                   kernel=None, method=None, relative_threshold=None, min_size=None,
                   epsilon=None, cutoff=None, amplitude=None, trabecular=None, cortical=None):
    """Segment bone by a global threshold of the filtered scan (Scanco standard protocol).

    With the default XtremeCT II preset the scan is smoothed with a truncated Gaussian
    (:func:`gaussian_filter`, sigma 0.8 voxel, support 1 voxel) and a voxel is bone when
    the smoothed density lies in ``[trabecular_threshold, upper_threshold]`` =
    [320, 3000] mg HA/cm³. When compartment masks are given, the cortical threshold
    (450 mg HA/cm³) applies inside ``cortical`` and the trabecular threshold inside
    ``trabecular``; voxels outside both are then not bone. Every parameter left ``None``
    comes from ``preset`` (see :data:`PRESETS`).

    Parameters
    ----------
    image : (Z, Y, X) array_like
        Grey-scale scan in mg HA/cm³.
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    preset : {"xct2", "xct1"}
        ``"xct2"``: the XtremeCT II standard above. ``"xct1"``: the XtremeCT I
        standard from the literature: Laplace-Hamming filter
        (:func:`laplace_hamming_filter`), threshold at 40 % of the filtered maximum
        (``relative_threshold=0.4``); not validated against Scanco output.
    trabecular_threshold, cortical_threshold, upper_threshold : float, optional
        Thresholds in mg HA/cm³ (of the filtered image).
    sigma : float or sequence of 3 floats, optional
        Gaussian standard deviation, voxels.
    support : int or sequence of 3 ints, optional
        Gaussian kernel half-width, voxels.
    kernel : {"sampled", "discrete"}, optional
        Gaussian kernel shape (:func:`gaussian_kernel`).
    method : {"gauss", "laplace_hamming"}, optional
        Filter before thresholding. With ``"laplace_hamming"`` a single threshold
        applies everywhere: ``trabecular_threshold`` if set, else
        ``relative_threshold`` times the filtered image's maximum.
    relative_threshold : float, optional
        Threshold as a fraction of the filtered image's maximum (Laplace-Hamming only;
        used when ``trabecular_threshold`` is None, as in the ``"xct1"`` preset).
    min_size : int, optional
        Remove 6-connected bone components with fewer voxels (0: keep all).
    epsilon, cutoff, amplitude : float, optional
        Laplace-Hamming parameters.
    trabecular, cortical : (Z, Y, X) array_like of bool, optional
        Compartment masks selecting which threshold applies where.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        The bone mask.

    Raises
    ------
    SegmentationError
        If the image is empty or holds NaN or infinite voxels.

    References
    ----------
    Whittier DE et al. (2020) Guidelines for the assessment of bone density and
    microarchitecture in vivo using high-resolution peripheral quantitative computed
    tomography. Osteoporos Int 31:1607-1627. doi:10.1007/s00198-020-05438-5
    Laib A, Hauselmann HJ, Rüegsegger P (1998) In vivo high resolution 3D-QCT of the human
    forearm. Technol Health Care 6:329-337. doi:10.3233/THC-1998-65-606

    Examples
    --------
    A 4-voxel thick plate of 1000 mg HA/cm³ in 30 mg HA/cm³ marrow:

    >>> import numpy as np
    >>> image = np.full((8, 8, 8), 30.0)
    >>> image[2:6] = 1000.0
    >>> bone = threshold_bone(image, spacing=0.061)
    >>> bone[:, 4, 4].astype(int)
    array([0, 0, 1, 1, 1, 1, 0, 0])
    """
    image = as_image(image)
    spacing = as_spacing(spacing)
    params = resolve_preset(
        preset, trabecular_threshold=trabecular_threshold,
        cortical_threshold=cortical_threshold, upper_threshold=upper_threshold, sigma=sigma,
        support=support, kernel=kernel, method=method, relative_threshold=relative_threshold,
        min_size=min_size, epsilon=epsilon, cutoff=cutoff, amplitude=amplitude,
    )
    trabecular = as_roi(trabecular, image.shape, name="trabecular")
    cortical = as_roi(cortical, image.shape, name="cortical")
    smoothed = smooth(image, params) if params["method"] == "gauss" else None
    return threshold_smoothed(smoothed, params, trabecular=trabecular, cortical=cortical,
                              image=image, spacing=spacing)
