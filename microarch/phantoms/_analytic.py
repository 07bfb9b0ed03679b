"""Analytic phantoms: plates, rods, spheres, shells, tori, perforated plates and lattices.

Conventions shared by every generator here:

- Lengths are in millimetres, except arguments whose name ends in ``_voxels``. Plate
  thickness and plate-lattice period are given in voxels along the plate normal, so a
  plate ``n`` voxels thick is exactly ``n`` voxels thick for any spacing and its truth
  thickness is ``n * spacing[axis]`` (the continuous object a digitised plate represents).
- Curved geometry (rods, spheres, shells, tori, holes, rod lattices) is defined in mm and
  rasterised on the (possibly anisotropic) grid: a voxel is bone when its centre lies
  inside the analytic shape (boundary included). A rod of diameter 0.5 mm on a
  (0.1, 0.05, 0.05) mm grid is round in mm, hence elliptical in voxels.
- Objects sit in the middle of the image with a background margin of ``margin_voxels``
  (default 2) on every side. Lattices built with ``fill=True`` instead fill the image with
  whole periods and touch its border (see each function).
- ``truth`` describes the *digitised* object: ``BV`` (voxel count x voxel volume), ``TV``
  (image volume), ``BV/TV`` and ``euler`` (computed from the mask with
  ``skimage.measure.euler_number(mask, connectivity=3)``: 26-connected bone, 6-connected
  marrow, object floating in empty space), next to the closed-form values of the
  continuous geometry (``euler_analytic``, Betti numbers ``n_components``, ``n_tunnels``,
  ``n_cavities``, ``BV_continuous``, ``thickness`` ...). When digitisation changes the
  topology (a shape too thin for the grid) a :class:`DigitisationWarning` says so.
- ``SMI`` is the ideal value of the shape type (plate 0, rod 3, sphere 4) and
  ``SMI_finite`` the exact Structure Model Index of the finite continuous object, from
  ``SMI = 6 V (dS/dr) / S**2`` with ``dS/dr`` the integral of twice the mean curvature
  (Steiner's formula; box edges and cylinder rims count with their dihedral angle).

References
----------
Hildebrand T, Rüegsegger P (1997) Quantification of bone microarchitecture with the
structure model index. Comput Methods Biomech Biomed Engin 1:15-23.
doi:10.1080/01495739708936692
Odgaard A, Gundersen HJG (1993) Quantification of connectivity in cancellous bone.
Bone 14:173-182. doi:10.1016/8756-3282(93)90245-6
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from numbers import Integral, Real

import numpy as np

from microarch._shared.validation import as_spacing, non_negative_int


class DigitisationWarning(UserWarning):
    """The voxel phantom's topology differs from the continuous shape it digitises."""


@dataclasses.dataclass(frozen=True, eq=False)
class Phantom:
    """A binary phantom with its ground truth.

    Attributes
    ----------
    mask : ndarray of bool, shape (z, y, x)
        Bone.
    spacing : tuple of 3 float
        Voxel size in mm (z, y, x).
    truth : dict
        Known values of the digitised object (see the generating function), including
        ``parameters``, the arguments that made it.
    """

    mask: np.ndarray
    spacing: tuple
    truth: dict

    def __repr__(self) -> str:
        kind = self.truth.get("parameters", {}).get("kind", "phantom")
        euler = f", euler={self.truth['euler']}" if "euler" in self.truth else ""
        return (
            f"Phantom({kind}, shape={self.mask.shape}, spacing={self.spacing}, "
            f"BV/TV={self.truth['BV/TV']:.4g}{euler})"
        )


