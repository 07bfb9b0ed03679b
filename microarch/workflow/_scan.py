"""One scan: read -> segment -> measure -> maps -> QC montage -> metrics JSON with status."""

from __future__ import annotations

import logging
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microarch.workflow._records import plain, unit_of, write_json

_log = logging.getLogger(__name__)

#: Values of the compartment label image written for every scan.
COMPARTMENT_LABELS = {
    0: "outside the periosteal surface",
    1: "trabecular compartment, marrow",
    2: "trabecular compartment, bone",
    3: "cortical compartment, pore",
    4: "cortical compartment, bone",
}
#: Maps `analyse_scan` can write (``measure.maps`` of the configuration).
MAP_NAMES = ("Tb.Th", "Tb.Sp", "Tb.N", "plate_rod")
_MEASURE_DEFAULTS = {"edge": "continue", "convention": "continuous", "smi": True,
                     "plate_rod": True, "cortical": True, "min_pore_volume": 0.001,
                     "maps": ["Tb.Th", "Tb.Sp", "plate_rod"]}
# Measure groups whose failure fails the scan; the others leave NaN and a note.
_REQUIRED_GROUPS = ("trabecular",)


@dataclass(frozen=True, eq=False)
class ScanResult:
    """What :func:`measure_scan` found in one scan.

    Attributes
    ----------
    measures : dict
        ASBMR symbol -> value (units from :func:`microarch.workflow.unit_of`):
        densities and compartment sizes, trabecular, plate/rod and cortical measures.
    notes : list of str
        Why some values are NaN, and measure groups that could not run.
    compartments : microarch.segment.Compartments
        ``periosteal``, ``cortical``, ``trabecular`` and ``bone`` masks.
    maps : dict
        ``"Tb.Th"`` (bone, mm), ``"Tb.Sp"`` (trabecular marrow, mm), ``"Tb.N"``
        (mid-axis spacing in the trabecular compartment, mm) as float32 arrays, 0
        elsewhere; ``"plate_rod"`` (uint8: 0 none, 1 plate, 2 rod) where computed.
    timings : dict
        Seconds per measure group.
    """

    measures: dict
    notes: list
    compartments: object
    maps: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def compartment_labels(compartments) -> np.ndarray:
    """One uint8 image of the compartments and bone (see :data:`COMPARTMENT_LABELS`)."""
    labels = np.zeros(compartments.periosteal.shape, np.uint8)
    bone = np.asarray(compartments.bone, bool)
    trabecular = np.asarray(compartments.trabecular, bool)
    cortical = np.asarray(compartments.cortical, bool)
    labels[trabecular] = 1
    labels[trabecular & bone] = 2
    labels[cortical] = 3
    labels[cortical & bone] = 4
    return labels


def read_compartments(path) -> dict:
    """Masks from a compartment label image written by :func:`analyse_scan`.

    Returns
    -------
    dict
        ``"periosteal"``, ``"trabecular"``, ``"cortical"``, ``"bone"``: bool arrays.
    """
    from microarch.io import read_scan

    labels = np.asarray(read_scan(path).image)
    return {"periosteal": labels > 0, "trabecular": (labels == 1) | (labels == 2),
            "cortical": (labels == 3) | (labels == 4), "bone": (labels == 2) | (labels == 4)}


def _collect_warnings(caught, notes):
    from microarch._shared.validation import DegenerateInputWarning

    for warning in caught:
        if issubclass(warning.category, DegenerateInputWarning):
            notes.append(str(warning.message))
        else:
            _log.warning("%s: %s", warning.category.__name__, warning.message)


def _plate_rod_function():
    from microarch import measure

    return measure.plate_rod


