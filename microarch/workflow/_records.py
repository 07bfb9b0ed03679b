"""Small helpers shared by the workflow stages: units, file-name slugs, JSON records."""

from __future__ import annotations

import json
import math
import os
import re
from numbers import Integral, Real
from pathlib import Path

# Units of the measures that microarch.measure.UNITS does not cover (density, cortical,
# plate/rod, longitudinal); ASBMR symbols (Bouxsein et al. 2010, Whittier et al. 2020).
_EXTRA_UNITS = {
    "Tt.BMD": "mg HA/cm³", "Tb.BMD": "mg HA/cm³", "Ct.BMD": "mg HA/cm³", "vBMD": "mg HA/cm³",
    "Tt.V": "mm³", "Tb.V": "mm³", "Ct.V": "mm³",
    "Tt.Ar": "mm²", "Tb.Ar": "mm²", "Ct.Ar": "mm²",
    "Ct.Th": "mm", "Ct.Th.SD": "mm", "Ct.Po": "1", "Ct.Po.V": "mm³", "Ct.Pm": "mm",
    "pBV/TV": "1", "rBV/TV": "1", "P/R": "1", "pTb.N": "1/mm", "rTb.N": "1/mm",
    "pTb.N.count": "1/mm³", "rTb.N.count": "1/mm³", "pTb.Th": "mm", "rTb.Th": "mm",
    "pTb.S": "mm²", "rTb.l": "mm", "P-P Junc.D": "1/mm³", "P-R Junc.D": "1/mm³",
    "R-R Junc.D": "1/mm³", "n.plates": "1", "n.rods": "1",
}


def unit_of(name: str) -> str:
    """Unit of a measure symbol (``""`` when unknown).

    Examples
    --------
    >>> unit_of("Tb.Th"), unit_of("Conn.D"), unit_of("Tb.BMD"), unit_of("P-R Junc.D")
    ('mm', '1/mm³', 'mg HA/cm³', '1/mm³')
    """
    from microarch.measure import UNITS

    return UNITS.get(name) or _EXTRA_UNITS.get(name, "")


def measure_slug(name: str) -> str:
    """A file-name-safe form of a measure symbol (``"BV/TV"`` -> ``"BV_TV"``).

    Letters, digits, ``.`` and ``-`` are kept; anything else becomes ``_``.

    Examples
    --------
    >>> measure_slug("BV/TV"), measure_slug("Tb.1/N.SD"), measure_slug("P-R Junc.D")
    ('BV_TV', 'Tb.1_N.SD', 'P-R_Junc.D')
    """
    slug = re.sub(r"[^A-Za-z0-9.\-]+", "_", str(name)).strip("_")
    if not slug:
        raise ValueError(f"measure name {name!r} has no letters or digits")
    return slug


def plain(value):
    """``value`` as JSON-ready Python: numpy scalars unwrapped, NaN and ±inf as None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def write_json(path, record) -> Path:
    """Write ``record`` as indented, strict JSON (non-finite numbers become null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(plain(record), indent=2, ensure_ascii=False, allow_nan=False)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path) -> dict:
    """Read a JSON record written by :func:`write_json`."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_table(path, frame) -> Path:
    """Write a pandas DataFrame as a tab-separated table (NaN as empty fields)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False, na_rep="")
    return path
