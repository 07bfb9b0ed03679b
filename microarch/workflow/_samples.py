"""Read and validate a sample sheet, reporting every problem at once, by line.

A sample sheet is a tab-separated table with one row per scan (``config/samples.tsv``):

=============  ==============================================================
``scan_id``    unique identifier of the scan (used in output paths)
``subject``    subject (patient) identifier
``site``       skeletal site (``radius``, ``tibia``, ...)
``visit``      visit label, unique per subject and site (``V1``, a date, ...)
``role``       ``baseline``, ``on_ai``, ``post_withdrawal`` or ``other``
``path``       the scan: AIM, ISQ, NIfTI, MHA/MHD, NRRD, TIFF file or DICOM folder
``mask_path``  optional: a periosteal contour mask on the scan's grid
``spacing``    optional: voxel size override in mm, ``0.0607`` or ``z,y,x``
=============  ==============================================================

Lines starting with ``#`` are comments; extra columns are kept and otherwise ignored.
The visits of a subject are compared in the order in which the sheet lists them.
Relative paths are looked up in the working directory first, then in the sheet's own
folder, so a sheet can travel with its scans.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

#: Columns the workflow reads, in the order `init_config` writes them.
SAMPLE_COLUMNS = ("scan_id", "subject", "site", "visit", "role", "path", "mask_path", "spacing")
REQUIRED_COLUMNS = ("scan_id", "subject", "site", "visit", "role", "path")
OPTIONAL_COLUMNS = ("mask_path", "spacing")
#: What a visit can represent.
ROLES = ("baseline", "on_ai", "post_withdrawal", "other")

_SEPARATORS = re.compile(r"[\s,;x]+")


class SampleSheetError(ValueError):
    """A sample sheet has problems; ``problems`` lists them all, one line each.

    The message names the sheet and every problem with its line number and scan id.
    Subclass of ``ValueError``.
    """

    def __init__(self, sheet, problems):
        self.sheet = str(sheet)
        self.problems = list(problems)
        count = len(self.problems)
        header = f"{self.sheet}: {count} problem{'s' if count != 1 else ''} in the sample sheet"
        super().__init__("\n  ".join([header, *self.problems]))


def parse_spacing(text):
    """Parse a voxel-size override: one number or three (z, y, x), in mm.

    Parameters
    ----------
    text : str, float or None
        ``"0.0607"``, ``"0.082,0.0607,0.0607"`` (commas, semicolons, spaces or ``x``
        between the values), a number, or empty/None for "no override".

    Returns
    -------
    tuple of 3 floats or None

    Raises
    ------
    ValueError
        Not one or three positive finite numbers.

    Examples
    --------
    >>> parse_spacing("0.082")
    (0.082, 0.082, 0.082)
    >>> parse_spacing("0.1, 0.05, 0.05")
    (0.1, 0.05, 0.05)
    >>> parse_spacing("") is None
    True
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        values = [float(text)]
    else:
        text = str(text).strip()
        if not text:
            return None
        try:
            values = [float(part) for part in _SEPARATORS.split(text) if part]
        except ValueError:
            raise ValueError(f"spacing {text!r} is not a number or three numbers (z,y,x) "
                             "in mm") from None
    if len(values) not in (1, 3):
        raise ValueError(f"spacing {text!r} must be one number or three (z,y,x) in mm; got "
                         f"{len(values)} values")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing {text!r} must be positive (mm)")
    if len(values) == 1:
        values = values * 3
    return tuple(values)


def _read_rows(path: Path):
    """(header, [(line_number, {column: text})], problems) from a TSV with # comments."""
    problems = []
    header = None
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for number, fields in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not fields or not any(f.strip() for f in fields):
                continue
            if fields[0].lstrip().startswith("#"):
                continue
            fields = [f.strip() for f in fields]
            if header is None:
                header = fields
                continue
            if len(fields) > len(header):
                extra = fields[len(header):]
                if any(extra):
                    problems.append(f"line {number}: {len(fields)} fields but the header has "
                                    f"{len(header)} (is a value missing a tab, or a path "
                                    "holding a tab?)")
                fields = fields[:len(header)]
            fields += [""] * (len(header) - len(fields))
            rows.append((number, dict(zip(header, fields))))
    return header, rows, problems