def _groups(image, spacing, parts, options):
    """(name, callable returning (record, maps)) for each enabled measure group."""
    from microarch import measure

    bone = parts.bone
    trabecular = parts.trabecular

    def density():
        return measure.density(image, spacing=spacing, periosteal=parts.periosteal,
                               trabecular=trabecular, cortical=parts.cortical), {}

    def trabecular_group():
        record, maps = measure.trabecular(
            bone, spacing=spacing, roi=trabecular, region=parts.periosteal,
            edge=options["edge"], convention=options["convention"], smi=options["smi"],
            return_maps=True)
        marrow = trabecular & ~bone
        out = {}
        if "Tb.Th" in maps:
            out["Tb.Th"] = np.where(bone, maps["Tb.Th"], 0).astype(np.float32)
        if "Tb.Sp" in maps:
            out["Tb.Sp"] = np.where(marrow, maps["Tb.Sp"], 0).astype(np.float32)
        if "Tb.N" in maps:
            out["Tb.N"] = np.where(trabecular, maps["Tb.N"], 0).astype(np.float32)
        return record, out

    def plate_rod():
        # ITS is applied to the trabecular bone only (Liu et al. 2010): the cortex
        # would be one huge plate and cost most of the run time.
        record, labels = _plate_rod_function()(bone & trabecular, spacing=spacing,
                                               roi=trabecular, return_labels=True)
        record = {k: v for k, v in record.items() if k != "TV"}
        return record, {"plate_rod": np.asarray(labels, np.uint8)}

    def cortical():
        return measure.cortical(parts.cortical, spacing=spacing, periosteal=parts.periosteal,
                                bone=bone, min_pore_volume=options["min_pore_volume"]), {}

    groups = [("density", density), ("trabecular", trabecular_group)]
    unavailable = []
    if options["plate_rod"]:
        try:
            _plate_rod_function()
        except (ImportError, AttributeError) as exc:  # the module may not be installed
            unavailable.append(f"plate/rod measures not available: {exc}")
        else:
            groups.append(("plate_rod", plate_rod))
    if options["cortical"]:
        groups.append(("cortical", cortical))
    return groups, unavailable


def measure_scan(image, *, spacing, periosteal=None, segmentation=None, measure=None,
                 errors="raise") -> ScanResult:
    """Segment one density image into compartments and measure it.

    1. :func:`microarch.segment.compartments` (``segmentation`` keyword arguments;
       ``periosteal`` replaces the automatic contour).
    2. Densities and compartment sizes (:func:`microarch.measure.density`).
    3. Trabecular morphometry of the bone mask inside the trabecular compartment
       (:func:`microarch.measure.trabecular`, with the cortex in the mask so marrow
       spaces end at the endosteal surface) and its maps.
    4. Plate/rod decomposition of the trabecular bone (:func:`microarch.measure.plate_rod`).
    5. Cortical measures (:func:`microarch.measure.cortical`).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Density, mg HA/cm³.
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    periosteal : (Z, Y, X) ndarray of bool, optional
        A periosteal contour (e.g. a corrected one) used instead of the automatic one.
    segmentation : dict, optional
        Keyword arguments of :func:`microarch.segment.compartments`; ``None`` values
        mean "the preset's value".
    measure : dict, optional
        ``edge``, ``convention``, ``smi``, ``plate_rod``, ``cortical``,
        ``min_pore_volume`` (see the workflow configuration).
    errors : {"raise", "record"}
        What a failing measure group does: raise, or leave its values out with a note.
        The trabecular group always raises; a failed segmentation always raises.

    Returns
    -------
    ScanResult

    Raises
    ------
    microarch.segment.SegmentationError
        The scan cannot be segmented.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.mgrid[:10, :40, :40]
    >>> r = np.hypot(y - 19.5, x - 19.5)
    >>> image = np.where(r < 16, 60.0, 0.0) + np.where((r > 12) & (r < 16), 1000.0, 0.0)
    >>> image[:, 14:26, 18:22] = 900.0                     # a plate across the marrow
    >>> image += rng.normal(0, 20, image.shape)
    >>> result = measure_scan(image, spacing=0.082,
    ...                       measure={"smi": False, "plate_rod": False})
    >>> sorted(result.compartments)
    ['bone', 'cortical', 'periosteal', 'trabecular']
    >>> round(result.measures["BV/TV"], 2), round(result.measures["Ct.Th"], 2)
    (0.18, 0.34)
    """
    from microarch._shared.validation import check_choice

    check_choice(errors, ("raise", "record"), name="errors")
    return _measure_scan(image, spacing=spacing, periosteal=periosteal,
                         segmentation=segmentation, measure=measure, errors=errors,
                         progress={})


