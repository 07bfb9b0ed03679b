"""Segment HR-pQCT scans: filters, bone thresholds, periosteal contour, compartments.

Images are (z, y, x) arrays in mg HA/cm³ with ``spacing=`` in mm; every mask comes back
as a bool array on the image's grid. The defaults are the Scanco XtremeCT II standard
(Gaussian sigma 0.8 voxel, support 1 voxel; 320 mg HA/cm³ trabecular and 450 mg HA/cm³
cortical thresholds); ``preset="xct1"`` selects the XtremeCT I variant.

>>> from microarch import segment
>>> comp = segment.compartments(image, spacing=0.0607)          # doctest: +SKIP
>>> comp.periosteal, comp.cortical, comp.trabecular, comp.bone   # doctest: +SKIP

Scans that cannot be segmented (empty, NaN voxels, no bone) raise
:class:`SegmentationError` with a message saying why. Submodules load on first use.
"""

from microarch._shared.lazy import lazy_exports
from microarch.segment._errors import SegmentationError

# public name -> private module that defines it
_EXPORTS = {
    "gaussian_filter": "_filters",
    "gaussian_kernel": "_filters",
    "laplace_hamming_filter": "_filters",
    "threshold_bone": "_threshold",
    "PRESETS": "_threshold",
    "periosteal_contour": "_compartments",
    "compartments": "_compartments",
    "Compartments": "_compartments",
}

__all__ = [
    "PRESETS",
    "Compartments",
    "SegmentationError",
    "compartments",
    "gaussian_filter",
    "gaussian_kernel",
    "laplace_hamming_filter",
    "periosteal_contour",
    "threshold_bone",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