# ---------------------------------------------------------------------------------------
# validation and shared helpers
# ---------------------------------------------------------------------------------------


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _positive_length(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive length in mm; got {value!r}")
    return float(value)


def _axis(value):
    if value not in (0, 1, 2) or isinstance(value, bool):
        raise ValueError(f"axis must be 0 (z), 1 (y) or 2 (x); got {value!r}")
    return int(value)


def _lateral_axes(axis):
    return tuple(a for a in range(3) if a != axis)


def _span_voxels(extent_mm, h):
    """Voxels needed to hold ``extent_mm`` along an axis of spacing ``h``."""
    return max(1, math.ceil(extent_mm / h - 1e-9))


def _centred_coordinates(shape, spacing):
    """Open grid of voxel-centre coordinates (mm) relative to the image centre."""
    return tuple(
        ((np.arange(n) - (n - 1) / 2.0) * h).reshape([-1 if a == i else 1 for i in range(3)])
        for a, (n, h) in enumerate(zip(shape, spacing))
    )


def _lateral_count(size, axis_spacing, default_voxels, name):
    if size is None:
        return default_voxels
    return max(1, round(_positive_length(size, name) / axis_spacing))


def _finish(mask, spacing, truth, *, betti, kind, parameters):
    """Add the digitised values (volume, Euler characteristic) and check the topology."""
    from skimage.measure import euler_number

    voxel_volume = float(np.prod(spacing))
    n_bone = int(np.count_nonzero(mask))
    euler = int(euler_number(mask, connectivity=3))
    n_components, n_tunnels, n_cavities = betti
    euler_analytic = n_components - n_tunnels + n_cavities
    if euler != euler_analytic:
        warnings.warn(
            f"the digitised {kind} has Euler characteristic {euler}, the continuous shape "
            f"{euler_analytic}: the grid is too coarse for this geometry; use a smaller "
            f"spacing or larger dimensions",
            DigitisationWarning,
            stacklevel=3,
        )
    full = {
        "BV": n_bone * voxel_volume,
        "TV": mask.size * voxel_volume,
        "BV/TV": n_bone / mask.size,
        "n_voxels": n_bone,
        "euler": euler,
        "euler_analytic": euler_analytic,
        "n_components": n_components,
        "n_tunnels": n_tunnels,
        "n_cavities": n_cavities,
    }
    full.update(truth)
    full["parameters"] = {"kind": kind, "spacing": tuple(spacing), **parameters}
    return Phantom(mask=mask, spacing=tuple(spacing), truth=full)


def _smi_box(a, b, c):
    """SMI of an a x b x c box: V = abc, S = 2(ab+bc+ca), dS/dr = 2 pi (a+b+c)."""
    return 3.0 * math.pi * a * b * c * (a + b + c) / (a * b + b * c + c * a) ** 2


def _smi_cylinder(radius, length):
    """SMI of a closed cylinder: dS/dr = 2 pi L (mantle) + 2 pi^2 r (two rims)."""
    return 3.0 * length * (length + math.pi * radius) / (length + radius) ** 2


# ---------------------------------------------------------------------------------------
# single shapes
# ---------------------------------------------------------------------------------------


def plate(thickness_voxels, *, size=None, axis=0, spacing=1.0, margin_voxels=2) -> Phantom:
    """A square plate exactly ``thickness_voxels`` voxels thick along its normal.

    Parameters
    ----------
    thickness_voxels : int
        Plate thickness in voxels along ``axis``.
    size : float, optional
        Side length of the plate (mm) along the two other axes, rounded to whole voxels.
        Default: 16 voxels along each.
    axis : {0, 1, 2}, optional
        The plate normal (0 = z).
    spacing : float or tuple of 3 float, optional
        Voxel size (mm), z, y, x.
    margin_voxels : int, optional
        Background voxels around the plate on every side.

    Returns
    -------
    Phantom
        ``truth``: ``thickness`` = ``thickness_voxels * spacing[axis]`` (mm), ``SMI`` 0,
        ``SMI_finite`` (the finite box), ``euler`` 1, ``BV_continuous`` (equal to ``BV``).

    Examples
    --------
    >>> from microarch.phantoms import plate
    >>> p = plate(3, spacing=(0.1, 0.05, 0.05))
    >>> p.mask.shape, round(p.truth["thickness"], 6), p.truth["euler"]
    ((7, 20, 20), 0.3, 1)
    """
    t = _positive_int(thickness_voxels, "thickness_voxels")
    axis = _axis(axis)
    spacing = as_spacing(spacing)
    m = non_negative_int(margin_voxels, name="margin_voxels")
    counts = [t, t, t]
    for a in _lateral_axes(axis):
        counts[a] = _lateral_count(size, spacing[a], 16, "size")
    shape = tuple(c + 2 * m for c in counts)
    mask = np.zeros(shape, dtype=bool)
    mask[m : m + counts[0], m : m + counts[1], m : m + counts[2]] = True
    sides = [c * h for c, h in zip(counts, spacing)]
    truth = {
        "thickness": t * spacing[axis],
        "SMI": 0.0,
        "SMI_finite": _smi_box(*sides),
        "BV_continuous": float(np.prod(sides)),
        "extent": tuple(sides),
    }
    return _finish(
        mask,
        spacing,
        truth,
        betti=(1, 0, 0),
        kind="plate",
        parameters={"thickness_voxels": t, "size": size, "axis": axis, "margin_voxels": m},
    )


def rod(diameter, *, length=None, axis=0, spacing=1.0, margin_voxels=2) -> Phantom:
    """A straight circular rod (right cylinder with flat ends).

    Parameters
    ----------
    diameter : float
        Rod diameter (mm). The disc is rasterised in the plane across ``axis``: voxels
        whose centre lies within ``diameter / 2`` of the rod axis.
    length : float, optional
        Rod length (mm), rounded to whole voxels along ``axis``. Default: 4 diameters.
    axis : {0, 1, 2}, optional
        Direction of the rod.
    spacing : float or tuple of 3 float, optional
        Voxel size (mm).
    margin_voxels : int, optional
        Background voxels around the rod.

    Returns
    -------
    Phantom
        ``truth``: ``thickness`` (= diameter, mm), ``length`` (digitised, mm), ``SMI`` 3,
        ``SMI_finite``, ``diameter_equivalent`` (diameter of the circle with the area of
        the digitised disc), ``euler`` 1.

    Examples
    --------
    >>> from microarch.phantoms import rod
    >>> r = rod(10.0, length=20.0)
    >>> r.mask.shape, r.truth["euler"], r.truth["SMI"]
    ((24, 14, 14), 1, 3.0)
    """
    d = _positive_length(diameter, "diameter")
    axis = _axis(axis)
    spacing = as_spacing(spacing)
    m = non_negative_int(margin_voxels, name="margin_voxels")
    n_length = max(
        1, round((4 * d if length is None else _positive_length(length, "length")) / spacing[axis])
    )
    counts = [n_length] * 3
    for a in _lateral_axes(axis):
        counts[a] = _span_voxels(d, spacing[a])
    shape = tuple(c + 2 * m for c in counts)
    coords = _centred_coordinates(shape, spacing)
    p, q = (coords[a] for a in _lateral_axes(axis))
    disc = p**2 + q**2 <= (d / 2) ** 2
    along = np.zeros(shape[axis], dtype=bool)
    along[m : m + n_length] = True
    mask = disc & along.reshape([-1 if a == axis else 1 for a in range(3)])
    lateral = [spacing[a] for a in _lateral_axes(axis)]
    disc_area = int(np.count_nonzero(disc)) * lateral[0] * lateral[1]
    rod_length = n_length * spacing[axis]
    truth = {
        "thickness": d,
        "length": rod_length,
        "SMI": 3.0,
        "SMI_finite": _smi_cylinder(d / 2, rod_length),
        "BV_continuous": math.pi * (d / 2) ** 2 * rod_length,
        "diameter_equivalent": 2.0 * math.sqrt(disc_area / math.pi),
    }
    return _finish(
        mask,
        spacing,
        truth,
        betti=(1, 0, 0),
        kind="rod",
        parameters={"diameter": d, "length": length, "axis": axis, "margin_voxels": m},
    )


def sphere(diameter, *, spacing=1.0, margin_voxels=2) -> Phantom:
    """A solid ball of the given diameter (mm).

    Parameters
    ----------
    diameter : float
        Ball diameter (mm).
    spacing : float or tuple of 3 float, optional
        Voxel size (mm).
    margin_voxels : int, optional
        Background voxels around the ball.

    Returns
    -------
    Phantom
        ``truth``: ``thickness`` (= diameter), ``SMI`` 4, ``SMI_finite`` 4, ``euler`` 1.

    Examples
    --------
    >>> from microarch.phantoms import sphere
    >>> s = sphere(9.0)
    >>> s.mask.shape, s.truth["euler"], s.truth["SMI"]
    ((13, 13, 13), 1, 4.0)
    """
    d = _positive_length(diameter, "diameter")
    spacing = as_spacing(spacing)
    m = non_negative_int(margin_voxels, name="margin_voxels")
    shape = tuple(_span_voxels(d, h) + 2 * m for h in spacing)
    z, y, x = _centred_coordinates(shape, spacing)
    mask = z**2 + y**2 + x**2 <= (d / 2) ** 2
    truth = {
        "thickness": d,
        "SMI": 4.0,
        "SMI_finite": 4.0,
        "BV_continuous": math.pi * d**3 / 6.0,
    }
    return _finish(
        mask,
        spacing,
        truth,
        betti=(1, 0, 0),
        kind="sphere",
        parameters={"diameter": d, "margin_voxels": m},
    )


def hollow_sphere(outer_diameter, inner_diameter, *, spacing=1.0, margin_voxels=2) -> Phantom:
    """A spherical shell: a ball with a concentric spherical cavity.

    Parameters
    ----------
    outer_diameter, inner_diameter : float
        Diameters (mm) of the outer surface and of the enclosed cavity.
    spacing : float or tuple of 3 float, optional
        Voxel size (mm).
    margin_voxels : int, optional
        Background voxels around the shell.

    Returns
    -------
    Phantom
        ``truth``: ``thickness`` (wall thickness ``(outer - inner) / 2``), ``euler`` 2
        (one component, one cavity), ``SMI_finite``
        ``4 (R**3 - r**3)(R - r) / (R**2 + r**2)**2``.

    Examples
    --------
    >>> from microarch.phantoms import hollow_sphere
    >>> h = hollow_sphere(16.0, 8.0)
    >>> h.truth["euler"], h.truth["thickness"], h.truth["n_cavities"]
    (2, 4.0, 1)
    """
    outer = _positive_length(outer_diameter, "outer_diameter")
    inner = _positive_length(inner_diameter, "inner_diameter")
    if inner >= outer:
        raise ValueError(f"inner_diameter ({inner}) must be smaller than outer_diameter ({outer})")
    spacing = as_spacing(spacing)
    m = non_negative_int(margin_voxels, name="margin_voxels")
    shape = tuple(_span_voxels(outer, h) + 2 * m for h in spacing)
    z, y, x = _centred_coordinates(shape, spacing)
    rho_sq = z**2 + y**2 + x**2
    mask = (rho_sq <= (outer / 2) ** 2) & (rho_sq > (inner / 2) ** 2)
    big, small = outer / 2, inner / 2
    truth = {
        "thickness": (outer - inner) / 2,
        "SMI_finite": 4.0 * (big**3 - small**3) * (big - small) / (big**2 + small**2) ** 2,
        "BV_continuous": math.pi * (outer**3 - inner**3) / 6.0,
    }
    return _finish(
        mask,
        spacing,
        truth,
        betti=(1, 0, 1),
        kind="hollow_sphere",
        parameters={"outer_diameter": outer, "inner_diameter": inner, "margin_voxels": m},
    )


def torus(major_radius, tube_diameter, *, axis=0, spacing=1.0, margin_voxels=2) -> Phantom:
    """A ring torus: a tube of diameter ``tube_diameter`` around a circle of ``major_radius``.

    Parameters
    ----------
    major_radius : float
        Distance (mm) from the torus centre to the tube's centre line.
    tube_diameter : float
        Tube diameter (mm); must be below ``2 * major_radius`` so the hole stays open.
    axis : {0, 1, 2}, optional
        Symmetry axis of the torus (0: the ring lies in a z-plane).
    spacing : float or tuple of 3 float, optional
        Voxel size (mm).
    margin_voxels : int, optional
        Background voxels around the torus.

    Returns
    -------
    Phantom
        ``truth``: ``thickness`` (= tube diameter), ``euler`` 0 (one tunnel), ``SMI`` 3 and
        ``SMI_finite`` 3 (exact for a torus), ``BV_continuous`` ``2 pi**2 R r**2``.

    Examples
    --------
    >>> from microarch.phantoms import torus
    >>> t = torus(8.0, 4.0)
    >>> t.truth["euler"], t.truth["n_tunnels"]
    (0, 1)
    """
    big = _positive_length(major_radius, "major_radius")
    d = _positive_length(tube_diameter, "tube_diameter")
    if d >= 2 * big:
        raise ValueError(
            f"tube_diameter ({d}) must be smaller than 2 * major_radius ({2 * big}); "
            "otherwise the torus has no hole"
        )
    axis = _axis(axis)
    spacing = as_spacing(spacing)
    m = non_negative_int(margin_voxels, name="margin_voxels")
    counts = [_span_voxels(2 * big + d, h) for h in spacing]
    counts[axis] = _span_voxels(d, spacing[axis])
    shape = tuple(c + 2 * m for c in counts)
    coords = _centred_coordinates(shape, spacing)
    p, q = (coords[a] for a in _lateral_axes(axis))
    ring = np.sqrt(p**2 + q**2)
    mask = (ring - big) ** 2 + coords[axis] ** 2 <= (d / 2) ** 2
    truth = {
        "thickness": d,
        "SMI": 3.0,
        "SMI_finite": 3.0,
        "BV_continuous": 2.0 * math.pi**2 * big * (d / 2) ** 2,
    }
    return _finish(
        mask,
        spacing,
        truth,
        betti=(1, 1, 0),
        kind="torus",
        parameters={"major_radius": big, "tube_diameter": d, "axis": axis, "margin_voxels": m},
    )


def plate_with_holes(
    thickness_voxels, n_holes, *, hole_diameter=None, axis=0, spacing=1.0, margin_voxels=2
) -> Phantom:
    """A square plate perforated by ``n_holes`` round holes on a regular grid.

    Parameters
    ----------
    thickness_voxels : int
        Plate thickness in voxels along ``axis``.
    n_holes : int
        Number of holes (0 gives a plain plate).
    hole_diameter : float, optional
        Hole diameter (mm). Default: 6 voxels of the coarser in-plane spacing.
    axis : {0, 1, 2}, optional
        The plate normal.
    spacing : float or tuple of 3 float, optional
        Voxel size (mm).
    margin_voxels : int, optional
        Background voxels around the plate.

    Returns
    -------
    Phantom
        ``truth``: ``euler`` ``1 - n_holes``, ``n_holes``, ``thickness`` (plate thickness,
        mm), ``hole_diameter`` (mm), ``extent`` (plate side lengths, mm). Holes are
        ``2 * hole_diameter`` apart (centre to centre) on a near-square grid; the plate
        extends half that pitch beyond the outer holes' centres.

    Examples
    --------
    >>> from microarch.phantoms import plate_with_holes
    >>> p = plate_with_holes(2, 3)
    >>> p.truth["euler"], p.truth["n_holes"]
    (-2, 3)
    """
    t = _positive_int(thickness_voxels, "thickness_voxels")
    k = non_negative_int(n_holes, name="n_holes")
    axis = _axis(axis)
    spacing = as_spacing(spacing)
    m = non_negative_int(margin_voxels, name="margin_voxels")
    lateral = _lateral_axes(axis)
    if hole_diameter is None:
        d = 6.0 * max(spacing[a] for a in lateral)
    else:
        d = _positive_length(hole_diameter, "hole_diameter")
    columns = max(1, math.ceil(math.sqrt(k)))
    rows = max(1, math.ceil(k / columns))
    pitch = 2.0 * d
    counts = [t, t, t]
    counts[lateral[0]] = _span_voxels(rows * pitch, spacing[lateral[0]])
    counts[lateral[1]] = _span_voxels(columns * pitch, spacing[lateral[1]])
    shape = tuple(c + 2 * m for c in counts)
    coords = _centred_coordinates(shape, spacing)
    p, q = (coords[a] for a in lateral)
    slab = np.zeros(shape, dtype=bool)
    slab[m : m + counts[0], m : m + counts[1], m : m + counts[2]] = True
    holes = np.zeros(shape, dtype=bool)
    for h in range(k):
        row, column = divmod(h, columns)
        centre_p = (row + 0.5 - rows / 2.0) * pitch
        centre_q = (column + 0.5 - columns / 2.0) * pitch
        holes |= (p - centre_p) ** 2 + (q - centre_q) ** 2 <= (d / 2) ** 2
    mask = slab & ~holes
    sides = [c * h for c, h in zip(counts, spacing)]
    truth = {
        "thickness": t * spacing[axis],
        "n_holes": k,
        "hole_diameter": d,
        "extent": tuple(sides),
        "SMI": 0.0,
        "BV_continuous": float(np.prod(sides)) - k * math.pi * (d / 2) ** 2 * sides[axis],
    }
    return _finish(
        mask,
        spacing,
        truth,
        betti=(1, k, 0),
        kind="plate_with_holes",
        parameters={
            "thickness_voxels": t,
            "n_holes": k,
            "hole_diameter": d,
            "axis": axis,
            "margin_voxels": m,
        },
    )


# ---------------------------------------------------------------------------------------
# lattices
# ---------------------------------------------------------------------------------------


def plate_lattice(
    thickness_voxels,
    period_voxels,
    *,
    n_plates=4,
    size=None,
    axis=0,
    spacing=1.0,
    fill=False,
    margin_voxels=2,
) -> Phantom:
    """Parallel plates of thickness t repeated every s voxels along ``axis``.

    Parameters
    ----------
    thickness_voxels : int
        Plate thickness t (voxels along ``axis``).
    period_voxels : int
        Distance s between the starts of consecutive plates (voxels); must exceed t.
    n_plates : int, optional
        Number of plates.
    size : float, optional
        Plate side length (mm) along the two other axes. Default: 16 voxels each.
    axis : {0, 1, 2}, optional
        Plate normal.
    spacing : float or tuple of 3 float, optional
        Voxel size (mm).
    fill : bool, optional
        False (default): the stack floats in a margin of ``margin_voxels``. True: the image
        holds exactly ``n_plates`` periods along ``axis`` (each period has its plate in
        the middle: ``(s - t) // 2`` marrow voxels before it) and the plates span the
        whole image across, so the image is one tile of an infinite periodic lattice.
    margin_voxels : int, optional
        Margin for ``fill=False`` (ignored when filling).

    Returns
    -------
    Phantom
        ``truth`` (infinite-lattice values, mm): ``thickness`` (Tb.Th = t h),
        ``separation`` (Tb.Sp = (s - t) h), ``Tb.N`` (1 / (s h)), ``SMI`` 0, ``Conn.D`` 0,
        ``n_plates``, ``euler`` (= n_plates: separate plates).

    Examples
    --------
    >>> from microarch.phantoms import plate_lattice
    >>> lattice = plate_lattice(2, 6, n_plates=3, spacing=0.1, fill=True)
    >>> lattice.mask.shape, round(lattice.truth["Tb.N"], 6), lattice.truth["BV/TV"]
    ((18, 16, 16), 1.666667, 0.3333333333333333)
    """
    t = _positive_int(thickness_voxels, "thickness_voxels")
    s = _positive_int(period_voxels, "period_voxels")
    if s <= t:
        raise ValueError(
            f"period_voxels ({s}) must exceed thickness_voxels ({t}), "
            "or the plates merge into one slab"
        )
    n = _positive_int(n_plates, "n_plates")
    axis = _axis(axis)
    spacing = as_spacing(spacing)
    m = 0 if fill else non_negative_int(margin_voxels, name="margin_voxels")
    counts = [0, 0, 0]
    for a in _lateral_axes(axis):
        counts[a] = _lateral_count(size, spacing[a], 16, "size")
    counts[axis] = n * s if fill else (n - 1) * s + t
    shape = tuple(c + 2 * m for c in counts)
    first = (s - t) // 2 if fill else m
    profile = np.zeros(shape[axis], dtype=bool)
    for k in range(n):
        profile[first + k * s : first + k * s + t] = True
    lateral_mask = np.zeros(shape, dtype=bool)
    lateral_mask[m : shape[0] - m, m : shape[1] - m, m : shape[2] - m] = True
    mask = lateral_mask & profile.reshape([-1 if a == axis else 1 for a in range(3)])
    h = spacing[axis]
    sides = [c * hh for c, hh in zip(counts, spacing)]
    sides[axis] = t * h
    truth = {
        "thickness": t * h,
        "separation": (s - t) * h,
        "Tb.N": 1.0 / (s * h),
        "SMI": 0.0,
        "SMI_finite": _smi_box(*sides),
        "Conn.D": 0.0,
        "n_plates": n,
        "BV_continuous": n * float(np.prod(sides)),
    }
    return _finish(
        mask,
        spacing,
        truth,
        betti=(n, 0, 0),
        kind="plate_lattice",
        parameters={
            "thickness_voxels": t,
            "period_voxels": s,
            "n_plates": n,
            "size": size,
            "axis": axis,
            "fill": bool(fill),
            "margin_voxels": m,
        },
    )


def rod_lattice(
    diameter, period, *, n_cells=2, spacing=1.0, fill=False, margin_voxels=2
) -> Phantom:
    """A cubic lattice of rods along z, y and x meeting at nodes ``period`` apart.

    Parameters
    ----------
    diameter : float
        Rod diameter (mm); must be below ``period``.
    period : float
        Node-to-node distance (mm), the same along the three axes.
    n_cells : int, optional
        Number of cubic cells along each axis.
    spacing : float or tuple of 3 float, optional
        Voxel size (mm).
    fill : bool, optional
        False (default): a floating frame of ``n_cells**3`` complete cells, rods ending
        flat at the outer nodes; ``(n + 1)**3`` nodes, ``3 n (n + 1)**2`` rods,
        ``euler = (n + 1)**3 - 3 n (n + 1)**2``. True: the image is ``n_cells`` periods
        long on every axis (``period`` must then be a whole number of voxels on each
        axis), nodes sit at ``(k + 1/2) * period`` and rods run through the image border:
        one tile of the infinite lattice, with ``n**3`` nodes, ``3 n**2 (n + 1)`` rod
        segments (the outermost ones end at the border), ``euler = 3 n**2 - 2 n**3``.
    margin_voxels : int, optional
        Margin for ``fill=False`` (ignored when filling).

    Returns
    -------
    Phantom
        ``truth``: ``thickness`` (= diameter), ``separation`` (``period - diameter``, the
        gap between neighbouring parallel rods), ``Tb.N`` (``1 / period``), ``n_rods``,
        ``n_junctions`` (nodes), ``n_cells``, ``Conn.D`` (``2 / period**3``, the
        connectivity density of the infinite lattice: each cell adds one node and three
        rods) and ``euler``.

    Examples
    --------
    >>> from microarch.phantoms import rod_lattice
    >>> frame = rod_lattice(2.0, 8.0, n_cells=1)
    >>> frame.truth["euler"], frame.truth["n_rods"], frame.truth["n_junctions"]
    (-4, 12, 8)
    """
    d = _positive_length(diameter, "diameter")
    p = _positive_length(period, "period")
    if d >= p:
        raise ValueError(
            f"diameter ({d}) must be smaller than period ({p}), or neighbouring rods merge"
        )
    n = _positive_int(n_cells, "n_cells")
    spacing = as_spacing(spacing)
    if fill:
        m = 0
        counts = []
        for h in spacing:
            per = p / h
            if abs(per - round(per)) > 1e-6 * max(1.0, per):
                raise ValueError(
                    f"with fill=True the period ({p} mm) must be a whole number of voxels on "
                    f"every axis; spacing {spacing} gives {per:.4g} voxels"
                )
            counts.append(n * round(per))
        shape = tuple(counts)
        # Nodes at (k + 1/2) p from the image start, which is half a voxel before the
        # first voxel centre.
        coords = tuple(
            ((np.arange(c) + 0.5) * h).reshape([-1 if a == i else 1 for i in range(3)])
            for a, (c, h) in enumerate(zip(shape, spacing))
        )
        offset = [(cc % p) - p / 2 for cc in coords]  # signed distance to the nearest node
        within = [np.ones_like(cc, dtype=bool) for cc in coords]
        n_nodes, n_rods = n**3, 3 * n * n * (n + 1)
        n_free_ends = 6 * n * n
    else:
        m = non_negative_int(margin_voxels, name="margin_voxels")
        shape = tuple(_span_voxels(n * p + d, h) + 2 * m for h in spacing)
        coords = tuple(cc + n * p / 2 for cc in _centred_coordinates(shape, spacing))
        nearest = [np.clip(np.round(cc / p), 0, n) * p for cc in coords]
        offset = [cc - node for cc, node in zip(coords, nearest)]
        within = [(cc >= 0) & (cc <= n * p) for cc in coords]
        n_nodes, n_rods = (n + 1) ** 3, 3 * n * (n + 1) ** 2
        n_free_ends = 0
    r_sq = (d / 2) ** 2
    oz, oy, ox = offset
    wz, wy, wx = within
    mask = (
        (wz & (oy**2 + ox**2 <= r_sq))  # rods along z
        | (wy & (oz**2 + ox**2 <= r_sq))  # rods along y
        | (wx & (oz**2 + oy**2 <= r_sq))  # rods along x
    )
    mask = np.ascontiguousarray(np.broadcast_to(mask, shape))
    truth = {
        "thickness": d,
        "separation": p - d,
        "Tb.N": 1.0 / p,
        "Conn.D": 2.0 / p**3,
        "n_cells": n,
        "n_rods": n_rods,
        "n_junctions": n_nodes,
        "n_free_ends": n_free_ends,
    }
    # Betti numbers of a connected graph: beta1 = E - V + 1.
    betti = (1, n_rods - (n_nodes + n_free_ends) + 1, 0)
    return _finish(
        mask,
        spacing,
        truth,
        betti=betti,
        kind="rod_lattice",
        parameters={
            "diameter": d,
            "period": p,
            "n_cells": n,
            "fill": bool(fill),
            "margin_voxels": m,
        },
    )