def _measure_scan(image, *, spacing, periosteal, segmentation, measure, errors, progress):
    """`measure_scan`; ``progress["stage"]`` names the step running (for failure records)."""
    from microarch._shared.validation import as_spacing
    from microarch.segment import compartments

    progress["stage"] = "segment"
    spacing = as_spacing(spacing)
    options = {**_MEASURE_DEFAULTS, **(measure or {})}
    seg_options = {k: v for k, v in (segmentation or {}).items() if v is not None}
    timings = {}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = compartments(image, spacing=spacing, periosteal=periosteal, **seg_options)
    notes = []
    _collect_warnings(caught, notes)
    timings["segment"] = time.perf_counter() - start

    measures, maps = {}, {}
    groups, unavailable = _groups(image, spacing, parts, options)
    notes.extend(unavailable)
    for name, run in groups:
        progress["stage"] = f"measure ({name})"
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                record, group_maps = run()
        except NotImplementedError as exc:
            if name in _REQUIRED_GROUPS:
                raise
            notes.append(f"{name} measures not available: {exc}")
            continue
        except Exception as exc:
            if name in _REQUIRED_GROUPS or errors == "raise":
                raise
            _log.warning("measure group %s failed", name, exc_info=True)
            notes.append(f"{name} measures failed ({type(exc).__name__}: {exc})")
            continue
        finally:
            timings[name] = time.perf_counter() - start
        _collect_warnings(caught, notes)
        record = dict(record)
        note = record.pop("notes", "")
        if note:
            notes.append(f"{name}: {note}" if name != "trabecular" else note)
        measures.update(record)
        maps.update(group_maps)
    progress["stage"] = "measured"
    return ScanResult(measures=measures, notes=list(dict.fromkeys(notes)), compartments=parts,
                      maps=maps, timings=timings)


def _failure_picture(path, *, title, reason, image=None, spacing=None, n_slices=6):
    """A QC picture that says why a scan failed (with its slices when it could be read)."""
    from microarch import qc

    text = f"FAILED: {reason}"
    if len(text) > 160:
        text = text[:157] + "..."
    if image is not None:
        try:
            figure = qc.montage(image, spacing=spacing, n_slices=n_slices,
                                title=f"{title}\n{text}")
            figure.texts[-1].set_color("#ff5555")
            figure.savefig(path, dpi=figure.dpi, bbox_inches="tight", facecolor="black")
            return
        except Exception:  # noqa: BLE001 - the picture must not hide the original failure
            _log.warning("could not draw the slices of the failed scan", exc_info=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 2.4), dpi=100)
    figure.set_facecolor("black")
    figure.text(0.5, 0.65, title, color="white", ha="center", va="center", fontsize=11)
    figure.text(0.5, 0.35, "\n".join(_wrap(text, 70)), color="#ff5555", ha="center",
                va="center", fontsize=9)
    figure.savefig(path, dpi=figure.dpi, facecolor="black")


def _wrap(text, width):
    import textwrap

    return textwrap.wrap(text, width) or [""]


def _scan_summary(scan):
    summary = {"path": str(scan.path), "format": scan.format, "shape": list(scan.shape),
               "spacing": list(scan.spacing), "units": scan.units,
               "origin": list(scan.origin) if scan.origin is not None else None,
               "calibration": scan.calibration.as_dict() if scan.calibration else None}
    if "file_spacing" in scan.meta:
        summary["file_spacing"] = list(scan.meta["file_spacing"])
    return summary


def _title(scan_id, info):
    details = " ".join(str(info[k]) for k in ("subject", "site", "visit") if info.get(k))
    role = info.get("role")
    return f"{scan_id}  {details}" + (f" ({role})" if role else "")


