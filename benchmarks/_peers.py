"""The tools the benchmark runs side by side, each behind the same small interface.

Every tool is a :class:`Tool`: ``load()`` imports the package (raising ImportError or
AttributeError when it is missing or lacks the function) and returns ``run(mask, spacing)``;
``summarise(raw, spacing)`` turns what ``run`` returned into comparable numbers. Keeping
the conversion out of ``run`` keeps it out of the timings and the memory peaks.

Peers work in voxel units and are handed isotropic phantoms, so their outputs are scaled
by the voxel size here. Peer code is only called, never copied (ormir-xct is GPL).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Tool:
    key: str  # identifier used on the command line of the memory worker
    label: str  # column/row label in the report
    task: str  # "thickness" | "euler" | "conn_d" | "plate_model" | "trabecular"
    package: str  # distribution name, for the versions table
    load: Callable[[], Callable]
    note: str = ""
    options: dict = field(default_factory=dict)


def isotropic_voxel(spacing) -> float:
    spacing = np.broadcast_to(np.asarray(spacing, float), (3,))
    if not np.allclose(spacing, spacing[0]):
        raise ValueError("peer tools are benchmarked on isotropic voxels only")
    return float(spacing[0])


# --------------------------------------------------------------------------------------
# Local thickness: run() returns the tool's own map; diameter_mm() converts it.
# --------------------------------------------------------------------------------------


def _microarch_thickness(convention):
    def load():
        from microarch.measure import local_thickness

        def run(mask, spacing):
            return local_thickness(mask, spacing=spacing, convention=convention)

        return run

    return load


def _porespy_thickness(method):
    def load():
        import porespy

        if os.environ.get("MICROARCH_BENCH_THREADS"):
            porespy.settings.ncores = int(os.environ["MICROARCH_BENCH_THREADS"])

        def run(mask, spacing):
            return porespy.filters.local_thickness(mask, method=method)

        return run

    return load


def _dahl_thickness():
    from localthickness import local_thickness

    def run(mask, spacing):
        return local_thickness(mask)

    return run


def _ormir_thickness(oversample):
    def load():
        # Released as ormir_xct.core.util in 1.x; ormir_xct.util in the repository layout.
        try:
            from ormir_xct.core.util.hildebrand_thickness import (
                compute_local_thickness_from_mask,
            )
        except ImportError:
            from ormir_xct.util.hildebrand_thickness import compute_local_thickness_from_mask

        def run(mask, spacing):
            # Voxel units: with oversample=True ormir adds a half-voxel constant that is
            # only right for unit voxels, so it is called with voxel_width=1 and scaled.
            return compute_local_thickness_from_mask(mask, 1.0, oversample=oversample,
                                                     skeletonize=True)

        return run

    return load


# How each thickness tool's output becomes a diameter in mm.
_DIAMETER_SCALE = {
    "microarch-continuous": ("mm", 1.0),
    "microarch-bonej": ("mm", 1.0),
    "porespy-bf": ("voxel radius", 2.0),
    "porespy-dt": ("voxel radius", 2.0),
    "localthickness": ("voxel radius", 2.0),
    "ormir": ("voxel diameter", 1.0),
    "ormir-ipl": ("voxel diameter", 1.0),
}


def diameter_mm(tool_key, raw, spacing):
    unit, factor = _DIAMETER_SCALE[tool_key]
    raw = np.asarray(raw, dtype=np.float64)
    if unit == "mm":
        return raw * factor
    return raw * (factor * isotropic_voxel(spacing))


THICKNESS_TOOLS = [
    Tool("microarch-continuous", "microarch continuous", "thickness", "microarch",
         _microarch_thickness("continuous"),
         note="exact H&R, continuous convention (n-voxel plate = n)"),
    Tool("microarch-bonej", "microarch bonej", "thickness", "microarch",
         _microarch_thickness("bonej"),
         note="exact H&R, BoneJ convention (EDT to voxel centres, clean-up, mask)"),
    Tool("porespy-bf", "porespy bf", "thickness", "porespy", _porespy_thickness("bf"),
         note="porespy.filters.local_thickness(method='bf'), radius x 2"),
    Tool("porespy-dt", "porespy dt", "thickness", "porespy", _porespy_thickness("dt"),
         note="porespy.filters.local_thickness(method='dt'), radius x 2"),
    Tool("localthickness", "localthickness", "thickness", "localthickness", _dahl_thickness,
         note="Dahl & Dahl 2023 fast local thickness, scale=1, output x 2"),
    Tool("ormir", "ormir-xct", "thickness", "ormir-xct", _ormir_thickness(True),
         note="ormir_xct hildebrand_thickness.compute_local_thickness_from_mask "
              "(defaults: oversample=True, skeletonize=True), voxel units"),
    Tool("ormir-ipl", "ormir-xct IPL-like", "thickness", "ormir-xct", _ormir_thickness(False),
         note="the same with oversample=False (its docstring: 'for consistency with IPL')"),
]


# --------------------------------------------------------------------------------------
# Euler characteristic and connectivity density
# --------------------------------------------------------------------------------------


def _microarch_euler():
    from microarch.measure import euler_characteristic

    def run(mask, spacing):
        return int(euler_characteristic(mask))

    return run


def _skimage_euler():
    from skimage.measure import euler_number

    def run(mask, spacing):
        return int(euler_number(mask, connectivity=3))

    return run


def _microarch_conn_d():
    from microarch.measure import connectivity_density

    def run(mask, spacing):
        return float(connectivity_density(mask, spacing=spacing))

    return run


EULER_TOOLS = [
    Tool("microarch-euler", "microarch euler_characteristic", "euler", "microarch",
         _microarch_euler),
    Tool("skimage-euler", "skimage euler_number(connectivity=3)", "euler", "scikit-image",
         _skimage_euler),
    Tool("microarch-connd", "microarch connectivity_density", "conn_d", "microarch",
         _microarch_conn_d, note="edge-corrected (Odgaard & Gundersen), whole image as ROI"),
]


# --------------------------------------------------------------------------------------
# Model-based morphometry (ITKBoneMorphometry) and microarch's full record
# --------------------------------------------------------------------------------------


def _itk_features():
    import itk

    features_filter = itk.BoneMorphometryFeaturesFilter  # AttributeError if not installed

    def run(mask, spacing):
        image = itk.image_view_from_array(np.ascontiguousarray(mask, dtype=np.uint8))
        # ITK's spacing is (x, y, z); the phantom is isotropic anyway.
        image.SetSpacing([float(s) for s in np.broadcast_to(spacing, (3,))[::-1]])
        filt = features_filter.New(image)
        filt.SetThreshold(1)
        filt.Update()
        return {
            "BV/TV": float(filt.GetBVTV()),
            "Tb.N": float(filt.GetTbN()),
            "Tb.Th": float(filt.GetTbTh()),
            "Tb.Sp": float(filt.GetTbSp()),
            "BS/BV": float(filt.GetBSBV()),
        }

    return run


def _microarch_trabecular():
    from microarch.measure import trabecular

    def run(mask, spacing):
        return trabecular(mask, spacing=spacing, smi=True)

    return run


MODEL_TOOLS = [
    Tool("itk-features", "ITKBoneMorphometry features", "plate_model", "itk-bonemorphometry",
         _itk_features,
         note="BoneMorphometryFeaturesFilter: plate model, Tb.Th = BV/TV / Tb.N, "
              "Tb.N = mean boundary crossings per unit length along x, y, z"),
    Tool("microarch-trabecular", "microarch trabecular(smi=True)", "trabecular", "microarch",
         _microarch_trabecular,
         note="full record: BV/TV, Tb.Th, Tb.Sp, Tb.N (mid-axis), Conn.D, SMI, BS/BV"),
]

ALL_TOOLS = {tool.key: tool for tool in THICKNESS_TOOLS + EULER_TOOLS + MODEL_TOOLS}


def try_load(tool):
    """``(run, None)`` or ``(None, reason)`` when the tool cannot be imported."""
    try:
        return tool.load(), None
    except (ImportError, AttributeError) as exc:
        return None, f"not available ({type(exc).__name__}: {exc})"