def _schema_problems(row, validator, where):
    problems = []
    for error in sorted(validator.iter_errors(row), key=lambda e: list(e.path)):
        field = error.path[0] if error.path else None
        value = row.get(field) if field else None
        if error.validator == "required":
            continue  # reported once for the whole sheet, or as an empty field below
        if error.validator == "enum":
            allowed = ", ".join(error.validator_value)
            problems.append(f"{where}: {field} {value!r} is not one of {allowed}")
        elif error.validator == "pattern" and field == "spacing":
            problems.append(f"{where}: spacing {value!r} must be one number or three "
                            "(z,y,x) in mm, e.g. 0.0607 or 0.082,0.0607,0.0607")
        elif error.validator == "pattern":
            problems.append(f"{where}: {field} {value!r} may only hold letters, digits, "
                            "'_', '-' and '.' and must start with a letter or digit")
        elif error.validator == "minLength":
            problems.append(f"{where}: {field} is empty")
        else:
            problems.append(f"{where}: {field or 'row'}: {error.message}")
    return problems


def _locate(value, sheet_dir, workdir):
    """(resolved path or None, candidates looked at) for a path from the sheet."""
    value = os.path.expanduser(value)
    if os.path.isabs(value):
        return (value if os.path.exists(value) else None), [value]
    candidates = [os.path.normpath(value)]
    beside = os.path.normpath(os.path.join(sheet_dir, value))
    if beside not in candidates:
        candidates.append(beside)
    for candidate in candidates:
        if os.path.exists(os.path.join(workdir, candidate)):
            return candidate, candidates
    return None, candidates


def _load_schema(schema):
    import yaml

    if schema is None:
        from microarch.workflow._paths import schema_path

        schema = schema_path("samples")
    if isinstance(schema, (str, os.PathLike)):
        with open(schema, encoding="utf-8") as handle:
            schema = yaml.safe_load(handle)
    return schema


def check_samples(rows, *, schema=None, sheet_dir=".", workdir=".", check_files=True):
    """Validate sample-sheet rows; return (clean rows, list of problems).

    Parameters
    ----------
    rows : sequence of (line_number, dict)
        Raw rows (all values strings) with their line numbers in the file.
    schema : dict or path, optional
        JSON schema of one row (default ``pipelines/schemas/samples.schema.yaml``).
    sheet_dir : path-like
        Folder of the sheet, relative to ``workdir`` or absolute: the second place
        relative paths are looked up.
    workdir : path-like
        Working directory: the first place relative paths are looked up.
    check_files : bool
        Check that scans and masks exist.

    Returns
    -------
    (list of dict, list of str)
        Rows with ``path``/``mask_path`` resolved, ``spacing`` parsed (tuple or None),
        ``line`` added; and one message per problem.

    Examples
    --------
    >>> rows = [(2, {"scan_id": "S1", "subject": "A", "site": "radius", "visit": "V1",
    ...              "role": "baseline", "path": "missing.aim"}),
    ...         (3, {"scan_id": "S1", "subject": "A", "site": "radius", "visit": "V 2",
    ...              "role": "later", "path": "missing.aim", "spacing": "0"})]
    >>> clean, problems = check_samples(rows, check_files=False)
    >>> for problem in problems:
    ...     print(problem)
    line 3 (scan S1): role 'later' is not one of baseline, on_ai, post_withdrawal, other
    line 3 (scan S1): visit 'V 2' may only hold letters, digits, '_', '-' and '.' and must start with a letter or digit
    line 3 (scan S1): spacing '0' must be positive (mm)
    line 3 (scan S1): duplicate scan_id (first on line 2)
    """
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(_load_schema(schema))
    problems = []
    clean = []
    first_line = {}
    visits = {}
    baselines = {}
    for line, raw in rows:
        row = {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k}
        scan_id = row.get("scan_id", "")
        where = f"line {line} (scan {scan_id})" if scan_id else f"line {line}"
        for column in REQUIRED_COLUMNS:
            if column in row and row[column] == "":
                problems.append(f"{where}: {column} is empty; fill it in")
        candidate = {k: v for k, v in row.items() if not (k in REQUIRED_COLUMNS and v == "")}
        for column in OPTIONAL_COLUMNS:
            if candidate.get(column) == "":
                candidate[column] = None
        problems.extend(_schema_problems(candidate, validator, where))

        spacing = None
        if row.get("spacing"):
            try:
                spacing = parse_spacing(row["spacing"])
            except ValueError as exc:
                if not any(p.startswith(f"{where}: spacing") for p in problems):
                    problems.append(f"{where}: {exc}")

        if scan_id:
            if scan_id in first_line:
                problems.append(f"{where}: duplicate scan_id (first on line "
                                f"{first_line[scan_id]})")
            else:
                first_line[scan_id] = line
        key = (row.get("subject"), row.get("site"))
        if all(key) and row.get("visit"):
            previous = visits.setdefault((*key, row["visit"]), line)
            if previous != line:
                problems.append(f"{where}: visit {row['visit']!r} of subject {key[0]!r} at "
                                f"site {key[1]!r} is already on line {previous}")
        if all(key) and row.get("role") == "baseline":
            previous = baselines.setdefault(key, line)
            if previous != line:
                problems.append(f"{where}: a second baseline for subject {key[0]!r} at site "
                                f"{key[1]!r} (first on line {previous}); mark the others "
                                "'other'")

        resolved = dict(row)
        resolved["line"] = line
        resolved["spacing"] = spacing
        for column, label in (("path", "scan"), ("mask_path", "mask")):
            value = row.get(column) or ""
            if not value:
                resolved[column] = None
                continue
            found, looked = _locate(value, str(sheet_dir), str(workdir))
            if found is None and check_files:
                places = " or ".join(str(Path(workdir, c).resolve()) if not os.path.isabs(c)
                                     else c for c in looked)
                problems.append(f"{where}: {label} file {value!r} not found (looked for "
                                f"{places})")
            resolved[column] = found if found is not None else value
        clean.append(resolved)
    return clean, problems


