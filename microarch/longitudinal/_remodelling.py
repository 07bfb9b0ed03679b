"""Time-lapse remodelling: formation and resorption between two registered visits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from microarch._shared.validation import as_roi, as_spacing, check_choice

#: Label codes of the remodelling map.
NOT_ANALYSED, QUIESCENT, FORMATION, RESORPTION, MINERALISATION, DEMINERALISATION = range(6)
LABELS = {
    NOT_ANALYSED: "not analysed",
    QUIESCENT: "quiescent",
    FORMATION: "formation",
    RESORPTION: "resorption",
    MINERALISATION: "mineralisation",
    DEMINERALISATION: "demineralisation",
}

#: Parameter sets of TimelapsedHRpQCT (``configs/defaults.yml`` and profiles; domain §6.3).
PROFILES = {
    "xct2": {"threshold": 225.0, "min_cluster": 12, "sigma": 1.2, "reclassify": True},
    "xct1": {"threshold": 225.0, "min_cluster": 5, "sigma": 0.8, "reclassify": False},
}

_FRACTION_NAMES = {
    FORMATION: "FV/BV0",
    RESORPTION: "RV/BV0",
    MINERALISATION: "MV/BV0",
    DEMINERALISATION: "DMV/BV0",
    QUIESCENT: "QV/BV0",
}


@dataclass(frozen=True, eq=False)
class Remodelling:
    """Formation / resorption between two visits on the baseline grid.

    Attributes
    ----------
    labels : (Z, Y, X) ndarray of uint8
        0 not analysed (outside the region, or marrow at both visits), 1 quiescent bone,
        2 formation, 3 resorption, 4 mineralisation, 5 demineralisation (see
        :data:`LABELS`; 4 and 5 only with ``reclassify=True``).
    fractions : dict
        ``"FV/BV0"``, ``"RV/BV0"``, ``"MV/BV0"``, ``"DMV/BV0"``, ``"QV/BV0"``: volume of
        each class over the first visit's bone volume in the region (1).
    volumes : dict
        ``"FV"``, ``"RV"``, ``"MV"``, ``"DMV"``, ``"QV"``, ``"BV0"``, ``"BV1"`` in mm³.
    from_visit, to_visit : str or None
        Visit ids (filled in by :func:`compare_visits`).
    parameters : dict
        Threshold (mg HA/cm³), minimum cluster (voxels), smoothing sigma (voxels),
        connectivity, reclassification.
    """

    labels: np.ndarray
    fractions: dict
    volumes: dict
    from_visit: object = None
    to_visit: object = None
    parameters: dict = field(default_factory=dict)

    def as_record(self) -> dict:
        """One flat row: visits, fractions and volumes."""
        return {"from_visit": self.from_visit, "to_visit": self.to_visit,
                **self.fractions, **{f"{k} (mm³)": v for k, v in self.volumes.items()}}


def _remove_small_clusters(mask, min_cluster, structure):
    from scipy import ndimage as ndi

    if min_cluster <= 1 or not mask.any():
        return mask
    labels, n = ndi.label(mask, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(np.int64)
    keep = sizes >= int(min_cluster)
    keep[0] = False
    return keep[labels]


def remodelling(image0, image1, *, spacing, bone0, bone1, region=None, profile="xct2",
                threshold=None, min_cluster=None, sigma=None, reclassify=None,
                connectivity=6):
    """Classify voxels into formation, resorption and quiescent bone between two visits.

    Both visits must already be on the same (baseline) grid, registered and resampled
    once. Each grey image is smoothed (Gaussian ``sigma`` voxels), the density difference
    ``d = rho1 - rho0`` is taken, and:

    ===================  ========================  ============================
    event                binary state t0 -> t1     grey-value condition
    ===================  ========================  ============================
    formation            marrow -> bone            d > +threshold
    resorption           bone -> marrow            d < -threshold
    mineralisation       bone -> bone              d > +threshold
    demineralisation     bone -> bone              d < -threshold
    quiescent            bone at either visit, otherwise
    ===================  ========================  ============================

    Event clusters (``connectivity``-connected) smaller than ``min_cluster`` voxels are
    noise and become quiescent. With ``reclassify=False`` (grey-value only, the XCT I
    profile) formation is ``d > +threshold`` and resorption ``d < -threshold`` anywhere in
    the bone-near region (bone at either visit, dilated by one voxel).

    Analysis is restricted to ``region`` (normally the common region of all visits) and,
    as in the literature, to bone: voxels that are marrow at both visits are never
    classified, so noise in marrow cannot masquerade as formation (Christen et al. 2014;
    TimelapsedHRpQCT ``docs/analysis.md``).

    Parameters
    ----------
    image0, image1 : (Z, Y, X) array_like
        Density images (mg HA/cm³) of the earlier and the later visit, same grid.
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    bone0, bone1 : (Z, Y, X) array_like of bool
        Bone masks of the two visits on that grid.
    region : (Z, Y, X) array_like of bool, optional
        Where to analyse (default everywhere).
    profile : {"xct2", "xct1"}
        Defaults from :data:`PROFILES`: XtremeCT II threshold 225 mg HA/cm³, clusters of
        at least 12 voxels, sigma 1.2, binary reclassification; XtremeCT I 225 / 5 / 0.8,
        grey-value only.
    threshold, min_cluster, sigma, reclassify :
        Override the profile (mg HA/cm³; voxels; voxels; bool).
    connectivity : {6, 18, 26}
        Connectivity of event clusters.

    Returns
    -------
    Remodelling
        Label map, fractions relative to the first visit's bone volume inside the region
        (FV/BV0, RV/BV0, ...), and volumes in mm³.

    References
    ----------
    Christen P, Ito K, Ellouz R, et al. (2014) Bone remodelling in humans is load-driven
    but not lazy. Nat Commun 5:4855. doi:10.1038/ncomms5855
    Christen P, Boutroy S, Ellouz R, et al. (2018) Least-detectable and age-related local
    in vivo bone remodelling assessed by time-lapse HR-pQCT. PLoS One 13:e0191369.
    doi:10.1371/journal.pone.0191369

    Examples
    --------
    A 3x3x3 cube of new bone (1000 mg HA/cm³) appears in marrow, then is resorbed:

    >>> import numpy as np
    >>> before = np.zeros((9, 9, 9), np.float32)
    >>> after = before.copy(); after[3:6, 3:6, 3:6] = 1000
    >>> gained = remodelling(before, after, spacing=0.1, bone0=before > 320,
    ...                      bone1=after > 320, sigma=0)
    >>> int((gained.labels == FORMATION).sum()), round(gained.volumes["FV"], 6)
    (27, 0.027)
    >>> lost = remodelling(after, before, spacing=0.1, bone0=after > 320,
    ...                    bone1=before > 320, sigma=0)
    >>> lost.fractions["RV/BV0"], lost.fractions["FV/BV0"]
    (1.0, 0.0)
    """
    from scipy import ndimage as ndi

    spacing = as_spacing(spacing)
    rho0 = np.asarray(image0)
    rho1 = np.asarray(image1)
    if rho0.ndim != 3 or rho0.shape != rho1.shape:
        raise ValueError(f"image0 and image1 must be 3D and on the same grid; got shapes "
                         f"{rho0.shape} and {rho1.shape}")
    shape = rho0.shape
    bone0 = as_roi(bone0, shape, name="bone0")
    bone1 = as_roi(bone1, shape, name="bone1")
    region = as_roi(region, shape, name="region")
    if bone0 is None or bone1 is None:
        raise ValueError("bone0 and bone1 are required (bone masks of both visits)")
    check_choice(profile, tuple(PROFILES), name="profile")
    params = dict(PROFILES[profile])
    for name, value in (("threshold", threshold), ("min_cluster", min_cluster),
                        ("sigma", sigma), ("reclassify", reclassify)):
        if value is not None:
            params[name] = value
    check_choice(connectivity, (6, 18, 26), name="connectivity")
    if not params["threshold"] > 0:
        raise ValueError(f"threshold must be positive (mg HA/cm³); got {params['threshold']}")
    if int(params["min_cluster"]) < 1 or float(params["sigma"]) < 0:
        raise ValueError("min_cluster must be >= 1 and sigma >= 0")
    params.update(connectivity=connectivity, profile=profile)

    # Only the region's bounding box (plus the smoothing kernel's reach) can hold events;
    # working there saves most of the filtering on a full scan, with identical results.
    box = tuple(slice(0, n) for n in shape)
    if region is not None and region.any():
        reach = math.ceil(3.0 * float(params["sigma"])) + 2
        box = []
        for axis in range(3):
            others = tuple(a for a in range(3) if a != axis)
            hits = np.flatnonzero(region.any(axis=others))
            box.append(slice(max(int(hits[0]) - reach, 0),
                             min(int(hits[-1]) + reach + 1, shape[axis])))
        box = tuple(box)

    def smooth(rho):
        rho = np.asarray(rho[box], dtype=np.float32)
        if not np.isfinite(rho).all():
            raise ValueError("images hold NaN or infinite voxels")
        if params["sigma"] > 0:
            return ndi.gaussian_filter(rho, float(params["sigma"]), mode="nearest",
                                       truncate=3.0)
        return rho.copy()

    delta = smooth(rho1)
    delta -= smooth(rho0)
    up = delta > params["threshold"]
    down = delta < -params["threshold"]
    del delta
    b0, b1 = bone0[box], bone1[box]
    inside = np.ones(up.shape, bool) if region is None else region[box]
    bone_any = (b0 | b1) & inside
    structure = ndi.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    part = np.zeros(up.shape, np.uint8)
    if params["reclassify"]:
        events = {
            FORMATION: up & ~b0 & b1,
            RESORPTION: down & b0 & ~b1,
            MINERALISATION: up & b0 & b1,
            DEMINERALISATION: down & b0 & b1,
        }
        analysed = bone_any
    else:
        near = ndi.binary_dilation(b0 | b1, structure=ndi.generate_binary_structure(3, 1))
        analysed = near & inside
        events = {FORMATION: up, RESORPTION: down}
    part[bone_any] = QUIESCENT
    for code, event in events.items():
        event = _remove_small_clusters(event & analysed, int(params["min_cluster"]), structure)
        part[event] = code
    labels = np.zeros(shape, np.uint8)
    labels[box] = part
    inside_full = np.ones(shape, bool) if region is None else region

    voxel = float(np.prod(spacing))
    n_bv0 = int(np.count_nonzero(bone0 & inside_full))
    n_bv1 = int(np.count_nonzero(bone1 & inside_full))
    counts = np.bincount(labels.ravel(), minlength=6).astype(np.int64)
    volumes = {"BV0": n_bv0 * voxel, "BV1": n_bv1 * voxel}
    fractions = {}
    for code, name in _FRACTION_NAMES.items():
        volumes[name.split("/")[0]] = int(counts[code]) * voxel
        fractions[name] = int(counts[code]) / n_bv0 if n_bv0 else math.nan
    return Remodelling(labels=labels, fractions=fractions, volumes=volumes,
                       parameters=params)
