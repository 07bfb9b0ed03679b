"""All standard trabecular measures of one bone mask in one call."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from microarch._shared.progress import stage
from microarch._shared.validation import (
    DegenerateInputWarning,
    as_mask,
    as_roi,
    as_spacing,
    check_choice,
    degenerate,
)
from microarch.measure._connectivity import connectivity_density
from microarch.measure._number import mid_axis_spacing
from microarch.measure._thickness import (
    CONVENTIONS,
    EDGES,
    _ball_radius_sq,
    _bonej_clean_up,
    thickness_statistics,
)

_log = logging.getLogger(__name__)

#: Unit of every key :func:`trabecular` returns (ASBMR symbols, Bouxsein et al. 2010).
UNITS = {
    "BV/TV": "1",
    "Tb.Th": "mm",
    "Tb.Th.SD": "mm",
    "Tb.Th.Max": "mm",
    "Tb.Sp": "mm",
    "Tb.Sp.SD": "mm",
    "Tb.Sp.Max": "mm",
    "Tb.N": "1/mm",
    "Tb.1/N.SD": "mm",
    "Conn.D": "1/mm³",
    "SMI": "1",
    "SMI+": "1",
    "SMI-": "1",
    "concave fraction": "1",
    "BS/BV": "1/mm",
    "BS": "mm²",
    "BV": "mm³",
    "TV": "mm³",
    "notes": "",
}


def trabecular(mask, *, spacing, roi=None, region=None, edge="continue",
               convention="continuous", smi=True, ddof=1, return_maps=False):
    """Standard trabecular morphometry of a bone mask inside a volume of interest.

    Structures are measured where they lie in the whole image (a trabecula crossing the
    ROI border keeps its full thickness with ``edge="continue"``); statistics are taken
    over the voxels inside the ROI.

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        Bone mask of the whole scan (include the cortex if the ROI is the trabecular
        compartment, so that marrow spaces end at the endosteal surface).
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    roi : (Z, Y, X) array_like of bool, optional
        Volume of interest (e.g. the trabecular compartment); default the whole image.
        TV is its volume.
    region : (Z, Y, X) array_like of bool, optional
        Where the bone lives, e.g. the periosteal envelope. Outside it is not marrow: it
        bounds the marrow spaces (Tb.Sp) and the space between mid-axes (Tb.N) like bone
        does, and is skipped. With a closed cortex this changes no value inside the
        ROI and saves the time spent measuring the soft tissue around the bone.
    edge : {"continue", "background"}
        ``"continue"``: the image border and the ROI border are not surfaces; bone and
        marrow are measured as they are in the whole image. ``"background"``: outside
        the ROI (and the image) counts as the other phase, so the ROI border bounds both
        trabeculae and marrow spaces (BoneJ1's ROI behaviour).
    convention : {"continuous", "bonej"}
        Local-thickness convention, see :func:`microarch.measure.local_thickness`.
    smi : bool
        Compute SMI, SMI+, SMI-, the concave fraction and BS/BV (surface mesh).
    ddof : int
        Delta degrees of freedom of the SDs (1: sample SD as BoneJ2; 0: population SD).
    return_maps : bool
        Also return the maps {"Tb.Th", "Tb.Sp", "Tb.N"} (float32, mm, filled inside the
        ROI only; the last is the mid-axis spacing map whose mean is 1/Tb.N).

    Returns
    -------
    dict
        One flat record; keys and units in :data:`UNITS` (lengths mm, Tb.N 1/mm, Conn.D
        1/mm³, BS/BV 1/mm, volumes mm³). Undefined values are NaN and ``"notes"`` says
        why. With ``return_maps`` a tuple ``(record, maps)``.

    References
    ----------
    Bouxsein ML et al. (2010) Guidelines for assessment of bone microstructure in rodents
    using micro-computed tomography. J Bone Miner Res 25:1468-1486. doi:10.1002/jbmr.141
    Hildebrand T, Rüegsegger P (1997) J Microsc 185:67-75.
    doi:10.1046/j.1365-2818.1997.1340694.x

    Examples
    --------
    >>> import numpy as np
    >>> z = np.arange(40) % 10
    >>> plates = np.broadcast_to(((z >= 4) & (z < 6))[:, None, None], (40, 16, 16))
    >>> record = trabecular(plates, spacing=0.05, smi=False)
    >>> record["BV/TV"], round(record["Tb.Th"], 3)
    (0.2, 0.1)
    """
    mask = as_mask(mask)
    spacing = as_spacing(spacing)
    roi = as_roi(roi, mask.shape)
    region = as_roi(region, mask.shape, name="region")
    check_choice(edge, EDGES, name="edge")
    check_choice(convention, CONVENTIONS, name="convention")
    if roi is None:
        roi = np.ones(mask.shape, bool)
    voxel_volume = float(np.prod(spacing))
    record = {key: math.nan for key in UNITS}
    notes = []
    maps = {} if return_maps else None  # None: let each map go as soon as it is summarised

    n_roi = int(np.count_nonzero(roi))
    bone = mask & roi
    n_bone = int(np.count_nonzero(bone))
    record["TV"] = n_roi * voxel_volume
    record["BV"] = n_bone * voxel_volume
    if n_roi == 0:
        notes.append("the ROI is empty")
    elif n_bone == 0:
        record["BV/TV"] = 0.0
        notes.append("no bone inside the ROI")
    else:
        record["BV/TV"] = n_bone / n_roi
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DegenerateInputWarning)
            _thickness_and_spacing(mask, roi, region, bone, spacing, edge, convention,
                                   ddof, record, maps)
            with stage(_log, "trabecular: Tb.N (mid-axis spacing)"):
                _number(mask, roi, region, spacing, edge, ddof, record, maps)
            record["Conn.D"] = connectivity_density(mask, spacing=spacing, roi=roi)
            if smi:
                with stage(_log, "trabecular: SMI (surface mesh)"):
                    _surface(bone, spacing, record)
        notes.extend(str(w.message) for w in caught
                     if issubclass(w.category, DegenerateInputWarning))
    record["notes"] = "; ".join(dict.fromkeys(notes))
    if notes:
        warnings.warn(f"trabecular(): {record['notes']}", DegenerateInputWarning,
                      stacklevel=2)
    return (record, maps) if return_maps else record


def _thickness_and_spacing(mask, roi, region, bone, spacing, edge, convention, ddof, record,
                           maps):
    marrow = roi & ~mask
    bone_phase = mask if edge == "continue" else bone
    marrow_phase = ~mask if edge == "continue" else marrow
    if region is not None:
        marrow_phase = marrow_phase & region
    for symbol, phase, where in (("Tb.Th", bone_phase, bone), ("Tb.Sp", marrow_phase, marrow)):
        if not where.any():
            continue
        # BoneJ's clean-up looks at neighbours, so its parity needs the whole map
        targets = where if convention == "continuous" else None
        with stage(_log, f"trabecular: {symbol} (local thickness)"):
            radius2 = _ball_radius_sq(phase, spacing, convention=convention, edge=edge,
                                      targets=targets)
        if radius2 is None:
            degenerate(f"{symbol} undefined: the phase fills the image and continues "
                       "beyond it (edge='continue')")
            continue
        lt = np.sqrt(radius2, out=radius2)
        lt *= 2.0
        if convention == "bonej":
            lt = _bonej_clean_up(lt)
        stats = thickness_statistics(lt, where=where, ddof=ddof)
        record[symbol], record[f"{symbol}.SD"], record[f"{symbol}.Max"] = (
            stats["mean"], stats["sd"], stats["max"])
        if maps is not None:
            maps[symbol] = lt
        del lt


def _number(mask, roi, region, spacing, edge, ddof, record, maps):
    spacing_map, skeleton = mid_axis_spacing(mask, spacing=spacing, edge=edge, region=region,
                                             where=roi)
    stats = thickness_statistics(spacing_map, where=roi & ~skeleton, ddof=ddof)
    if stats["n"] and np.isfinite(stats["mean"]) and stats["mean"] > 0:
        record["Tb.N"] = 1.0 / stats["mean"]
        record["Tb.1/N.SD"] = stats["sd"]
    if maps is not None:
        maps["Tb.N"] = spacing_map


def _surface(bone, spacing, record):
    from microarch.measure._smi import structure_model_index

    parts = structure_model_index(bone, spacing=spacing, return_parts=True)
    for key in ("SMI", "SMI+", "SMI-", "concave fraction", "BS"):
        record[key] = parts[key]
    if parts["BV"] and parts["BV"] > 0:
        record["BS/BV"] = parts["BS"] / parts["BV"]
