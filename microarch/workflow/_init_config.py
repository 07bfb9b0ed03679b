"""Write a sample sheet from a folder of scans, guessing what the names and folders say.

Subject, site, visit and role are read from the scan's path relative to the folder, in
this order of trust:

1. BIDS-like entities: ``sub-01``, ``ses-02``.
2. Tokens of the names (split at ``_``, ``-``, ``.``, spaces and folder separators):
   subjects like ``S01``, ``P001``, ``subj3``, ``patient12``; visits like ``V1``,
   ``visit2``, ``T0``, ``M12``, ``BL``, ``baseline`` or a date (``20210304``,
   ``2021-03-04``); sites ``radius``/``RAD``/``DR`` and ``tibia``/``TIB``/``DT``; roles
   from ``baseline``/``BL``, ``AI``/``on_ai``, ``post``/``withdrawal``.
3. Folders: a scan two folders deep (``<subject>/<visit>/scan``) takes them as subject
   and visit, one folder deep (``<subject>/scan``) as subject.

Whatever cannot be guessed is left blank, and the workflow refuses to run until it is
filled in. Scanco segmentation and mask files (``*_SEG``, ``*_TRAB_MASK``, ...) are not
scans; a periosteal contour (``*_GOBJ``, ``*_MASK``) next to its scan becomes the
scan's ``mask_path``.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

from microarch.workflow._samples import SAMPLE_COLUMNS

_SCAN_SUFFIXES = (".aim", ".isq", ".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr",
                  ".tif", ".tiff")
_DICOM_SUFFIXES = (".dcm", ".ima")
_VMS_VERSION = re.compile(r";\d+$")
# tokens marking a file as a mask or a derived image rather than a grey-scale scan
_PERIOSTEAL_TOKENS = {"gobj", "mask", "contour", "periosteal", "peri"}
_DERIVED_TOKENS = {"seg", "trab", "cort", "label", "labels", "th", "sp", "map", "endo",
                   "endosteal", "bone", "compartments"}
_SITES = {"radius": "radius", "rad": "radius", "dr": "radius", "distalradius": "radius",
          "tibia": "tibia", "tib": "tibia", "dt": "tibia", "distaltibia": "tibia"}
_ROLES = {"baseline": "baseline", "bl": "baseline", "base": "baseline",
          "ai": "on_ai", "onai": "on_ai", "on_ai": "on_ai",
          "post": "post_withdrawal", "withdrawal": "post_withdrawal",
          "postwithdrawal": "post_withdrawal", "post_withdrawal": "post_withdrawal",
          "off": "post_withdrawal"}
_SUBJECT = re.compile(r"^(?:s|p|subj|subject|patient|pt|pat|id)[-]?(\d+)$", re.IGNORECASE)
_VISIT = re.compile(r"^(?:v|visit|t|tp|m|month|w|week|y|year)[-]?(\d+)$", re.IGNORECASE)
_DATE = re.compile(r"^(?:19|20)\d{2}-?(?:0[1-9]|1[0-2])-?(?:0[1-9]|[12]\d|3[01])$")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _strip_suffix(name: str) -> tuple[str, str]:
    """(stem, suffix) with VMS version suffixes and double extensions handled."""
    bare = _VMS_VERSION.sub("", name)
    lower = bare.lower()
    for suffix in _SCAN_SUFFIXES + _DICOM_SUFFIXES:
        if lower.endswith(suffix):
            return bare[: -len(suffix)], suffix
    return bare, ""


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[_\-.\s/\\]+", text) if t]


def _safe(text: str) -> str:
    return _SAFE.sub("_", text).strip("_.-")


def _find_scans(scan_dir: Path):
    """Scan files (and DICOM folders) under ``scan_dir``, and periosteal-mask candidates."""
    scans, masks, skipped = [], [], []
    dicom_dirs = set()
    for root, dirs, files in os.walk(scan_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            stem, suffix = _strip_suffix(name)
            if suffix in _DICOM_SUFFIXES or (not suffix and _is_dicom(path)):
                dicom_dirs.add(Path(root))
                continue
            if not suffix:
                continue
            if suffix in (".mhd", ".nhdr"):
                pass  # the header; its .raw/.zraw companion is not listed
            tokens = {t.lower() for t in _tokens(stem)}
            if tokens & _DERIVED_TOKENS:  # also TRAB_MASK, CORT_MASK: not contours
                skipped.append(path)
            elif tokens & _PERIOSTEAL_TOKENS:
                masks.append(path)
            else:
                scans.append(path)
    scans.extend(sorted(dicom_dirs))
    return scans, masks, skipped


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _mask_key(path: Path) -> tuple[str, str]:
    stem, _ = _strip_suffix(path.name)
    kept = [t for t in re.split(r"([_\-.\s]+)", stem)]
    words = [w for w in kept if w and not re.fullmatch(r"[_\-.\s]+", w)
             and w.lower() not in _PERIOSTEAL_TOKENS]
    return str(path.parent), "_".join(w.lower() for w in words)


def _scan_key(path: Path) -> tuple[str, str]:
    stem, _ = _strip_suffix(path.name)
    return str(path.parent), "_".join(w.lower() for w in _tokens(stem))


def _guess(relative: Path) -> dict:
    """Subject, site, visit and role guessed from a path relative to the scan folder."""
    parts = list(relative.parts)
    stem, _ = _strip_suffix(parts[-1]) if parts else ("", "")
    folders = parts[:-1]
    guess = {"subject": "", "site": "", "visit": "", "role": ""}
    tokens = [t for part in [*folders, stem] for t in _tokens(part)]
    text = "/".join([*folders, stem])
    bids_subject = re.search(r"sub-([A-Za-z0-9]+)", text)
    bids_visit = re.search(r"ses-([A-Za-z0-9]+)", text)
    if bids_subject:
        guess["subject"] = bids_subject.group(1)
    if bids_visit:
        guess["visit"] = bids_visit.group(1)
    for token in tokens:
        lower = token.lower()
        if not guess["site"] and lower in _SITES:
            guess["site"] = _SITES[lower]
        if not guess["role"] and lower in _ROLES:
            guess["role"] = _ROLES[lower]
        if not guess["subject"] and _SUBJECT.match(token):
            guess["subject"] = token
        elif not guess["visit"] and (_VISIT.match(token) or _DATE.match(token)
                                     or lower in ("bl", "baseline")):
            guess["visit"] = token
    if not guess["subject"] and len(folders) >= 1:
        guess["subject"] = _safe(folders[0])
    if not guess["visit"] and len(folders) >= 2:
        guess["visit"] = _safe(folders[1])
    if guess["visit"] and guess["visit"].lower() in ("bl", "baseline") and not guess["role"]:
        guess["role"] = "baseline"
    return guess


def _natural(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


def guess_samples(scan_dir, *, relative_to=None):
    """Guess a sample sheet for every scan in a folder (recursively).

    Parameters
    ----------
    scan_dir : path-like
        Folder of scans: AIM, ISQ, NIfTI, MHA/MHD, NRRD, TIFF files, DICOM series (one
        folder each). Nothing in it is written or modified.
    relative_to : path-like, optional
        Write scan paths relative to this folder when they lie inside it (default the
        current directory); others are absolute.

    Returns
    -------
    (pandas.DataFrame, list of str)
        The sheet (columns :data:`SAMPLE_COLUMNS`; blanks where nothing could be
        guessed), sorted by subject, site and visit; and notes on what was skipped.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for name in ("S01_radius_V1.nii.gz", "S01_radius_V2.nii.gz", "C0001234.AIM",
    ...              "C0001234_SEG.AIM"):
    ...     open(os.path.join(folder, name), "wb").close()
    >>> table, notes = guess_samples(folder, relative_to=folder)
    >>> table[["scan_id", "subject", "site", "visit"]].values.tolist()
    [['S01_radius_V1', 'S01', 'radius', 'V1'], ['S01_radius_V2', 'S01', 'radius', 'V2'], \
['C0001234', '', '', '']]
    >>> notes
    ['skipped 1 mask or derived image (segmentations, maps): C0001234_SEG.AIM']
    """
    import pandas as pd

    scan_dir = Path(scan_dir)
    if not scan_dir.is_dir():
        raise NotADirectoryError(f"{scan_dir} is not a folder of scans")
    base = Path(relative_to) if relative_to is not None else Path.cwd()
    scans, masks, skipped = _find_scans(scan_dir)
    notes = []
    mask_of = {}
    by_key = {_mask_key(m): m for m in masks}
    unmatched = []
    for key, mask in by_key.items():
        match = next((s for s in scans if _scan_key(s) == key), None)
        if match is None:
            unmatched.append(mask)
        else:
            mask_of[match] = mask
    if skipped:
        names = ", ".join(str(p.relative_to(scan_dir)) for p in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        notes.append(f"skipped {len(skipped)} mask or derived image{'s' if len(skipped) > 1 else ''}"
                     f" (segmentations, maps): {names}{more}")
    if unmatched:
        names = ", ".join(str(p.relative_to(scan_dir)) for p in unmatched[:5])
        notes.append(f"{len(unmatched)} contour mask(s) matched no scan: {names}")

    def shown(path):
        path = Path(os.path.abspath(path))
        try:
            return str(path.relative_to(base.resolve()))
        except ValueError:
            return str(path)

    rows, used_ids = [], set()
    for path in scans:
        relative = path.relative_to(scan_dir)
        guess = _guess(relative)
        stem, _ = _strip_suffix(relative.name) if path.is_file() else (relative.name, "")
        scan_id = _safe("_".join([*relative.parts[:-1], stem])) or "scan"
        candidate, number = scan_id, 2
        while candidate in used_ids:
            candidate, number = f"{scan_id}_{number}", number + 1
        used_ids.add(candidate)
        rows.append({"scan_id": candidate, **guess, "path": shown(path),
                     "mask_path": shown(mask_of[path]) if path in mask_of else "",
                     "spacing": ""})
    table = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    if len(table):
        order = sorted(range(len(table)), key=lambda i: (
            table.at[i, "subject"] == "", _natural(table.at[i, "subject"]),
            _natural(table.at[i, "site"]), _natural(table.at[i, "visit"]),
            _natural(table.at[i, "scan_id"])))
        table = table.iloc[order].reset_index(drop=True)
    return table, notes


def init_config(scan_dir, out_dir="config", *, overwrite=False):
    """Write ``samples.tsv`` (and ``config.yaml`` if missing) for a folder of scans.

    Parameters
    ----------
    scan_dir : path-like
        Folder of scans (see :func:`guess_samples`); never written to.
    out_dir : path-like
        Where to write ``samples.tsv`` and, when it does not exist yet, a
        ``config.yaml`` (the workflow's defaults, pointing at the new sheet).
    overwrite : bool
        Replace an existing ``samples.tsv``.

    Returns
    -------
    dict
        ``samples`` (path written), ``config`` (path, or None if it existed),
        ``table`` (the DataFrame), ``blanks`` (number of rows with a blank field to fill
        in) and ``notes``.

    Raises
    ------
    FileExistsError
        ``samples.tsv`` exists and ``overwrite`` is False.
    ValueError
        ``out_dir`` lies inside ``scan_dir`` (nothing is written next to the scans).
    """
    from microarch.workflow._paths import default_config_path

    scan_dir, out_dir = Path(scan_dir), Path(out_dir)
    if not scan_dir.is_dir():
        raise NotADirectoryError(f"{scan_dir} is not a folder of scans")
    if out_dir.resolve() == scan_dir.resolve() or scan_dir.resolve() in out_dir.resolve().parents:
        raise ValueError(f"{out_dir} is inside the scan folder {scan_dir}; microarch never "
                         "writes next to the scans: choose another output folder")
    sheet = out_dir / "samples.tsv"
    if sheet.exists() and not overwrite:
        raise FileExistsError(f"{sheet} exists; pass overwrite=True (--force) to replace it")
    table, notes = guess_samples(scan_dir)
    if table.empty:
        raise ValueError(f"no scans found in {scan_dir} (looked for AIM, ISQ, NIfTI, MHA/MHD, "
                         "NRRD, TIFF files and DICOM folders)")
    out_dir.mkdir(parents=True, exist_ok=True)
    required = ["subject", "site", "visit", "role"]
    blanks = int((table[required] == "").any(axis=1).sum())
    stamp = datetime.date.today().isoformat()
    header = [
        f"# Sample sheet written by `microarch init-config {scan_dir}` on {stamp}.",
        "# One row per scan. Blank cells could not be guessed: fill them in before running.",
        "# role: baseline | on_ai | post_withdrawal | other. Visits of a subject are compared",
        "# in the order listed here. Optional: mask_path (periosteal contour), spacing (mm).",
    ]
    lines = header + ["\t".join(SAMPLE_COLUMNS)]
    lines += ["\t".join(str(v) for v in row) for row in table[list(SAMPLE_COLUMNS)].values]
    sheet.write_text("\n".join(lines) + "\n", encoding="utf-8")

    config = out_dir / "config.yaml"
    written_config = None
    if not config.exists():
        text = default_config_path().read_text(encoding="utf-8")
        text = re.sub(r"(?m)^samples:.*$", f"samples: {sheet.as_posix()}", text, count=1)
        config.write_text(text, encoding="utf-8")
        written_config = config
    return {"samples": sheet, "config": written_config, "table": table, "blanks": blanks,
            "notes": notes}