def analyse_scan(path, *, scan_id, metrics, montage, images, mask=None, spacing=None,
                 info=None, segmentation=None, measure=None, qc=None, on_error="record"):
    """Analyse one scan file end to end and write its outputs; return its record.

    Stages: ``read`` (:func:`microarch.io.read_scan`, density in mg HA/cm³), ``segment``
    and ``measure`` (:func:`measure_scan`), ``maps`` (compressed NIfTI), ``qc`` (a
    montage of slices with the contours and bone overlaid). Whatever happens, the
    metrics JSON and the montage are written: a scan that cannot be read, segmented or
    measured gets ``status: "failed"`` with the ``stage``, the ``reason`` and the error
    type, and its montage says so. Inputs are only read.

    Parameters
    ----------
    path : path-like
        The scan (any format :func:`microarch.io.read_scan` reads).
    scan_id : str
        Identifier written into the record and the montage title.
    metrics : path-like
        Metrics JSON to write.
    montage : path-like
        QC montage PNG to write.
    images : path-like
        Folder for ``compartments.nii.gz`` (labels in :data:`COMPARTMENT_LABELS`) and
        the maps (``Tb.Th.nii.gz``, ``Tb.Sp.nii.gz``, ``Tb.N.nii.gz``,
        ``plate_rod.nii.gz``); created, left empty for a failed scan.
    mask : path-like, optional
        A periosteal contour mask on the scan's grid (non-zero = inside).
    spacing : float or sequence of 3 floats, optional
        Voxel size override, mm (z, y, x).
    info : dict, optional
        ``subject``, ``site``, ``visit``, ``role`` (copied into the record).
    segmentation, measure, qc : dict, optional
        Sections of the workflow configuration (see ``config/README.md``).
    on_error : {"record", "raise"}
        ``"record"``: failures become a status record. ``"raise"``: after writing the
        record and the montage, re-raise the error (the Snakemake job fails).

    Returns
    -------
    dict
        The record written to ``metrics``: ``scan_id``, ``subject``, ``site``,
        ``visit``, ``role``, ``status`` (``"ok"``/``"failed"``), ``stage``, ``reason``,
        ``error_type``, ``notes``, ``measures``, ``units``, ``scan``, ``outputs``,
        ``timings`` (s) and ``provenance``. Non-finite values are written as null.

    Examples
    --------
    A file that is not a scan gives a failure record instead of an exception:

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> bad = os.path.join(folder, "bad.aim")
    >>> with open(bad, "wb") as handle:
    ...     _ = handle.write(b"not a scan at all")
    >>> record = analyse_scan(bad, scan_id="bad", metrics=os.path.join(folder, "m.json"),
    ...                       montage=os.path.join(folder, "qc.png"),
    ...                       images=os.path.join(folder, "images"))
    >>> record["status"], record["stage"], record["error_type"]
    ('failed', 'read', 'ScanFormatError')
    """
    from microarch._shared.validation import check_choice
    from microarch.workflow._provenance import provenance

    check_choice(on_error, ("record", "raise"), name="on_error")
    info = dict(info or {})
    measure = {**_MEASURE_DEFAULTS, **(measure or {})}
    qc_options = {"n_slices": 6, **(qc or {})}
    unknown_maps = [m for m in measure["maps"] if m not in MAP_NAMES]
    if unknown_maps:
        raise ValueError(f"unknown maps {unknown_maps}; choose from {list(MAP_NAMES)}")
    metrics, montage, images = Path(metrics), Path(montage), Path(images)
    for folder in (metrics.parent, montage.parent, images):
        folder.mkdir(parents=True, exist_ok=True)
    title = _title(scan_id, info)

    record = {"scan_id": scan_id, **{k: info.get(k) for k in ("subject", "site", "visit",
                                                                "role")},
              "status": "ok", "stage": None, "reason": "", "error_type": None, "notes": [],
              "measures": {}, "units": {}, "scan": None,
              "outputs": {"metrics": str(metrics), "montage": str(montage), "images": {}},
              "timings": {}}
    progress = {"stage": "read"}
    scan = None
    error = None
    started = time.perf_counter()
    try:
        scan, periosteal = _read(path, mask, spacing, record)
        result = _measure(scan, periosteal, segmentation, measure, on_error, record, progress)
        progress["stage"] = "maps"
        start = time.perf_counter()
        wanted = [m for m in measure["maps"] if m != "plate_rod" or measure["plate_rod"]]
        _write_maps(result, scan, images, wanted, record)
        record["timings"]["maps"] = time.perf_counter() - start
        progress["stage"] = "qc"
        start = time.perf_counter()
        _draw_montage(scan, result.compartments, montage, title, qc_options)
        record["timings"]["qc"] = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - one bad scan must not stop the cohort
        error = exc
        failed_stage = progress["stage"]
        record.update(status="failed", stage=failed_stage, reason=_reason(exc),
                      error_type=type(exc).__name__)
        record["measures"] = {}
        _log.warning("scan %s failed at %s: %s", scan_id, failed_stage, _reason(exc))
        _log.info("traceback of the failure:\n%s", "".join(traceback.format_exception(exc)))
        _failure_picture(montage, title=title, reason=f"{failed_stage}: {_reason(exc)}",
                         image=None if scan is None else scan.image,
                         spacing=None if scan is None else scan.spacing,
                         n_slices=qc_options["n_slices"])
    record["timings"]["total"] = time.perf_counter() - started
    record["units"] = {k: unit_of(k) for k in record["measures"]}
    record["provenance"] = _safe_provenance(provenance, path, mask, spacing, segmentation,
                                            measure, qc_options)
    write_json(metrics, record)
    _log.info("scan %s: %s%s (%.1f s, %s threads)", scan_id, record["status"],
              f" at {record['stage']}: {record['reason']}" if record["stage"] else "",
              record["timings"]["total"], record["provenance"].get("threads"))
    if error is not None and on_error == "raise":
        raise error
    return plain(record)


