"""Measure bone structure: masks (and grey images) in, numbers and maps out.

Every function takes ``spacing=`` (mm, scalar or per axis z, y, x) as a keyword and returns
physical units: lengths in mm, Tb.N in 1/mm, Conn.D in 1/mm³, densities in mg HA/cm³.
Thickness values are diameters. Degenerate inputs (empty mask, empty ROI) give NaN and a
:class:`DegenerateInputWarning` saying why.

Submodules load on first use, so ``from microarch import measure`` stays cheap.
"""

from microarch._shared.lazy import lazy_exports
from microarch._shared.validation import DegenerateInputWarning

# public name -> private module that defines it
_EXPORTS = {
    "local_thickness": "_thickness",
    "thickness_statistics": "_thickness",
    "euler_characteristic": "_connectivity",
    "connectivity_density": "_connectivity",
    "trabecular_number": "_number",
    "structure_model_index": "_smi",
    "trabecular": "_trabecular",
    "UNITS": "_trabecular",
    "mid_axis_spacing": "_number",
    "surface_skeleton": "_skeleton",
    "plate_rod": "_plate_rod",
    "plate_rod_labels": "_plate_rod",
    "classify_skeleton": "_plate_rod",
    "density": "_density",
    "cortical": "_cortical",
}

__all__ = ["DegenerateInputWarning", *sorted(_EXPORTS)]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
