"""A cortical shell around trabecular bone, with the true compartments as ground truth.

The periosteal surface is an elliptic cylinder along z; the endosteal surface is its
inner parallel surface at distance ``thickness`` (so the true cortical thickness is the
same everywhere); intracortical pores are canals along z (Haversian-like cylinders)
placed wholly inside the cortex until the requested porosity is reached.
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Real

import numpy as np

from microarch._shared.validation import as_mask, as_spacing, non_negative_int


@dataclasses.dataclass(frozen=True, eq=False)
class CorticalPhantom:
    """Trabecular bone inside a porous cortical shell.

    Attributes
    ----------
    mask : ndarray of bool
        All bone: cortical bone (cortex minus pores) and trabecular bone.
    spacing : tuple of 3 float
        Voxel size (mm).
    periosteal : ndarray of bool
        Inside the periosteal surface (the total bone compartment).
    cortical : ndarray of bool
        Cortical compartment: between the periosteal and endosteal surfaces, pores
        included.
    trabecular : ndarray of bool
        Trabecular compartment: inside the endosteal surface.
    pores : ndarray of bool
        Intracortical pores (inside ``cortical``).
    labels : ndarray of int32
        Element ids of the trabecular bone (from a :class:`TrabecularPhantom`; 0 elsewhere,
        and everywhere when the trabecular input had no labels).
    trabecular_phantom : object
        The phantom (or mask) whose bone fills the trabecular compartment.
    truth : dict
        ``Ct.Th`` (mm, exact), ``Ct.Po`` (pore voxels / cortical compartment voxels),
        ``Tt.Ar``, ``Ct.Ar``, ``Tb.Ar`` (mean cross-sectional areas of the digitised
        compartments, mm²), ``Tt.Ar_continuous``, ``Tb.Ar_continuous``, ``Ct.Pm``
        (periosteal perimeter, mm), ``BV/TV`` and ``BV`` of the trabecular compartment,
        ``Ct.BV`` (cortical bone volume, mm³), ``n_pores`` and ``parameters``.
    """

    mask: np.ndarray
    spacing: tuple
    periosteal: np.ndarray
    cortical: np.ndarray
    trabecular: np.ndarray
    pores: np.ndarray
    labels: np.ndarray
    trabecular_phantom: object = dataclasses.field(repr=False)
    truth: dict = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        t = self.truth
        return (
            f"CorticalPhantom(shape={self.mask.shape}, spacing={self.spacing}, "
            f"Ct.Th={t['Ct.Th']:.3g} mm, Ct.Po={t['Ct.Po']:.3g}, BV/TV={t['BV/TV']:.3g})"
        )

    def volume_fraction(self, upsample: int = 3, *, threads: int | None = None) -> np.ndarray:
        """Bone fraction per voxel: sub-voxel sampled trabecular bone, binary cortex.

        The trabecular elements are sampled ``upsample**3`` times per voxel when the
        trabecular phantom knows its geometry (:class:`TrabecularPhantom`); the cortex and
        the compartment boundary stay at voxel resolution.

        Examples
        --------
        >>> from microarch.phantoms import distal_radius
        >>> site = distal_radius((8, 48, 40), seed=2, cortical_thickness=0.5)
        >>> fraction = site.volume_fraction(2)
        >>> bool((fraction[site.cortical & ~site.pores] == 1).all())
        True
        """
        source = self.trabecular_phantom
        if hasattr(source, "volume_fraction"):
            trabecular = source.volume_fraction(upsample, threads=threads)
        else:
            trabecular = self.mask.astype(np.float32)
        fraction = np.where(self.trabecular, trabecular, 0.0).astype(np.float32)
        fraction[self.cortical & ~self.pores] = 1.0
        return fraction


def _positive(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number (mm); got {value!r}")
    return float(value)


def _ellipse_samples(semi_y, semi_x, step):
    """Points on the ellipse, at most ``step`` mm apart, and its perimeter (mm)."""
    # Parametric sampling dense enough for the largest speed (the larger semi-axis).
    n = max(64, math.ceil(2 * math.pi * max(semi_y, semi_x) / step))
    angle = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    points = np.stack([semi_y * np.sin(angle), semi_x * np.cos(angle)], axis=1)
    closed = np.vstack([points, points[:1]])
    perimeter = float(np.sum(np.linalg.norm(np.diff(closed, axis=0), axis=1)))
    return points, perimeter


def _depth_below_periosteum(shape_yx, spacing_yx, semi_y, semi_x, band):
    """Distance (mm) from each in-plane voxel centre to the ellipse; negative outside.

    Exact (to < 1e-6 mm) within ``band`` mm of the ellipse; deeper points get a lower
    bound of their depth, which is all the callers need (they only compare depths with
    at most ``band``).
    """
    from scipy.spatial import cKDTree

    ny, nx = shape_yx
    hy, hx = spacing_yx
    y = ((np.arange(ny) - (ny - 1) / 2.0) * hy)[:, None]
    x = ((np.arange(nx) - (nx - 1) / 2.0) * hx)[None, :]
    rho = np.sqrt((y / semi_y) ** 2 + (x / semi_x) ** 2)
    inside = rho <= 1.0
    # The ellipse scaled by rho passes through the point and lies at least
    # |1 - rho| * min(a, b) from the ellipse: a cheap bound that spares the far points.
    bound = np.abs(1.0 - rho) * min(semi_y, semi_x)
    near = bound <= band
    # A chord of length s deviates from the arc by at most s**2 / (8 rho_min), so steps
    # of 1e-3 mm keep the distance error far below 1e-6 mm for bone-sized ellipses.
    samples, perimeter = _ellipse_samples(semi_y, semi_x, step=1e-3)
    yy, xx = np.broadcast_arrays(y, x)
    query = np.stack([yy[near], xx[near]], axis=1)
    distance = bound.copy()
    distance[near], _ = cKDTree(samples).query(query)
    return np.where(inside, distance, -distance), inside, perimeter


def embed_in_cortex(
    phantom,
    *,
    spacing=None,
    outer_semi_axes=None,
    thickness: float = 0.8,
    porosity: float = 0.02,
    pore_diameter: float = 0.12,
    pore_length: float = 1.5,
    seed: int = 0,
) -> CorticalPhantom:
    """Place trabecular bone inside an elliptic cortical shell with pores.

    Parameters
    ----------
    phantom : TrabecularPhantom, Phantom or array_like of bool
        The trabecular bone; only its part inside the endosteal surface is kept.
    spacing : float or tuple of 3 float, optional
        Voxel size (mm); required when ``phantom`` is a plain array, otherwise taken from
        it.
    outer_semi_axes : tuple of 2 float, optional
        Semi-axes (mm) of the periosteal ellipse along y and x, centred in the image.
        Default: the largest ellipse leaving 3 voxels of soft tissue on each side.
    thickness : float, optional
        Cortical thickness (mm), the distance from the periosteal to the endosteal
        surface. It must not exceed the smallest radius of curvature of the ellipse
        (``min(a, b)**2 / max(a, b)``), or the endosteal surface develops corners.
    porosity : float, optional
        Target intracortical porosity (pore volume / cortical compartment volume).
        Pores are added until the target is reached, so the digitised value
        (``truth["Ct.Po"]``) is slightly above it.
    pore_diameter, pore_length : float, optional
        Pore canal diameter and length (mm); canals run along z and stay enclosed in the
        cortex (at least one voxel of bone between a canal and either surface).
    seed : int, optional
        Random seed for the pore positions.

    Returns
    -------
    CorticalPhantom

    Examples
    --------
    >>> from microarch.phantoms import embed_in_cortex, trabecular_bone
    >>> bone = trabecular_bone((10, 60, 50), seed=4)
    >>> site = embed_in_cortex(bone, thickness=0.6, porosity=0.03)
    >>> site.truth["Ct.Th"], bool((site.cortical & site.trabecular).any())
    (0.6, False)
    >>> 0.03 <= site.truth["Ct.Po"] < 0.06
    True
    """
    if hasattr(phantom, "mask") and hasattr(phantom, "spacing"):
        trabecular_mask = as_mask(phantom.mask, name="phantom.mask")
        if spacing is not None and as_spacing(spacing) != tuple(phantom.spacing):
            raise ValueError("spacing differs from the phantom's own spacing; leave it out")
        spacing = as_spacing(phantom.spacing)
        labels = getattr(phantom, "labels", None)
    else:
        trabecular_mask = as_mask(phantom, name="phantom")
        spacing = as_spacing(spacing)
        labels = None
    nz, ny, nx = trabecular_mask.shape
    _, hy, hx = spacing
    if outer_semi_axes is None:
        semi_y, semi_x = (ny / 2 - 3) * hy, (nx / 2 - 3) * hx
        if semi_y <= 0 or semi_x <= 0:
            raise ValueError(f"image {trabecular_mask.shape} is too small in y/x for a cortex")
    else:
        values = tuple(outer_semi_axes) if np.ndim(outer_semi_axes) == 1 else ()
        if len(values) != 2:
            raise ValueError(
                f"outer_semi_axes must be two lengths (mm) along y and x; got {outer_semi_axes!r}"
            )
        semi_y, semi_x = (_positive(v, "outer_semi_axes") for v in values)
    thickness = _positive(thickness, "thickness")
    min_curvature_radius = min(semi_y, semi_x) ** 2 / max(semi_y, semi_x)
    if thickness > min_curvature_radius:
        raise ValueError(
            f"thickness {thickness} mm exceeds the smallest radius of curvature of the "
            f"periosteal ellipse ({min_curvature_radius:.3g} mm); use a thinner cortex or a "
            "rounder ellipse"
        )
    if isinstance(porosity, bool) or not isinstance(porosity, Real) or not 0 <= porosity < 1:
        raise ValueError(f"porosity must lie in [0, 1); got {porosity!r}")
    pore_diameter = _positive(pore_diameter, "pore_diameter")
    pore_length = _positive(pore_length, "pore_length")
    non_negative_int(seed, name="seed")

    depth, inside, perimeter = _depth_below_periosteum(
        (ny, nx), (hy, hx), semi_y, semi_x, band=thickness + 2 * max(hy, hx)
    )
    endosteal = inside & (depth > thickness)
    cortical_2d = inside & ~endosteal
    pores, n_pores = _place_pores(
        cortical_2d,
        depth,
        (nz, ny, nx),
        spacing,
        thickness,
        porosity,
        pore_diameter,
        pore_length,
        np.random.default_rng(int(seed)),
    )
    periosteal = np.broadcast_to(inside, (nz, ny, nx)).copy()
    trabecular = np.broadcast_to(endosteal, (nz, ny, nx)).copy()
    cortical = np.broadcast_to(cortical_2d, (nz, ny, nx)).copy()
    trabecular_bone = trabecular_mask & trabecular
    cortical_bone = cortical & ~pores
    mask = trabecular_bone | cortical_bone
    if labels is None:
        labels = np.zeros(mask.shape, dtype=np.int32)
    else:
        labels = np.where(trabecular, labels, 0).astype(np.int32)

    voxel_volume = float(np.prod(spacing))
    pixel_area = hy * hx
    n_cortical = int(np.count_nonzero(cortical))
    n_trabecular = int(np.count_nonzero(trabecular))
    n_trab_bone = int(np.count_nonzero(trabecular_bone))
    inner_area = math.pi * semi_y * semi_x - perimeter * thickness + math.pi * thickness**2
    truth = {
        "Ct.Th": thickness,
        "Ct.Po": int(np.count_nonzero(pores)) / n_cortical if n_cortical else math.nan,
        "Tt.Ar": int(np.count_nonzero(inside)) * pixel_area,
        "Ct.Ar": int(np.count_nonzero(cortical_2d)) * pixel_area,
        "Tb.Ar": int(np.count_nonzero(endosteal)) * pixel_area,
        "Tt.Ar_continuous": math.pi * semi_y * semi_x,
        "Tb.Ar_continuous": inner_area,
        "Ct.Pm": perimeter,
        "BV/TV": n_trab_bone / n_trabecular if n_trabecular else math.nan,
        "BV": n_trab_bone * voxel_volume,
        "TV": n_trabecular * voxel_volume,
        "Ct.BV": int(np.count_nonzero(cortical_bone)) * voxel_volume,
        "n_pores": n_pores,
        "parameters": {
            "spacing": tuple(spacing),
            "outer_semi_axes": (semi_y, semi_x),
            "thickness": thickness,
            "porosity": float(porosity),
            "pore_diameter": pore_diameter,
            "pore_length": pore_length,
            "seed": int(seed),
        },
    }
    return CorticalPhantom(
        mask=mask,
        spacing=tuple(spacing),
        periosteal=periosteal,
        cortical=cortical,
        trabecular=trabecular,
        pores=pores,
        labels=labels,
        trabecular_phantom=phantom,
        truth=truth,
    )


def _place_pores(cortical_2d, depth, shape, spacing, thickness, porosity, diameter, length, rng):
    """Add z-aligned pore canals wholly inside the cortex until the porosity is reached."""
    nz, ny, nx = shape
    hz, hy, hx = spacing
    pores = np.zeros(shape, dtype=bool)
    n_cortical = int(np.count_nonzero(cortical_2d)) * nz
    target = porosity * n_cortical
    if porosity == 0 or n_cortical == 0:
        return pores, 0
    radius = diameter / 2
    # Pore centres (jittered by up to half a voxel per axis) keep the whole disc inside
    # the cortex with at least one voxel of bone around it: canals are enclosed.
    clearance = radius + 1.75 * max(hy, hx)
    allowed = cortical_2d & (depth >= clearance) & (depth <= thickness - clearance)
    candidates = np.argwhere(allowed)
    if candidates.size == 0:
        raise ValueError(
            f"pores of diameter {diameter} mm do not fit in a cortex {thickness} mm thick on "
            "this grid; use smaller pores or a thicker cortex"
        )
    n_length = max(1, round(length / hz))
    reach_y = math.ceil(radius / hy) + 1
    reach_x = math.ceil(radius / hx) + 1
    n_pore_voxels = 0
    n_pores = 0
    max_pores = 10 * max(1, int(target)) + 100
    while n_pore_voxels < target and n_pores < max_pores:
        j, k = candidates[rng.integers(candidates.shape[0])]
        # Sub-voxel centre, still within the allowed voxel.
        cy = (j - (ny - 1) / 2.0 + rng.uniform(-0.5, 0.5)) * hy
        cx = (k - (nx - 1) / 2.0 + rng.uniform(-0.5, 0.5)) * hx
        z0 = int(rng.integers(-n_length + 1, nz))
        z_lo, z_hi = max(0, z0), min(nz, z0 + n_length)
        j_lo, j_hi = max(0, j - reach_y), min(ny, j + reach_y + 1)
        k_lo, k_hi = max(0, k - reach_x), min(nx, k + reach_x + 1)
        y = ((np.arange(j_lo, j_hi) - (ny - 1) / 2.0) * hy)[:, None]
        x = ((np.arange(k_lo, k_hi) - (nx - 1) / 2.0) * hx)[None, :]
        disc = ((y - cy) ** 2 + (x - cx) ** 2 <= radius**2) & cortical_2d[j_lo:j_hi, k_lo:k_hi]
        block = pores[z_lo:z_hi, j_lo:j_hi, k_lo:k_hi]  # a view: written in place
        # Count exactly: earlier canals may overlap this one in some slices only.
        new = int(np.count_nonzero(disc[None] & ~block))
        block |= disc[None]
        n_pore_voxels += new
        n_pores += 1
    return pores, n_pores


def distal_radius(
    shape=(64, 192, 160),
    *,
    spacing=0.0607,
    seed: int = 0,
    outer_semi_axes=None,
    cortical_thickness: float = 0.8,
    porosity: float = 0.02,
    pore_diameter: float = 0.12,
    **trabecular_options,
) -> CorticalPhantom:
    """A distal-radius-like site: Voronoi trabecular bone inside a porous elliptic cortex.

    Parameters
    ----------
    shape : tuple of 3 int, optional
        Image shape (z, y, x). A real XtremeCT II radius stack is about
        (168, 330, 260) voxels.
    spacing : float or tuple of 3 float, optional
        Voxel size (mm).
    seed : int, optional
        Seed of the trabecular network; the pores use ``seed + 1``.
    outer_semi_axes : tuple of 2 float, optional
        Periosteal semi-axes (mm) along y and x; default fills the image (3-voxel margin).
    cortical_thickness : float, optional
        Ct.Th (mm); XtremeCT II radius of postmenopausal women: about 0.7-0.9.
    porosity : float, optional
        Target Ct.Po (fraction); radius: about 0.01-0.03.
    pore_diameter : float, optional
        Pore canal diameter (mm).
    **trabecular_options
        Passed to :func:`trabecular_bone` (``cell_size_mm``, ``rod_removal``, ...).

    Returns
    -------
    CorticalPhantom

    Examples
    --------
    >>> from microarch.phantoms import distal_radius
    >>> site = distal_radius((8, 48, 40), seed=2, cortical_thickness=0.5)
    >>> site.mask.shape, site.truth["Ct.Th"]
    ((8, 48, 40), 0.5)
    """
    from microarch.phantoms._trabecular import trabecular_bone

    bone = trabecular_bone(shape, spacing=spacing, seed=seed, **trabecular_options)
    return embed_in_cortex(
        bone,
        outer_semi_axes=outer_semi_axes,
        thickness=cortical_thickness,
        porosity=porosity,
        pore_diameter=pore_diameter,
        seed=int(seed) + 1,
    )