def _reason(exc):
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _read(path, mask, spacing, record):
    from microarch.io import read_scan

    start = time.perf_counter()
    scan = read_scan(path, spacing=spacing)
    record["scan"] = _scan_summary(scan)
    if scan.units != "mg HA/cm³":
        raise ValueError(f"{path}: the scan holds {scan.units!r} values, not density in "
                         "mg HA/cm³; give the grey-scale scan (masks go in mask_path)")
    periosteal = None
    if mask is not None:
        mask_scan = read_scan(mask, spacing=scan.spacing)
        if mask_scan.shape != scan.shape:
            raise ValueError(f"mask {mask} has shape {mask_scan.shape}; the scan has "
                             f"{scan.shape}: the mask must be on the scan's grid")
        periosteal = np.asarray(mask_scan.image) != 0
        record["scan"]["mask"] = str(mask)
    record["timings"]["read"] = time.perf_counter() - start
    _log.info("read %s: %s, shape %s, spacing %s mm, %s%s", path, scan.format, scan.shape,
              scan.spacing, scan.units, f", periosteal mask {mask}" if mask else "")
    return scan, periosteal


def _measure(scan, periosteal, segmentation, measure, on_error, record, progress):
    result = _measure_scan(scan.image, spacing=scan.spacing, periosteal=periosteal,
                           segmentation=segmentation, measure=measure,
                           errors="raise" if on_error == "raise" else "record",
                           progress=progress)
    record["measures"] = dict(result.measures)
    record["notes"] = list(result.notes)
    record["timings"].update(result.timings)
    _log.info("segmented and measured (s): %s", ", ".join(
        f"{k} {v:.1f}" for k, v in result.timings.items()))
    for note in result.notes:
        _log.info("note: %s", note)
    return result


def _write_maps(result, scan, images, wanted, record):
    from microarch.io import write_image

    origin = scan.origin
    written = {}
    path = images / "compartments.nii.gz"
    write_image(path, compartment_labels(result.compartments), spacing=scan.spacing,
                origin=origin, units="labels")
    written["compartments"] = str(path)
    for name in wanted:
        if name not in result.maps:
            record["notes"].append(f"no {name} map: the measure was not computed")
            continue
        array = result.maps[name]
        path = images / f"{name}.nii.gz"
        write_image(path, array, spacing=scan.spacing, origin=origin,
                    units="labels" if name == "plate_rod" else "mm")
        written[name] = str(path)
    record["outputs"]["images"] = written


def _draw_montage(scan, parts, path, title, options):
    from microarch import qc

    figure = qc.montage(scan.image, spacing=scan.spacing, bone=parts.bone,
                        masks={"periosteal": parts.periosteal,
                               "trabecular": parts.trabecular},
                        n_slices=options["n_slices"], title=title)
    figure.savefig(path, dpi=figure.dpi, bbox_inches="tight", facecolor="black")


def _safe_provenance(provenance, path, mask, spacing, segmentation, measure, qc_options):
    numba = sys.modules.get("numba")
    threads = numba.get_num_threads() if numba is not None else None
    parameters = {"spacing_override": spacing, "segmentation": segmentation or {},
                  "measure": measure, "qc": qc_options}
    inputs = [p for p in (path, mask) if p is not None and Path(p).exists()]
    try:
        return provenance(inputs=inputs, parameters=parameters, threads=threads)
    except OSError as exc:  # an unreadable input is already reported as the failure
        return {"error": f"provenance incomplete: {exc}", "parameters": parameters}