def read_samples(path, *, schema=None, check_files=True, workdir="."):
    """Read and validate a sample sheet; raise one error listing every problem.

    Parameters
    ----------
    path : path-like
        Tab-separated sample sheet (see the module documentation for its columns).
    schema : dict or path, optional
        JSON schema of a row; default ``pipelines/schemas/samples.schema.yaml``.
    check_files : bool
        Check that every scan and mask exists.
    workdir : path-like
        Working directory against which relative paths are resolved first.

    Returns
    -------
    pandas.DataFrame
        One row per scan, indexed by ``scan_id`` (also a column), in sheet order, with
        the columns of :data:`SAMPLE_COLUMNS` (``spacing`` a tuple or None, paths
        resolved), ``line`` and any extra columns of the sheet.

    Raises
    ------
    FileNotFoundError
        The sheet itself does not exist.
    SampleSheetError
        Missing columns, empty or malformed fields, unknown roles, duplicate scan ids
        or visits, a second baseline, bad spacings, missing files: all of them, each
        with its line number.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "a.nii.gz"), "wb").close()
    >>> sheet = os.path.join(folder, "samples.tsv")
    >>> with open(sheet, "w") as handle:
    ...     _ = handle.write("scan_id\\tsubject\\tsite\\tvisit\\trole\\tpath\\n"
    ...                      "S1_V1\\tS1\\tradius\\tV1\\tbaseline\\ta.nii.gz\\n")
    >>> samples = read_samples(sheet)
    >>> samples.loc["S1_V1", "role"], os.path.basename(samples.loc["S1_V1", "path"])
    ('baseline', 'a.nii.gz')
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sample sheet {path} does not exist")
    header, rows, problems = _read_rows(path)
    if header is None:
        raise SampleSheetError(path, ["the sheet is empty: it needs a header line ("
                                      + "\\t".join(SAMPLE_COLUMNS) + ") and one row per scan"])
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.insert(0, f"header: missing column{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(missing)} (the header is: {', '.join(header)})")
    duplicated = sorted({c for c in header if c and header.count(c) > 1})
    if duplicated:
        problems.insert(0, f"header: duplicated column {', '.join(duplicated)}")
    if not rows:
        problems.append("the sheet lists no scans")
    clean, row_problems = check_samples(rows, schema=schema, sheet_dir=path.parent,
                                        workdir=workdir, check_files=check_files)
    problems.extend(row_problems)
    if problems:
        raise SampleSheetError(path, problems)
    columns = list(dict.fromkeys([*SAMPLE_COLUMNS, "line", *header]))
    # object columns keep None for "not given" (pandas would turn it into NaN, which is
    # truthy and not a path)
    frame = pd.DataFrame(clean, columns=[c for c in columns if c], dtype=object)
    frame["line"] = frame["line"].astype("int64")
    frame.index = pd.Index(frame["scan_id"].tolist(), dtype=object)
    return frame
