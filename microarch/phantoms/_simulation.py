"""Three visits of one bone: baseline, on aromatase-inhibitor (AI) therapy, after withdrawal.

The model (domain notes §9.3-9.4) acts on a distal-radius-like site: a Voronoi trabecular
network (:func:`~microarch.phantoms.trabecular_bone`, element ids kept) inside an elliptic
cortical shell with canal pores. The structure lives on a *fine* grid (the scan's voxel
size divided by ``oversample``) so that sub-voxel events (cavities 40-60 µm deep,
endosteal thinning by tens of µm) reach the scan as partial volume.

On AI (about two years):

- rod severing: a share of the rods joining two junctions is cut in the middle (a gap,
  leaving two stubs with free ends) or resorbed whole, thin rods first (a cavity
  reaching the midline of a thin rod severs it);
- plate perforation: a hole through a share of the plates;
- rod thinning: the middle of each remaining rod loses a share of its radius;
- remodelling cavities: ellipsoidal pits on trabecular surfaces (40-60 µm deep,
  0.1-0.3 mm long) until a share of the trabecular bone is in open cavities;
- cortical thinning from the endosteal side (the released band joins the trabecular
  compartment, trabeculae stay attached) and new or enlarged canal pores in the inner
  half of the cortex.

After withdrawal, the physiological operator (:class:`Withdrawal`) refills the open
cavities and lays new bone in packets on surviving surfaces, and does nothing else: a
severed rod is never reconnected and a perforation never closes. Control subjects
(``recovery="reversal"``) instead undo a share of every AI change; a share of 1
restores the baseline structure.

Every trabecular change is a local edit of the baseline network whose effect on the
*ideal mask* (scan voxels at least half bone) is checked before it is kept: a severing
removes exactly one connection, a perforation adds exactly one tunnel, thinning,
cavities and formation change no topology; and no two AI edits share a 2x2x2 cell of
scan voxels, so their effects on the Euler characteristic add up exactly. The truth
(connections, χ, Conn.D, densities) is therefore exact, and the Conn.D skeletal-memory
index is exactly 1 for the physiological operator and exactly 0 for a full reversal.

Every visit is scanned in a new position (a rigid transform per visit, the baseline
being the reference) through :func:`~microarch.phantoms.render_scan`'s imaging model.

Determinism: one :class:`numpy.random.SeedSequence` per simulation, spawned into named
streams in a fixed order; each stream's draws happen in a fixed order whatever the
outcome. The same seed and parameters give the same arrays on any machine (up to
floating-point differences in the libraries underneath).
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Integral, Real

import numpy as np

from microarch._shared.validation import as_spacing, check_choice, non_negative_int

ROLES = ("baseline", "on_ai", "post_withdrawal")
VISITS = ("V1", "V2", "V3")
RECOVERIES = ("withdrawal", "reversal")

_STREAMS = (
    "structure",
    "pores",
    "poses",
    "severing",
    "perforation",
    "cavities",
    "new_pores",
    "recovery",
    "noise",
)

FRAME = (
    "Points are (z, y, x) in mm on a visit's voxel grid, the centre of voxel (i, j, k) "
    "lying at (i*hz, j*hy, k*hx) (first voxel centre at the origin, axes along the array "
    "axes; file origins are not used), as in microarch.longitudinal. A visit's transform "
    "maps points of the baseline grid to the same anatomical points on that visit's grid: "
    "q = matrix @ p + offset = R (p - centre) + centre + translation. rotation_deg holds "
    "the SimpleITK/ITK Euler3DTransform angles (about x, y, z; R = Rz Rx Ry in x, y, z "
    "order); sitk_euler3d gives that transform's parameters in SimpleITK order (x, y, z)."
)


# ---------------------------------------------------------------------------------------
# public parameter sets
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AILoss:
    """Strengths of the bone loss between the baseline and the on-AI visit (about 2 years).

    The defaults are calibrated on the demo site (82 µm voxels, Ct.Th 0.75 mm, see
    :func:`~microarch.phantoms.write_demo_cohort`): the total vBMD falls by about 4-5 %,
    the trabecular vBMD by about 2 % (domain notes §8.1: -3 to -6 % and -1 to -3 %),
    Ct.Th by 5 % and Conn.D by several per cent. Trabecular connectivity under AI is not
    known from human data; treat ``sever_fraction`` as a hypothesis to vary.

    Attributes
    ----------
    sever_fraction : float
        Share of the connecting rods (both ends at junctions) of the analysed region that
        are severed (rounded to an even number).
    sever_mode : {"gap", "resorb"}
        ``"gap"``: a gap of ``gap_mm`` is cut in the middle of the rod, two stubs stay;
        ``"resorb"``: the whole rod is removed (its id disappears).
    gap_mm : float
        Length of the gap cut into a severed rod (mm); at least two scan voxels make it
        visible to the scanner.
    thin_rod_bias : float
        Severing weight ``(radius / mean radius) ** -thin_rod_bias``: thin rods go first.
    perforation_fraction : float
        Share of the analysed plates that get a hole (rounded to an even number).
    hole_diameter_mm : float
        Diameter of a perforation (mm); the hole keeps a rim of 1.5 scan voxels.
    rod_thinning : float
        Relative radius lost by the middle (20-80 % of the length) of each remaining rod.
    cavity_volume_fraction : float
        Open resorption cavities at the on-AI visit, as a share of the trabecular bone
        volume (activation frequency x resorption depth).
    cavity_depth_mm, cavity_length_mm : tuple of 2 float
        Uniform ranges of a cavity's depth (along the surface normal) and length (mm); its
        width is 50-100 % of the length.
    cortical_thinning : float
        Relative endosteal loss of cortical thickness.
    porosity_increase : float
        Absolute increase of cortical porosity by new canals in the inner half of the
        cortex.
    pore_enlargement : float
        Relative radius increase of the existing pores in the inner half of the cortex.
    """

    sever_fraction: float = 0.10
    sever_mode: str = "gap"
    gap_mm: float = 0.25
    thin_rod_bias: float = 2.0
    perforation_fraction: float = 0.03
    hole_diameter_mm: float = 0.3
    rod_thinning: float = 0.01
    cavity_volume_fraction: float = 0.01
    cavity_depth_mm: tuple = (0.04, 0.06)
    cavity_length_mm: tuple = (0.1, 0.3)
    cortical_thinning: float = 0.05
    porosity_increase: float = 0.01
    pore_enlargement: float = 0.25

    def __post_init__(self):
        for name in ("sever_fraction", "rod_thinning", "perforation_fraction",
                     "cavity_volume_fraction", "cortical_thinning", "porosity_increase"):
            _check_fraction(getattr(self, name), name, upper=0.9)
        check_choice(self.sever_mode, ("gap", "resorb"), name="sever_mode")
        _check_positive(self.gap_mm, "gap_mm")
        _check_nonnegative(self.thin_rod_bias, "thin_rod_bias")
        _check_nonnegative(self.pore_enlargement, "pore_enlargement")
        _check_positive(self.hole_diameter_mm, "hole_diameter_mm")
        for name in ("cavity_depth_mm", "cavity_length_mm"):
            low, high = _check_range(getattr(self, name), name)
            object.__setattr__(self, name, (low, high))


@dataclasses.dataclass(frozen=True)
class Withdrawal:
    """The physiological post-withdrawal operator (domain notes §9.4).

    Activation returns to baseline and formation completes: ``cavity_refill`` of the open
    cavities are refilled, and new bone is laid down in packets on the surviving
    trabecular surfaces (mineralisation, thickening of survivors) up to
    ``formation_volume_fraction`` of the trabecular bone volume. A packet that would
    bridge a gap (change the Euler characteristic of the ideal mask) is not laid down:
    severed rods, perforations, cortical thinning and pores stay, so the operator never
    reconnects anything.

    Attributes
    ----------
    cavity_refill : float
        Fraction of the open cavities refilled.
    formation_volume_fraction : float
        Bone added on surviving surfaces, as a fraction of the trabecular bone volume.
    packet_height_mm, packet_length_mm : tuple of 2 float
        Uniform ranges of a formation packet's height (normal to the surface) and
        length (mm); the width is 50-100 % of the length.
    """

    cavity_refill: float = 1.0
    formation_volume_fraction: float = 0.005
    packet_height_mm: tuple = (0.02, 0.04)
    packet_length_mm: tuple = (0.1, 0.3)

    def __post_init__(self):
        _check_fraction(self.cavity_refill, "cavity_refill")
        _check_fraction(self.formation_volume_fraction, "formation_volume_fraction", upper=0.5)
        for name in ("packet_height_mm", "packet_length_mm"):
            low, high = _check_range(getattr(self, name), name)
            object.__setattr__(self, name, (low, high))


# ---------------------------------------------------------------------------------------
# rigid transforms
# ---------------------------------------------------------------------------------------


def _itk_euler_matrix_xyz(angle_x, angle_y, angle_z):
    """ITK Euler3DTransform matrix (x, y, z order), default ZXY composition R = Rz Rx Ry."""
    cx, sx = math.cos(angle_x), math.sin(angle_x)
    cy, sy = math.cos(angle_y), math.sin(angle_y)
    cz, sz = math.cos(angle_z), math.sin(angle_z)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx @ ry


def _itk_euler_angles(matrix_xyz):
    """Angles (x, y, z) of a rotation in ITK's ZXY convention (radians)."""
    m = np.asarray(matrix_xyz, dtype=float)
    angle_x = math.asin(max(-1.0, min(1.0, m[2, 1])))
    if abs(math.cos(angle_x)) > 1e-9:
        angle_y = math.atan2(-m[2, 0], m[2, 2])
        angle_z = math.atan2(-m[0, 1], m[1, 1])
    else:  # gimbal lock: put all of the remaining rotation into z
        angle_y = 0.0
        angle_z = math.atan2(m[1, 0], m[0, 0])
    return angle_x, angle_y, angle_z


@dataclasses.dataclass(frozen=True, eq=False)
class RigidTransform:
    """A rigid map from the baseline grid to a visit's grid: ``q = matrix @ p + offset``.

    Points are (z, y, x) in mm with the first voxel centre of each grid at the origin
    (the frame of :mod:`microarch.longitudinal`). ``matrix = R``, ``offset = centre +
    translation - R @ centre``: the rotation turns about ``centre`` (a baseline-grid
    point, the middle of the baseline field of view) and then moves it by
    ``translation``.

    Attributes
    ----------
    matrix : ndarray (3, 3)
        Rotation in (z, y, x) order.
    offset : ndarray (3,)
        mm, (z, y, x).
    centre : tuple of 3 float
        Centre of rotation on the baseline grid (mm, z, y, x).
    translation : tuple of 3 float
        Displacement of ``centre`` (mm, z, y, x).
    rotation_deg : tuple of 3 float
        ITK Euler3DTransform angles about x, y and z (degrees; R = Rz Rx Ry in x, y, z).
    """

    matrix: np.ndarray
    offset: np.ndarray
    centre: tuple
    translation: tuple
    rotation_deg: tuple

    @classmethod
    def from_parameters(cls, *, rotation_deg=(0.0, 0.0, 0.0), translation=(0.0, 0.0, 0.0),
                        centre=(0.0, 0.0, 0.0)) -> RigidTransform:
        """Build from ITK Euler angles (degrees, about x, y, z), translation and centre
        (mm, z, y, x).

        Examples
        --------
        >>> t = RigidTransform.from_parameters(translation=(0.5, 0.0, -1.0))
        >>> t.apply([[1.0, 2.0, 3.0]]).tolist()
        [[1.5, 2.0, 2.0]]
        """
        angles = tuple(float(a) for a in rotation_deg)
        shift = tuple(float(v) for v in translation)
        middle = tuple(float(v) for v in centre)
        if len(angles) != 3 or len(shift) != 3 or len(middle) != 3:
            raise ValueError("rotation_deg, translation and centre need 3 values each")
        xyz = _itk_euler_matrix_xyz(*(math.radians(a) for a in angles))
        matrix = xyz[::-1, ::-1].copy()
        c = np.asarray(middle)
        offset = c + np.asarray(shift) - matrix @ c
        return cls(matrix=matrix, offset=offset, centre=middle, translation=shift,
                   rotation_deg=angles)

    def apply(self, points) -> np.ndarray:
        """Map baseline-grid points (N, 3) (mm, z, y, x) to this visit's grid."""
        p = np.asarray(points, dtype=float)
        return p @ self.matrix.T + self.offset

    def inverse(self) -> RigidTransform:
        """The map from this visit's grid back to the baseline grid."""
        matrix = self.matrix.T.copy()
        centre = self.matrix @ np.asarray(self.centre) + self.offset
        angles = _itk_euler_angles(matrix[::-1, ::-1])
        return RigidTransform(
            matrix=matrix,
            offset=-(matrix @ self.offset),
            centre=tuple(float(v) for v in centre),
            translation=tuple(float(-v) for v in self.translation),
            rotation_deg=tuple(math.degrees(a) for a in angles),
        )

    @property
    def rotation_angle_deg(self) -> float:
        """Total rotation angle (degrees)."""
        cosine = (np.trace(self.matrix) - 1.0) / 2.0
        return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))

    def as_sitk(self):
        """The same map as a SimpleITK ``Euler3DTransform`` (physical x, y, z order)."""
        import SimpleITK as sitk

        transform = sitk.Euler3DTransform()
        transform.SetCenter([float(v) for v in self.centre[::-1]])
        transform.SetRotation(*(math.radians(a) for a in self.rotation_deg))
        transform.SetTranslation([float(v) for v in self.translation[::-1]])
        return transform

    def as_dict(self) -> dict:
        """JSON-ready description (see :data:`FRAME` for the convention)."""
        return {
            "maps": "baseline grid -> this visit's grid",
            "matrix": [[float(v) for v in row] for row in self.matrix],
            "offset": [float(v) for v in self.offset],
            "centre": list(self.centre),
            "translation": list(self.translation),
            "rotation_deg": {"x": self.rotation_deg[0], "y": self.rotation_deg[1],
                             "z": self.rotation_deg[2]},
            "rotation_angle_deg": self.rotation_angle_deg,
            "sitk_euler3d": {
                "center_xyz": list(self.centre[::-1]),
                "angles_xyz_rad": [math.radians(a) for a in self.rotation_deg],
                "translation_xyz": list(self.translation[::-1]),
            },
        }


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SimulatedVisit:
    """One simulated visit.

    Attributes
    ----------
    visit : str
        ``"V1"``, ``"V2"``, ``"V3"``.
    role : str
        ``"baseline"``, ``"on_ai"`` or ``"post_withdrawal"``.
    scan : SyntheticScan
        The rendered scan on this visit's grid (native int16, density, calibration,
        ``fraction``: the bone fraction of each voxel before blur and noise).
    transform : RigidTransform
        Baseline grid -> this visit's grid (identity for the baseline).
    masks : dict of ndarray of bool
        True masks on this visit's grid: ``bone`` (voxels at least half bone),
        ``periosteal``, ``cortical``, ``trabecular`` (sampled at the voxel centres).
    reference : dict of ndarray
        This visit's structure on the *baseline* grid (the frame of the truth):
        ``bone``, ``fraction`` (float32), ``labels`` (element id of each bone voxel of the
        trabecular network, int32; the largest id in the voxel), ``periosteal``,
        ``cortical``, ``trabecular``.
    truth : dict
        This visit's true measures (see :func:`simulate_visits`).
    """

    visit: str
    role: str
    scan: object
    transform: RigidTransform
    masks: dict
    reference: dict = dataclasses.field(repr=False)
    truth: dict = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return (f"SimulatedVisit({self.visit!r}, {self.role!r}, shape={self.scan.native.shape}, "
                f"rotation={self.transform.rotation_angle_deg:.2f} deg)")


@dataclasses.dataclass(frozen=True, eq=False)
class VisitSeries:
    """Baseline, on-AI and post-withdrawal visits of one simulated subject.

    Attributes
    ----------
    visits : tuple of SimulatedVisit
    spacing : tuple of 3 float
        Voxel size of the scans (mm).
    common : dict of ndarray of bool
        The common region on the baseline grid: ``field_of_view`` (baseline voxels whose
        centre every visit's grid covers, between its first and last voxel centres),
        ``trabecular``, ``cortical``, ``periosteal`` (the intersection over the visits
        of each true compartment, eroded by one voxel in-plane, within
        ``field_of_view``): where the truth's measures are taken.
    truth : dict
        JSON-ready ground truth (see :func:`simulate_visits`).
    """

    visits: tuple
    spacing: tuple
    common: dict = dataclasses.field(repr=False)
    truth: dict = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        index = self.truth["memory_index"].get("Conn.D", math.nan)
        return (f"VisitSeries(recovery={self.truth['recovery']!r}, "
                f"visits={[v.visit for v in self.visits]}, memory index Conn.D={index:.3g})")

    def __getitem__(self, role_or_visit):
        for visit in self.visits:
            if role_or_visit in (visit.role, visit.visit):
                return visit
        raise KeyError(f"no visit {role_or_visit!r}; use one of {ROLES} or {VISITS}")


# ---------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------


def _is_number(value):
    return (isinstance(value, Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def _check_fraction(value, name, upper=1.0):
    if not _is_number(value) or not 0 <= value <= upper:
        raise ValueError(f"{name} must be a number in [0, {upper}]; got {value!r}")


def _check_nonnegative(value, name):
    if not _is_number(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number; got {value!r}")


def _check_positive(value, name):
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}")


def _check_range(value, name):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers (low, high) in mm; got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"{name} must satisfy 0 < low <= high; got {value!r}")
    return low, high


def _as_shape(shape):
    try:
        values = tuple(shape)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(isinstance(v, Integral) and not isinstance(v, bool)
                                   and v > 0 for v in values):
        raise ValueError(f"shape must be three positive integers (z, y, x); got {shape!r}")
    return tuple(int(v) for v in values)


def _as_triple(value, name):
    values = np.broadcast_to(np.asarray(value, dtype=float), (3,)) if np.ndim(value) <= 1 \
        else np.empty(0)
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"{name} must be a non-negative number or three (z, y, x); "
                         f"got {value!r}")
    return tuple(float(v) for v in values)


def _int_seed(sequence: np.random.SeedSequence) -> int:
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


# ---------------------------------------------------------------------------------------
# the site: fine world box, compartments, pores
# ---------------------------------------------------------------------------------------


def _ellipse_depth(y, x, semi_y, semi_x, band):
    """Depth (mm) of points (centred coordinates) below the ellipse; negative outside.

    Exact (to < 1e-6 mm) within ``band`` mm of the ellipse, a lower bound of the depth
    deeper inside (the callers only compare depths with at most ``band``).
    """
    from scipy.spatial import cKDTree

    from microarch.phantoms._cortex import _ellipse_samples

    y, x = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(x, dtype=float))
    rho = np.sqrt((y / semi_y) ** 2 + (x / semi_x) ** 2)
    inside = rho <= 1.0
    distance = np.abs(1.0 - rho) * min(semi_y, semi_x)
    near = distance <= band
    if near.any():
        samples, _ = _ellipse_samples(semi_y, semi_x, step=1e-3)
        distance[near], _ = cKDTree(samples).query(np.stack([y[near], x[near]], axis=1))
    return np.where(inside, distance, -distance)


@dataclasses.dataclass(eq=False)
class _Site:
    """The anatomy at baseline, on a fine grid covering the bone in every visit's view.

    Box coordinates: the coarse box spans world z in [0, n_z_world) (baseline slice i is
    world slice i + margin_z) and baseline rows/columns [y0, y0 + n_y), [x0, x0 + n_x);
    the fine box subdivides each coarse voxel into ``k**3``. Box millimetres (the
    trabecular phantom's own frame) put fine voxel I's centre at (I + 0.5) * h / k.
    """

    shape: tuple  # scan grid (z, y, x)
    h: float
    k: int
    margin_z: int
    y0: int
    x0: int
    box: tuple  # coarse box shape
    centre: np.ndarray  # baseline-frame centre of the ellipse / rotation (mm)
    semi_axes: tuple
    bone: object  # TrabecularPhantom on the fine box
    depth_fine: np.ndarray  # 2D (fine y, fine x) depth below the periosteum
    depth_coarse: np.ndarray  # 2D on the baseline grid's (y, x)
    threads: int | None

    @property
    def fine_shape(self):
        return tuple(n * self.k for n in self.box)

    @property
    def h_fine(self):
        return self.h / self.k

    def box_to_baseline(self, points_mm):
        """Box millimetres -> baseline-grid millimetres."""
        shift = np.array([-self.margin_z, self.y0, self.x0], dtype=float) * self.h - self.h / 2
        return np.asarray(points_mm, dtype=float) + shift

    def baseline_window(self):
        """Slices of the coarse box that make up the baseline grid."""
        return slice(self.margin_z, self.margin_z + self.shape[0])


def _build_site(shape, h, k, max_shift, max_rotation_deg, cortical_thickness, semi_axes,
                trabecular_options, structure_seed, threads):
    from microarch.phantoms._trabecular import trabecular_bone

    nz, ny, nx = shape
    centre = np.array([(nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2]) * h
    theta = math.radians(max_rotation_deg) * math.sqrt(3.0)  # bound of the total angle
    reach = math.hypot(ny * h / 2, nx * h / 2) + nz * h / 2
    sweep = reach * math.sin(theta)
    if semi_axes is None:
        semi_y = ((ny - 1) / 2 - 3) * h - max_shift[1] - sweep
        semi_x = ((nx - 1) / 2 - 3) * h - max_shift[2] - sweep
    else:
        semi_y, semi_x = (float(v) for v in semi_axes)
    if min(semi_y, semi_x) <= 2 * cortical_thickness:
        raise ValueError(
            f"the field of view {shape} at {h} mm leaves no room for a bone after the "
            f"repositioning margin (semi-axes {semi_y:.3g}, {semi_x:.3g} mm); use a larger "
            "shape, smaller shifts or a thinner cortex"
        )
    curvature = min(semi_y, semi_x) ** 2 / max(semi_y, semi_x)
    if cortical_thickness > curvature:
        raise ValueError(
            f"cortical_thickness {cortical_thickness} mm exceeds the smallest radius of "
            f"curvature of the periosteal ellipse ({curvature:.3g} mm)"
        )
    margin_z = math.ceil((max_shift[0] + sweep) / h) + 2
    half_y = math.ceil(semi_y / h) + 2
    half_x = math.ceil(semi_x / h) + 2
    y0 = max(0, round((ny - 1) / 2) - half_y)
    x0 = max(0, round((nx - 1) / 2) - half_x)
    y1 = min(ny, round((ny - 1) / 2) + half_y + 1)
    x1 = min(nx, round((nx - 1) / 2) + half_x + 1)
    box = (nz + 2 * margin_z, y1 - y0, x1 - x0)
    fine = tuple(n * k for n in box)
    bone = trabecular_bone(fine, spacing=h / k, seed=structure_seed, threads=threads,
                           **trabecular_options)

    h_fine = h / k
    band = cortical_thickness + 4 * h
    # Fine pixel centres (baseline mm) relative to the ellipse centre.
    fy = (y0 - 0.5) * h + (np.arange(fine[1]) + 0.5) * h_fine - centre[1]
    fx = (x0 - 0.5) * h + (np.arange(fine[2]) + 0.5) * h_fine - centre[2]
    depth_fine = _ellipse_depth(fy[:, None], fx[None, :], semi_y, semi_x, band)
    cy = np.arange(ny) * h - centre[1]
    cx = np.arange(nx) * h - centre[2]
    depth_coarse = _ellipse_depth(cy[:, None], cx[None, :], semi_y, semi_x, band)
    return _Site(
        shape=tuple(shape), h=h, k=k, margin_z=margin_z, y0=y0, x0=x0, box=box,
        centre=centre, semi_axes=(semi_y, semi_x), bone=bone, depth_fine=depth_fine,
        depth_coarse=depth_coarse, threads=threads,
    )


@dataclasses.dataclass(eq=False)
class _Pores:
    """Canal pores along z (box mm): centre (y, x) and z range; a visit gives the radii
    (0: absent)."""

    y: np.ndarray
    x: np.ndarray
    z_lo: np.ndarray
    z_hi: np.ndarray
    new: np.ndarray  # bool: created on AI

    def mask(self, site: _Site, radii) -> np.ndarray:
        fine = site.fine_shape
        hf = site.h_fine
        out = np.zeros(fine, dtype=bool)
        for y, x, lo, hi, r in zip(self.y, self.x, self.z_lo, self.z_hi, radii):
            if r <= 0:
                continue
            _stamp_canal(out, y, x, lo, hi, r, hf)
        return out


def _stamp_canal(out, y, x, z_lo, z_hi, radius, hf):
    """Set the fine voxels of a z-canal (centre (y, x) mm, z in [z_lo, z_hi), radius)."""
    fz, fy, fx = out.shape
    i0 = max(0, math.ceil(z_lo / hf - 0.5))
    i1 = min(fz, math.ceil(z_hi / hf - 0.5))
    j0 = max(0, math.floor((y - radius) / hf - 0.5))
    j1 = min(fy, math.ceil((y + radius) / hf - 0.5) + 1)
    l0 = max(0, math.floor((x - radius) / hf - 0.5))
    l1 = min(fx, math.ceil((x + radius) / hf - 0.5) + 1)
    if i0 >= i1 or j0 >= j1 or l0 >= l1:
        return 0
    yy = (np.arange(j0, j1) + 0.5) * hf - y
    xx = (np.arange(l0, l1) + 0.5) * hf - x
    disc = yy[:, None] ** 2 + xx[None, :] ** 2 <= radius * radius
    block = out[i0:i1, j0:j1, l0:l1]
    added = int(np.count_nonzero(disc[None] & ~block))
    block |= disc[None]
    return added


def _place_canals(rng, site, pores_mask, allowed_2d, target_voxels, radius, length,
                  max_attempts):
    """Add z-canals, centres drawn among the ``allowed_2d`` fine pixels, until
    ``target_voxels`` new pore voxels exist; returns the canal rows (y, x, z_lo, z_hi)."""
    hf = site.h_fine
    fz = site.fine_shape[0]
    candidates = np.argwhere(allowed_2d)
    rows = []
    if candidates.size == 0 or target_voxels <= 0:
        return rows
    added = 0
    for _ in range(max_attempts):
        if added >= target_voxels:
            break
        pick = int(rng.integers(candidates.shape[0]))
        jitter = rng.uniform(-0.5, 0.5, size=2)
        z_start = rng.uniform(-length, fz * hf)
        j, l = candidates[pick]
        y = (j + 0.5 + jitter[0]) * hf
        x = (l + 0.5 + jitter[1]) * hf
        added += _stamp_canal(pores_mask, y, x, z_start, z_start + length, radius, hf)
        rows.append((y, x, z_start, z_start + length))
    return rows


# ---------------------------------------------------------------------------------------
# local edits of the fine structure, each with an exact topological effect
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _Edit:
    """A local change of the fine trabecular bone: fine voxels cleared (or filled)."""

    kind: str  # "sever", "perforation", "thinning", "cavity" or "formation"
    element: int
    voxels: np.ndarray  # flat indices into the fine box
    detail: dict  # kind-specific record for the truth (box mm)


@dataclasses.dataclass(eq=False)
class _State:
    edits: tuple  # indices into the edit table, applied in order
    cortical_thickness: float
    pore_radius: np.ndarray


def _compartments_2d(depth, thickness):
    inside = depth >= 0
    trabecular = depth > thickness
    return inside, inside & ~trabecular, trabecular


@dataclasses.dataclass(eq=False)
class _World:
    labels: np.ndarray  # fine element ids (trabecular bone)
    bone: np.ndarray  # fine bool, all bone
    pores: np.ndarray  # fine bool


def _build_world(site, state, pores, edits):
    """The fine structure of a visit: the baseline network inside the visit's trabecular
    compartment, with the visit's edits, inside its cortex."""
    _, cortical_2d, trabecular_2d = _compartments_2d(site.depth_fine, state.cortical_thickness)
    labels = np.where(trabecular_2d[None], site.bone.labels, 0).astype(np.int32)
    flat = labels.reshape(-1)
    for index in state.edits:
        edit = edits[index]
        flat[edit.voxels] = edit.element if edit.kind == "formation" else 0
    pore_mask = pores.mask(site, state.pore_radius)
    bone = labels > 0
    bone |= cortical_2d[None] & ~pore_mask
    return _World(labels=labels, bone=bone, pores=pore_mask)


def _pool(fine, k):
    """Sum over k x k x k blocks (int16 counts)."""
    z, y, x = (n // k for n in fine.shape)
    return fine.reshape(z, k, y, k, x, k).sum(axis=(1, 3, 5), dtype=np.int16)


def _window_euler(mask, roi=None):
    """Euler characteristic of a small crop by summing 2x2x2 window contributions in numpy.

    Without ``roi``: the 26-connected bone floating in space (as
    :func:`microarch.measure.euler_characteristic` and ``skimage.measure.euler_number``).
    With ``roi``: the edge-corrected value (multiple of 1/8) that
    :func:`microarch.measure.connectivity_density` uses, from the same lookup table. On
    crops of a few thousand voxels this is much cheaper than the threaded kernel.
    """
    from microarch.measure._connectivity import _lookup_table

    lut = _lookup_table()
    if roi is None:
        states = np.ones(tuple(n + 2 for n in mask.shape), dtype=np.int64)
        states[1:-1, 1:-1, 1:-1] += mask
    else:
        states = np.zeros(tuple(n + 2 for n in mask.shape), dtype=np.int64)
        states[1:-1, 1:-1, 1:-1] = np.where(roi, np.where(mask, 2, 1), 0)
    pz, py, px = states.shape
    codes = np.zeros((pz - 1, py - 1, px - 1), dtype=np.int64)
    for i in range(8):
        dx, dy, dz = i & 1, (i >> 1) & 1, (i >> 2) & 1
        codes += 3 ** i * states[dz:pz - 1 + dz, dy:py - 1 + dy, dx:px - 1 + dx]
    total = int(lut[codes].sum())
    return total // 8 if roi is None else total / 8


def _euler(mask):
    return _window_euler(mask)


def _corrected_euler(mask, roi):
    """Edge-corrected Euler number of ``mask`` in ``roi`` (a multiple of 1/8)."""
    return _window_euler(mask, roi)


class _Editor:
    """Applies local edits to a fine structure, accepting only those whose effect on the
    ideal scan-resolution mask (voxels at least half bone) is the expected change of

    - chi of the whole mask,
    - chi of the mask inside the analysed region,
    - the edge-corrected chi in that region (what Conn.D uses),

    each computed on a crop around the edit (the Euler characteristic is a sum over 2x2x2
    cells, so cells away from the edit do not change). An *exclusive* edit must also touch
    no scan voxel within one voxel of an earlier exclusive edit: no cell then holds
    voxels of two edits, so their effects add exactly, for any subset of them.
    """

    def __init__(self, site, labels, bone, roi_box):
        from scipy import ndimage

        self._dilate = ndimage.binary_dilation
        self.site = site
        self.labels = labels  # modified in place
        self.bone = bone  # modified in place
        self.roi = roi_box  # coarse box bool
        self.reserved = np.zeros(site.box, dtype=bool)

    def try_edit(self, slices, change, *, fill=0, expected, exclusive):
        """Clear ``change`` (fine bool on ``slices``) from the bone, or fill it with element
        ``fill``, if allowed; return the flat fine indices changed, or None."""
        add = fill != 0
        k = self.site.k
        coarse = [(max(0, s.start // k - 2), min(n, -(-s.stop // k) + 2))
                  for s, n in zip(slices, self.site.box)]
        coarse_slices = tuple(slice(a, b) for a, b in coarse)
        crop = tuple(slice(a * k, b * k) for a, b in coarse)
        inner = tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(slices, crop))
        touched = None
        if exclusive:
            local = np.zeros(tuple(b - a for a, b in coarse), dtype=bool)
            index = np.nonzero(change)
            local[tuple((i + s.start) // k for i, s in zip(index, inner))] = True
            touched = self._dilate(local, structure=np.ones((3, 3, 3), dtype=bool))
            if (local & self.reserved[coarse_slices]).any():
                return None
        before = self.bone[crop]
        after = before.copy()
        if add:
            after[inner] |= change
        else:
            after[inner] &= ~change
        half = k ** 3 / 2
        coarse_before = _pool(before, k) >= half
        coarse_after = _pool(after, k) >= half
        roi = self.roi[coarse_slices]
        whole = _euler(coarse_after) - _euler(coarse_before)
        if whole != expected[0]:
            return None
        inside = _euler(coarse_after & roi) - _euler(coarse_before & roi)
        if inside != expected[1]:
            return None
        corrected = 0.0
        if roi.any():
            corrected = _corrected_euler(coarse_after, roi) - _corrected_euler(coarse_before, roi)
        if corrected != expected[2]:
            return None
        self.bone[crop] = after
        if touched is not None:
            self.reserved[coarse_slices] |= touched
        fine_index = tuple(i + s.start for i, s in zip(np.nonzero(change), slices))
        flat = np.ravel_multi_index(fine_index, self.bone.shape).astype(np.int64)
        self.labels.reshape(-1)[flat] = fill
        return flat

    def undo_last(self, edit):
        """Take back the latest clearing edit (its region stays reserved)."""
        self.bone.reshape(-1)[edit.voxels] = True
        self.labels.reshape(-1)[edit.voxels] = edit.element


def _fine_grid_slices(lo_mm, hi_mm, hf, shape):
    """Fine index slices of the voxels whose centres can lie in the box [lo, hi] (mm)."""
    lo = np.clip(np.floor(np.asarray(lo_mm) / hf - 0.5).astype(int), 0, shape)
    hi = np.clip(np.ceil(np.asarray(hi_mm) / hf - 0.5).astype(int) + 1, lo, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _centres(slices, hf):
    return [((np.arange(s.start, s.stop) + 0.5) * hf).reshape(
        [-1 if a == axis else 1 for a in range(3)]) for axis, s in enumerate(slices)]


def _rod_frame(site, row, t_lo, t_hi):
    """Slices around the part t in [t_lo, t_hi] of a rod, and (t, radial distance) of the
    fine voxel centres there."""
    g = site.bone._geometry.geom[row]
    a, b, radius = g[0:3], g[3:6], g[15]
    p0, p1 = a + t_lo * (b - a), a + t_hi * (b - a)
    reach = radius + 2 * site.h_fine
    slices = _fine_grid_slices(np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach,
                               site.h_fine, site.fine_shape)
    z, y, x = _centres(slices, site.h_fine)
    d = b - a
    length_sq = float(d @ d)
    qz, qy, qx = z - a[0], y - a[1], x - a[2]
    t = (qz * d[0] + qy * d[1] + qx * d[2]) / length_sq
    radial_sq = qz * qz + qy * qy + qx * qx - t * t * length_sq
    return slices, t, np.sqrt(np.maximum(radial_sq, 0.0)), radius, math.sqrt(length_sq)


def _even(editor, edits):
    """Keep an even number of events (so that half of them is a whole number): when there
    is an odd number, the latest is taken back, which restores the state before it."""
    if len(edits) % 2:
        editor.undo_last(edits[-1])
        edits = edits[:-1]
    return edits


def _weighted_order(rng, weights):
    """Order of a weighted sample without replacement (Efraimidis & Spirakis 2006)."""
    u = rng.random(weights.size)
    priority = np.log(np.maximum(u, 1e-300)) / np.maximum(weights, 1e-12)
    return np.argsort(-priority, kind="stable")


def _sever(site, editor, rows, n_target, loss):
    """Cut ``n_target`` rods (tried in the order of ``rows``); each cut must remove exactly
    one connection from the ideal mask (chi + 1, everywhere it is measured)."""
    ids = site.bone._geometry.ids
    edits = []
    for row in rows:
        if len(edits) >= n_target:
            break
        element = int(ids[row])
        if loss.sever_mode == "resorb":
            slices, t, _, _, length = _rod_frame(site, row, 0.0, 1.0)
            change = editor.labels[slices] == element
        else:
            _, _, _, _, length = _rod_frame(site, row, 0.0, 1.0)
            half = 0.5 * loss.gap_mm / max(length, 1e-12)
            if half >= 0.35:  # too short: the gap would eat its junctions
                continue
            slices, t, _, _, _ = _rod_frame(site, row, 0.5 - half, 0.5 + half)
            change = (np.abs(t - 0.5) <= half) & (editor.labels[slices] == element)
        if not change.any():
            continue
        voxels = editor.try_edit(slices, change, expected=(1, 1, 1.0),
                                 exclusive=True)
        if voxels is not None:
            edits.append(_Edit("sever", element, voxels, {"row": int(row)}))
    return edits


def _thin_rods(site, editor, rows, thinning):
    """Shave the middle of each rod (t in [0.2, 0.8]) to ``(1 - thinning)`` of its radius,
    where that changes no topology and touches no other edit."""
    ids = site.bone._geometry.ids
    edits = []
    if thinning <= 0:
        return edits
    for row in rows:
        element = int(ids[row])
        slices, t, radial, radius, _ = _rod_frame(site, row, 0.2, 0.8)
        change = ((t >= 0.2) & (t <= 0.8) & (radial > radius * (1.0 - thinning))
                  & (editor.labels[slices] == element))
        if not change.any():
            continue
        voxels = editor.try_edit(slices, change, expected=(0, 0, 0.0),
                                 exclusive=True)
        if voxels is not None:
            edits.append(_Edit("thinning", element, voxels, {"row": int(row)}))
    return edits


def _point_in_polygon(a, b, poly):
    inside = False
    n = poly.shape[0]
    for index in range(n):
        a0, b0 = poly[index - 1]
        a1, b1 = poly[index]
        if (b0 > b) != (b1 > b) and a < a0 + (b - b0) * (a1 - a0) / (b1 - b0):
            inside = not inside
    return inside


def _distance_to_polygon_rim(a, b, poly):
    best = math.inf
    n = poly.shape[0]
    for index in range(n):
        a0, b0 = poly[index - 1]
        a1, b1 = poly[index]
        ea, eb = a1 - a0, b1 - b0
        length_sq = ea * ea + eb * eb
        t = 0.0 if length_sq == 0 else min(1.0, max(0.0, ((a - a0) * ea + (b - b0) * eb)
                                                       / length_sq))
        best = min(best, math.hypot(a - a0 - t * ea, b - b0 - t * eb))
    return best


def _perforate(rng, site, editor, rows, n_target, radius, rim):
    """Punch a hole through ``n_target`` plates (tried in the order of ``rows``); each
    hole must add exactly one tunnel to the ideal mask (chi - 1)."""
    geometry = site.bone._geometry
    edits = []
    tries_per_plate = 6
    for row in rows:
        if len(edits) >= n_target:
            break
        # Every plate draws its tries, whatever happens (fixed stream order).
        draws = rng.random((tries_per_plate, 2))
        start, stop = geometry.offsets[row], geometry.offsets[row + 1]
        poly = geometry.poly[start:stop]
        if poly.shape[0] < 3:
            continue
        g = geometry.geom[row]
        centre, u, v, normal, half = g[0:3], g[3:6], g[6:9], g[9:12], g[15]
        low, high = poly.min(axis=0), poly.max(axis=0)
        element = int(geometry.ids[row])
        for a_draw, b_draw in draws:
            a = low[0] + a_draw * (high[0] - low[0])
            b = low[1] + b_draw * (high[1] - low[1])
            if not _point_in_polygon(a, b, poly):
                continue
            if _distance_to_polygon_rim(a, b, poly) < radius + rim:
                continue
            point = centre + a * u + b * v
            reach = radius + half + 2 * site.h_fine
            slices = _fine_grid_slices(point - reach, point + reach, site.h_fine,
                                       site.fine_shape)
            z, y, x = _centres(slices, site.h_fine)
            dz, dy, dx = z - point[0], y - point[1], x - point[2]
            along = dz * normal[0] + dy * normal[1] + dx * normal[2]
            radial_sq = dz * dz + dy * dy + dx * dx - along * along
            change = ((radial_sq < radius * radius) & (np.abs(along) <= half + site.h_fine)
                      & (editor.labels[slices] == element))
            if not change.any():
                continue
            voxels = editor.try_edit(slices, change, expected=(-1, -1, -1.0),
                                     exclusive=True)
            if voxels is not None:
                edits.append(_Edit("perforation", element, voxels, {
                    "row": int(row), "centre": tuple(float(c) for c in point),
                    "diameter": 2 * radius}))
                break
    return edits


def _surface_voxels(labels, allowed_fine):
    from scipy import ndimage

    bone = labels > 0
    interior = ndimage.binary_erosion(bone, border_value=1)
    return np.flatnonzero(bone & ~interior & allowed_fine)


def _surface_packets(rng, site, editor, allowed_2d, *, form, target_voxels, height_range,
                     length_range, exclusive):
    """Dig cavities (``form=False``) or lay formation packets (``form=True``): ellipsoids
    centred on trabecular surface voxels, flattened along the surface normal (the radial
    direction of a rod, the normal of a plate), until ``target_voxels`` fine voxels
    changed. None may change the topology of the ideal mask.

    A cavity on a rod thinner than its depth plus a fine voxel is not dug: such a pit
    reaches the midline, and that is a severing event.
    """
    geometry = site.bone._geometry
    labels = editor.labels
    row_of = np.full(int(geometry.ids.max()) + 1, -1, dtype=np.int64)
    row_of[geometry.ids] = np.arange(geometry.ids.size)
    surface = _surface_voxels(labels, np.broadcast_to(allowed_2d[None], labels.shape))
    edits = []
    changed = 0
    if surface.size == 0 or target_voxels <= 0:
        return edits
    hf = site.h_fine
    height_lo, height_hi = height_range
    length_lo, length_hi = length_range
    # About half of an ellipsoid of mean size lies on the changed side.
    mean_voxels = (2 / 3) * math.pi * 0.5 * (height_lo + height_hi) * (
        0.25 * (length_lo + length_hi)) ** 2 * 0.75 / hf ** 3
    max_attempts = int(30 * target_voxels / max(mean_voxels, 1e-12)) + 200
    shape = labels.shape
    for _ in range(max_attempts):
        if changed >= target_voxels:
            break
        # Every attempt draws the same numbers, accepted or not (fixed stream order).
        pick = int(rng.integers(surface.size))
        height = rng.uniform(height_lo, height_hi)
        length = rng.uniform(length_lo, length_hi)
        width = length * rng.uniform(0.5, 1.0)
        angle = rng.uniform(0.0, 2 * math.pi)
        flat = surface[pick]
        element = int(labels.flat[flat])
        if element == 0:
            continue
        row = row_of[element]
        point = (np.asarray(np.unravel_index(flat, shape), dtype=float) + 0.5) * hf
        g = geometry.geom[row]
        if geometry.kind[row] == 0:  # rod: radial normal, long axis along the rod
            if not form and g[15] < height + hf:
                continue
            axis = g[3:6] - g[0:3]
            axis = axis / np.linalg.norm(axis)
            radial = point - g[0:3]
            radial -= np.dot(radial, axis) * axis
            norm = np.linalg.norm(radial)
            if norm < 1e-9:
                continue
            normal = radial / norm
            t1 = axis
        else:  # plate: its normal, long axis at a random angle in the plane
            normal = g[9:12] * (1.0 if np.dot(point - g[0:3], g[9:12]) >= 0 else -1.0)
            t1 = math.cos(angle) * g[3:6] + math.sin(angle) * g[6:9]
        t2 = np.cross(normal, t1)
        semi = (height, length / 2, width / 2)
        reach = max(semi) + hf
        slices = _fine_grid_slices(point - reach, point + reach, hf, site.fine_shape)
        z, y, x = _centres(slices, hf)
        dz, dy, dx = z - point[0], y - point[1], x - point[2]
        total = 0.0
        for axis_vector, semi_axis in zip((normal, t1, t2), semi):
            along = dz * axis_vector[0] + dy * axis_vector[1] + dx * axis_vector[2]
            total = total + (along / semi_axis) ** 2
        footprint = total <= 1.0
        block = labels[slices]
        if form:
            change = footprint & (block == 0) & allowed_2d[slices[1:]][None]
            change &= ~editor.bone[slices]  # never into the cortex or another structure
        else:
            change = footprint & (block > 0)
        if not change.any():
            continue
        voxels = editor.try_edit(slices, change, fill=element if form else 0,
                                 expected=(0, 0, 0.0), exclusive=exclusive)
        if voxels is None:
            continue
        edits.append(_Edit("formation" if form else "cavity", element, voxels,
                           {"centre": tuple(float(c) for c in point)}))
        changed += voxels.size
    return edits


# ---------------------------------------------------------------------------------------
# poses and sampling
# ---------------------------------------------------------------------------------------


def _draw_poses(rng, site, max_shift, max_rotation_deg):
    transforms = [RigidTransform.from_parameters(centre=tuple(site.centre))]
    for _ in range(2):
        angles = rng.uniform(-max_rotation_deg, max_rotation_deg, size=3)
        shift = rng.uniform(-1.0, 1.0, size=3) * np.asarray(max_shift)
        transforms.append(RigidTransform.from_parameters(
            rotation_deg=tuple(float(a) for a in angles),
            translation=tuple(float(s) for s in shift),
            centre=tuple(float(c) for c in site.centre),
        ))
    return transforms


def _to_baseline(transform, shape, h, delta=(0.0, 0.0, 0.0)):
    """Baseline-grid coordinates (3 broadcastable arrays, mm) of the points of a visit
    grid shifted by ``delta`` (mm)."""
    inverse = transform.inverse()
    a, b = inverse.matrix, inverse.offset
    z = (np.arange(shape[0]) * h + delta[0])[:, None, None]
    y = (np.arange(shape[1]) * h + delta[1])[None, :, None]
    x = (np.arange(shape[2]) * h + delta[2])[None, None, :]
    return tuple(a[r, 0] * z + a[r, 1] * y + a[r, 2] * x + b[r] for r in range(3))


def _sample_fraction(site, bone_fine, transform):
    """Bone fraction of each voxel of a visit grid: k**3 sub-samples per voxel mapped into
    the fine box (exactly the fine voxels for an unmoved grid)."""
    k, h = site.k, site.h
    shape = site.shape
    fine = bone_fine.shape
    counts = np.zeros(shape, dtype=np.int16)
    offsets = ((np.arange(k) + 0.5) / k - 0.5) * h
    origin = (-site.margin_z, site.y0, site.x0)
    flat_bone = bone_fine.reshape(-1)
    for dz in offsets:
        for dy in offsets:
            for dx in offsets:
                p = _to_baseline(transform, shape, h, (dz, dy, dx))
                valid = np.ones(shape, dtype=bool)
                flat = np.zeros(shape, dtype=np.int64)
                for axis in range(3):
                    index = np.floor((p[axis] / h + 0.5 - origin[axis]) * k).astype(np.int64)
                    valid &= (index >= 0) & (index < fine[axis])
                    flat = flat * fine[axis] + np.clip(index, 0, fine[axis] - 1)
                counts += (flat_bone[flat] & valid).astype(np.int16)
    return counts.astype(np.float32) / np.float32(k ** 3)


def _site_depth(site, y, x, thresholds):
    """Depth below the periosteum at baseline-grid points (y, x in mm), exact wherever it
    decides a compartment: bilinear interpolation of the fine depth map, recomputed
    exactly within 0.01 mm of a threshold (the interpolation error is far below that)."""
    from scipy import ndimage

    hf = site.h_fine
    rows = (y - (site.y0 - 0.5) * site.h) / hf - 0.5
    cols = (x - (site.x0 - 0.5) * site.h) / hf - 0.5
    depth = ndimage.map_coordinates(site.depth_fine, [rows.ravel(), cols.ravel()], order=1,
                                    mode="nearest").reshape(y.shape)
    uncertain = np.zeros(y.shape, dtype=bool)
    for threshold in thresholds:
        uncertain |= np.abs(depth - threshold) < 0.01
    if uncertain.any():
        depth[uncertain] = _ellipse_depth(
            y[uncertain] - site.centre[1], x[uncertain] - site.centre[2], *site.semi_axes,
            band=max(thresholds) + 4 * site.h)
    return depth


def _visit_compartments(site, transform, thickness):
    shape = site.shape
    p = _to_baseline(transform, shape, site.h)
    y = np.ascontiguousarray(np.broadcast_to(p[1], shape))
    x = np.ascontiguousarray(np.broadcast_to(p[2], shape))
    depth = _site_depth(site, y, x, (0.0, thickness))
    return _compartments_2d(depth, thickness)


def _field_of_view(site, transform):
    """Baseline voxels whose centre maps inside the visit grid (between its first and
    last voxel centres, where interpolation is defined)."""
    shape, h = site.shape, site.h
    z = (np.arange(shape[0]) * h)[:, None, None]
    y = (np.arange(shape[1]) * h)[None, :, None]
    x = (np.arange(shape[2]) * h)[None, None, :]
    a, b = transform.matrix, transform.offset
    inside = np.ones(shape, dtype=bool)
    tol = 1e-9
    for r in range(3):
        q = a[r, 0] * z + a[r, 1] * y + a[r, 2] * x + b[r]
        inside &= (q >= -tol) & (q <= (shape[r] - 1) * h + tol)
    return inside


# ---------------------------------------------------------------------------------------
# truth
# ---------------------------------------------------------------------------------------


def _memory_index(baseline, on_ai, post):
    """``1 - (post - on_ai) / (baseline - on_ai)``; NaN when nothing changed on AI."""
    values = (baseline, on_ai, post)
    if any(v is None or not math.isfinite(v) for v in values):
        return math.nan
    loss = baseline - on_ai
    if loss == 0 or abs(loss) <= 1e-12 * max(abs(baseline), abs(on_ai), 1.0):
        return math.nan
    return 1.0 - (post - on_ai) / loss


def _junction_degree(bone):
    """Number of elements meeting at each vertex id (0 for vertices no element touches)."""
    junctions = bone.junctions
    size = int(junctions["vertex"].max()) + 1 if junctions["vertex"].size else 1
    degree = np.zeros(size, dtype=np.int64)
    degree[junctions["vertex"]] = junctions["degree"]
    return degree


def _connections(bone, element_ids):
    """Junction-graph edges (vertex a, vertex b, element) carried by ``element_ids``.

    A rod links its two ends, a plate each pair of consecutive corners; an edge counts
    when both of its vertices are junctions (touched by at least two elements at
    baseline), so a stub to a free end is not a connection.
    """
    table = bone.elements
    degree = _junction_degree(bone)
    wanted = {int(e) for e in element_ids}
    edges = set()
    for element, kind, vertices in zip(table["id"], table["kind"], table["vertices"]):
        element = int(element)
        if element not in wanted or len(vertices) < 2:
            continue
        if kind == "rod":
            pairs = [(vertices[0], vertices[1])]
        else:
            pairs = list(zip(vertices, vertices[1:] + vertices[:1]))
        for a, b in pairs:
            if a == b or a >= degree.size or b >= degree.size:
                continue
            if degree[a] >= 2 and degree[b] >= 2:
                edges.add((int(min(a, b)), int(max(a, b)), element))
    return sorted(edges)


def _measures(site, world, state, common, reference, cortical_fine, tissue, marrow):
    """True measures of one visit on the baseline grid."""
    from microarch import measure

    h = site.h
    spacing = (h, h, h)
    bone = reference["bone"]
    density = np.float32(marrow) + np.float32(tissue - marrow) * reference["fraction"]
    trab, cort, peri = common["trabecular"], common["cortical"], common["periosteal"]
    n_trab = int(np.count_nonzero(trab))
    tv = n_trab * h ** 3
    euler = _euler(bone & trab)
    out = {
        "BV/TV": float(np.count_nonzero(bone & trab)) / n_trab if n_trab else math.nan,
        "Conn.D": float(measure.connectivity_density(bone, spacing=spacing, roi=trab)),
        "euler": euler,
        "Conn.D_uncorrected": (1 - euler) / tv if tv else math.nan,
        "TV": tv,
    }
    dens = measure.density(density, spacing=spacing, periosteal=peri, trabecular=trab,
                           cortical=cort)
    out.update({"Tt.BMD": dens["Tt.BMD"], "Tb.BMD": dens["Tb.BMD"], "Ct.BMD": dens["Ct.BMD"]})
    n_cort = int(np.count_nonzero(cortical_fine))
    out["Ct.Po"] = (int(np.count_nonzero(world.pores & cortical_fine)) / n_cort
                    if n_cort else math.nan)
    out["Ct.Th"] = state.cortical_thickness
    fov = common["field_of_view"]
    own_peri, own_cort, own_trab = (reference[name] & fov
                                    for name in ("periosteal", "cortical", "trabecular"))
    own = measure.density(density, spacing=spacing, periosteal=own_peri, trabecular=own_trab,
                          cortical=own_cort)
    n_own = int(np.count_nonzero(own_trab))
    own_values = {
        "Tt.BMD": own["Tt.BMD"], "Tb.BMD": own["Tb.BMD"], "Ct.BMD": own["Ct.BMD"],
        "BV/TV": float(np.count_nonzero(bone & own_trab)) / n_own if n_own else math.nan,
        "Tt.V": own["Tt.V"], "Tb.V": own["Tb.V"], "Ct.V": own["Ct.V"],
    }
    return out, own_values


def _reference(site, world, thickness):
    """A visit's structure on the baseline grid, from the fine structure."""
    k = site.k
    shape = site.shape
    window = site.baseline_window()
    ys, xs = slice(site.y0, site.y0 + site.box[1]), slice(site.x0, site.x0 + site.box[2])
    counts = _pool(world.bone, k)[window]
    fraction = np.zeros(shape, dtype=np.float32)
    fraction[:, ys, xs] = counts.astype(np.float32) / np.float32(k ** 3)
    bone = fraction >= 0.5
    z, y, x = site.box
    block_max = world.labels.reshape(z, k, y, k, x, k).max(axis=(1, 3, 5))[window]
    labels = np.zeros(shape, dtype=np.int32)
    labels[:, ys, xs] = np.where(bone[:, ys, xs], block_max, 0)
    periosteal, cortical, trabecular = (
        np.broadcast_to(m[None], shape).copy()
        for m in _compartments_2d(site.depth_coarse, thickness)
    )
    return {"bone": bone, "fraction": fraction, "labels": labels, "periosteal": periosteal,
            "cortical": cortical, "trabecular": trabecular}


@dataclasses.dataclass(frozen=True, eq=False)
class _SampledFraction:
    """A bone-fraction image in the form :func:`render_scan` samples from."""

    mask: np.ndarray
    spacing: tuple
    fraction: np.ndarray

    def volume_fraction(self, upsample=1, *, threads=None):
        return self.fraction


def _render(fraction, h, psf, noise, tissue, marrow, seed, calibration, k):
    from microarch.phantoms._imaging import render_scan

    source = _SampledFraction(mask=fraction >= 0.5, spacing=(h, h, h), fraction=fraction)
    return render_scan(source, spacing_out=h, psf_sigma_voxels=psf, noise_sd=noise,
                       tissue_density=tissue, marrow_density=marrow, upsample=min(k, 4),
                       seed=seed, calibration=calibration)


def _scan_density(scan, h, masks):
    from microarch import measure

    values = measure.density(scan.density, spacing=h, periosteal=masks["periosteal"],
                             trabecular=masks["trabecular"], cortical=masks["cortical"])
    return {key: values[key] for key in ("Tt.BMD", "Tb.BMD", "Ct.BMD")}


def _percent(before, after):
    if before is None or after is None or not math.isfinite(before) or before == 0:
        return math.nan
    return 100.0 * (after - before) / before


def _subset(rng, n, fraction):
    """A random subset (sorted tuple) of ``round(fraction * n)`` of ``range(n)``; always
    draws ``n`` numbers."""
    draws = rng.random(n)
    count = round(fraction * n)
    return tuple(sorted(int(i) for i in np.argsort(draws, kind="stable")[:count]))


def _pore_depths(site, pores):
    hf = site.h_fine
    if pores.y.size == 0:
        return np.zeros(0)
    j = np.clip(np.floor(pores.y / hf).astype(int), 0, site.depth_fine.shape[0] - 1)
    l = np.clip(np.floor(pores.x / hf).astype(int), 0, site.depth_fine.shape[1] - 1)
    return site.depth_fine[j, l]


# ---------------------------------------------------------------------------------------
# the simulation
# ---------------------------------------------------------------------------------------


def simulate_visits(
    shape=(40, 136, 120),
    *,
    spacing=0.082,
    seed: int = 0,
    recovery: str = "withdrawal",
    reversal_fraction: float = 1.0,
    loss: AILoss | None = None,
    withdrawal: Withdrawal | None = None,
    max_shift_mm=(0.3, 1.0, 1.0),
    max_rotation_deg: float = 2.0,
    cortical_thickness: float = 0.75,
    porosity: float = 0.02,
    pore_diameter: float = 0.12,
    pore_length: float = 1.5,
    outer_semi_axes=None,
    oversample: int = 2,
    psf_sigma_voxels: float = 0.8,
    noise_sd: float = 80.0,
    tissue_density: float = 1100.0,
    marrow_density: float = 25.0,
    calibration: dict | None = None,
    trabecular_options: dict | None = None,
    threads: int | None = None,
) -> VisitSeries:
    """Simulate baseline, on-AI and post-withdrawal scans of one distal-radius-like site.

    Parameters
    ----------
    shape : tuple of 3 int, optional
        Scan grid (z, y, x) of every visit.
    spacing : float, optional
        Isotropic voxel size of the scans (mm); 0.082 (XtremeCT I) or 0.0607 (XtremeCT II).
    seed : int, optional
        Seed of everything random (structure, pores, poses, events, noise).
    recovery : {"withdrawal", "reversal"}, optional
        ``"withdrawal"``: the physiological operator (:class:`Withdrawal`), which never
        reconnects (Conn.D memory index exactly 1). ``"reversal"``: a control whose
        post-withdrawal visit undoes ``reversal_fraction`` of every AI change (Conn.D
        memory index about ``1 - reversal_fraction``; exactly 0 for a fraction of 1,
        which restores the baseline structure).
    reversal_fraction : float, optional
        For ``recovery="reversal"``: the share of each kind of AI change undone.
    loss : AILoss, optional
        Strengths of the AI operators (default :class:`AILoss`).
    withdrawal : Withdrawal, optional
        Strengths of the physiological withdrawal (default :class:`Withdrawal`).
    max_shift_mm : float or tuple of 3 float, optional
        Largest repositioning shift per axis (z, y, x), mm; each follow-up draws uniformly
        within it. The bone is sized so that it stays inside every view; shifts of a few
        mm need a correspondingly larger ``shape``.
    max_rotation_deg : float, optional
        Largest rotation about each axis (degrees, at most 10).
    cortical_thickness, porosity, pore_diameter, pore_length : float, optional
        Baseline cortex: Ct.Th (mm), target Ct.Po, canal diameter and length (mm).
    outer_semi_axes : tuple of 2 float, optional
        Periosteal semi-axes (mm, y and x); default: the largest ellipse that every
        repositioned view still holds with 3 voxels of soft tissue around it.
    oversample : int, optional
        The structure is built on a grid ``oversample`` times finer (2-4).
    psf_sigma_voxels, noise_sd, tissue_density, marrow_density, calibration : optional
        Imaging model, see :func:`~microarch.phantoms.render_scan`.
    trabecular_options : dict, optional
        Passed to :func:`~microarch.phantoms.trabecular_bone`.
    threads : int, optional
        numba threads for rasterisation; results do not depend on it.

    Returns
    -------
    VisitSeries
        ``visits`` (scans, transforms, true masks on each grid and on the baseline grid),
        ``common`` (the common region on the baseline grid) and ``truth``, a JSON-ready
        dict with

        - ``recovery``, ``reversal_fraction``, ``expected_memory_index``, ``frame`` (the
          coordinate convention, :data:`FRAME`), ``parameters``;
        - ``visits``: per visit ``visit``, ``role``, ``transform`` (baseline grid -> this
          grid, :meth:`RigidTransform.as_dict`), ``measures`` (on the ideal masks in the
          common region: ``BV/TV``; ``Conn.D``, edge-corrected,
          :func:`microarch.measure.connectivity_density` with the common trabecular
          region as ROI; ``euler``, χ of bone ∩ region, 26-connected, floating;
          ``Conn.D_uncorrected`` = (1 - χ)/TV; ``TV``; ``Tt.BMD``, ``Tb.BMD``,
          ``Ct.BMD``, mean ideal density (tissue/marrow partial-volume mix, no blur, no
          noise); ``Ct.Po``; ``Ct.Th``; ``n_connections``; ``n_intact_rods``;
          ``n_severed_rods``; ``n_perforated_plates``; ``n_open_cavities``;
          ``n_formation_packets``), ``own`` (densities and BV/TV of the visit's own
          compartments within the common field of view) and ``scan``
          (:func:`microarch.measure.density` of the rendered scan with the true
          compartments of its own grid);
        - ``events``: severed rods (id, baseline-grid end points, diameter), perforated
          plates (id, hole centre, diameter, normal), those undone after withdrawal, and
          the numbers of thinned rods, cavities, formation packets and pores;
        - ``connections``: junction-graph edges ``[vertex_a, vertex_b, element]`` of the
          analysed elements at baseline, those lost on AI and those back after
          withdrawal (at a visit: baseline - lost + back);
        - ``memory_index``: ``1 - (post - on_ai) / (baseline - on_ai)`` of each common-region
          measure (NaN where nothing changed on AI);
        - ``change_percent``: on-AI and post-withdrawal change from baseline.

    Notes
    -----
    *Ideal mask*: the scan voxels that are at least half bone. *Common region*: the
    baseline voxels every visit's view covers, intersected with each true compartment
    of every visit and eroded by one voxel in-plane. *Analysed elements*: those with a
    voxel in the common trabecular region at baseline; severing, perforation and rod
    thinning act on them.

    Every AI change of the trabecular bone is a local edit of the baseline network
    whose effect on the ideal mask is checked before it is kept: a severing cuts one
    connection (χ + 1 in the whole mask, in the region, and in the edge-corrected χ), a
    perforation opens one tunnel (χ - 1), thinning and cavities change no topology, and
    no two of these edits touch the same 2x2x2 cell of scan voxels, so their effects add
    up exactly for any subset. Hence the change of Conn.D x TV on AI is exactly the
    number of severings minus the number of perforations, the physiological withdrawal
    keeps Conn.D exactly, and a reversal that restores a share of the events restores
    that share of the change.

    References
    ----------
    van der Linden JC, Verhaar JAN, Weinans H (2001) A three-dimensional simulation of
    age-related remodeling in trabecular bone. J Bone Miner Res 16:688-696.
    doi:10.1359/jbmr.2001.16.4.688
    Guo XE, Kim CH (2002) Mechanical consequence of trabecular bone loss and its
    treatment: a three-dimensional model simulation. Bone 30:404-411.
    doi:10.1016/S8756-3282(01)00673-1

    Examples
    --------
    A small site (the defaults make the 40 x 136 x 120 demo scans):

    >>> from microarch.phantoms import AILoss, simulate_visits
    >>> series = simulate_visits((12, 64, 56), seed=1, loss=AILoss(sever_fraction=0.3),
    ...                          max_shift_mm=0.2, max_rotation_deg=1.0,
    ...                          cortical_thickness=0.5)
    >>> [v.role for v in series.visits]
    ['baseline', 'on_ai', 'post_withdrawal']
    >>> len(series.truth["events"]["severed_rods"])
    6
    >>> series.truth["memory_index"]["Conn.D"]
    1.0
    >>> series["V2"].scan.native.dtype.name, series["V2"].transform.rotation_angle_deg > 0
    ('int16', True)
    """
    from scipy import ndimage

    from microarch.phantoms._imaging import _check_calibration

    shape = _as_shape(shape)
    h = as_spacing(spacing)
    if len(set(h)) != 1:
        raise ValueError(f"simulate_visits needs isotropic voxels; got spacing {h}")
    h = h[0]
    check_choice(recovery, RECOVERIES, name="recovery")
    _check_fraction(reversal_fraction, "reversal_fraction")
    non_negative_int(seed, name="seed")
    loss = AILoss() if loss is None else loss
    withdrawal = Withdrawal() if withdrawal is None else withdrawal
    if not isinstance(loss, AILoss):
        raise TypeError(f"loss must be an AILoss, not {type(loss).__name__}")
    if not isinstance(withdrawal, Withdrawal):
        raise TypeError(f"withdrawal must be a Withdrawal, not {type(withdrawal).__name__}")
    max_shift = _as_triple(max_shift_mm, "max_shift_mm")
    _check_nonnegative(max_rotation_deg, "max_rotation_deg")
    if max_rotation_deg > 10:
        raise ValueError(f"max_rotation_deg {max_rotation_deg} is not a repositioning error; "
                         "use at most 10 degrees")
    _check_positive(cortical_thickness, "cortical_thickness")
    _check_fraction(porosity, "porosity", upper=0.3)
    _check_positive(pore_diameter, "pore_diameter")
    _check_positive(pore_length, "pore_length")
    if outer_semi_axes is not None:
        if np.ndim(outer_semi_axes) != 1 or len(outer_semi_axes) != 2:
            raise ValueError(f"outer_semi_axes must be two lengths (mm); got {outer_semi_axes!r}")
        for value in outer_semi_axes:
            _check_positive(value, "outer_semi_axes")
    if not isinstance(oversample, Integral) or isinstance(oversample, bool) \
            or not 2 <= oversample <= 4:
        raise ValueError(f"oversample must be an integer from 2 to 4; got {oversample!r}")
    calibration = _check_calibration(calibration)
    trabecular_options = dict(trabecular_options or {})
    for reserved in ("shape", "spacing", "seed", "threads"):
        if reserved in trabecular_options:
            raise ValueError(f"trabecular_options must not set {reserved!r}")

    root = np.random.SeedSequence(int(seed))
    streams = dict(zip(_STREAMS, root.spawn(len(_STREAMS))))
    rng = {name: np.random.Generator(np.random.PCG64(s)) for name, s in streams.items()}

    site = _build_site(shape, h, int(oversample), max_shift, float(max_rotation_deg),
                       float(cortical_thickness), outer_semi_axes, trabecular_options,
                       _int_seed(streams["structure"]), threads)
    geometry = site.bone._geometry
    n_rows = geometry.ids.size
    row_of = np.full(int(geometry.ids.max()) + 1, -1, dtype=np.int64)
    row_of[geometry.ids] = np.arange(n_rows)
    is_rod = geometry.kind == 0
    depth_f = site.depth_fine
    thickness = {
        "baseline": float(cortical_thickness),
        "on_ai": float(cortical_thickness) * (1.0 - loss.cortical_thinning),
    }
    if recovery == "withdrawal":
        thickness["post_withdrawal"] = thickness["on_ai"]
    else:
        thickness["post_withdrawal"] = thickness["baseline"] - (1.0 - reversal_fraction) * (
            thickness["baseline"] - thickness["on_ai"])

    # --- cortex: baseline pores, enclosed even after thinning and enlargement ----------
    pore_radius = pore_diameter / 2
    grown = pore_radius * (1.0 + loss.pore_enlargement)
    # One scan voxel of bone between a canal and either surface keeps it enclosed.
    clearance = grown + h
    _, cortical_2d, _ = _compartments_2d(depth_f, thickness["baseline"])
    allowed = cortical_2d & (depth_f >= clearance) & (depth_f <= thickness["on_ai"] - clearance)
    if porosity > 0 and not allowed.any():
        raise ValueError(f"pores of diameter {pore_diameter} mm do not fit in a cortex "
                         f"{cortical_thickness} mm thick at {h} mm voxels; use porosity=0, "
                         "smaller pores or a thicker cortex")
    n_cortical = int(np.count_nonzero(cortical_2d)) * site.fine_shape[0]
    base_rows = _place_canals(rng["pores"], site, np.zeros(site.fine_shape, dtype=bool),
                              allowed, porosity * n_cortical, pore_radius, pore_length,
                              max_attempts=20000)
    n_base_pores = len(base_rows)
    _, ai_cortical_2d, _ = _compartments_2d(depth_f, thickness["on_ai"])
    old = _Pores(*(np.array([r[i] for r in base_rows], dtype=float) for i in range(4)),
                 new=np.zeros(n_base_pores, bool))
    inner = _pore_depths(site, old) > thickness["on_ai"] / 2
    ai_old_radius = np.where(inner, grown, pore_radius)
    new_allowed = ai_cortical_2d & (depth_f >= thickness["on_ai"] / 2) & (
        depth_f <= thickness["on_ai"] - clearance)
    n_ai_cortical = int(np.count_nonzero(ai_cortical_2d)) * site.fine_shape[0]
    new_rows = _place_canals(rng["new_pores"], site, old.mask(site, ai_old_radius), new_allowed,
                             loss.porosity_increase * n_ai_cortical, pore_radius, pore_length,
                             max_attempts=20000)
    n_new = len(new_rows)
    rows = base_rows + new_rows
    pores = _Pores(*(np.array([r[i] for r in rows], dtype=float).reshape(-1) for i in range(4)),
                   new=np.arange(len(rows)) >= n_base_pores)
    radii = {
        "baseline": np.where(pores.new, 0.0, pore_radius),
        "on_ai": np.concatenate([ai_old_radius, np.full(n_new, pore_radius)]),
    }

    # --- poses and the common region ----------------------------------------------------
    transforms = _draw_poses(rng["poses"], site, max_shift, float(max_rotation_deg))
    fov = np.ones(shape, dtype=bool)
    for transform in transforms[1:]:
        fov &= _field_of_view(site, transform)
    sections = [_compartments_2d(site.depth_coarse, t) for t in thickness.values()]
    # Eroded by one voxel in-plane, as the longitudinal common region is: a rim voxel
    # holds partial volume of the neighbouring compartment (cortex at the trabecular rim).
    common = {"field_of_view": fov}
    for name, position in (("periosteal", 0), ("cortical", 1), ("trabecular", 2)):
        section = np.logical_and.reduce([s[position] for s in sections])
        section = ndimage.binary_erosion(section, structure=np.ones((3, 3), dtype=bool))
        common[name] = fov & section[None]
    window = site.baseline_window()
    ys, xs = slice(site.y0, site.y0 + site.box[1]), slice(site.x0, site.x0 + site.box[2])

    def in_box(mask):
        box = np.zeros(site.box, dtype=bool)
        box[window] = mask[:, ys, xs]
        return box

    def fine_of(coarse_box):
        k = site.k
        return np.repeat(np.repeat(np.repeat(coarse_box, k, 0), k, 1), k, 2)

    roi_box = in_box(common["trabecular"])
    baseline_state = _State(edits=(), cortical_thickness=thickness["baseline"],
                            pore_radius=radii["baseline"])
    base_world = _build_world(site, baseline_state, pores, [])
    analysed = np.unique(base_world.labels[fine_of(roi_box)])
    analysed = analysed[analysed > 0]
    analysed_rows = row_of[analysed]

    # --- AI: trabecular edits, each checked, mutually cell-disjoint ---------------------
    ai_world = _build_world(site, _State((), thickness["on_ai"], radii["on_ai"]), pores, [])
    editor = _Editor(site, ai_world.labels, ai_world.bone, roi_box)
    degree = _junction_degree(site.bone)
    connecting = []
    for row in analysed_rows[is_rod[analysed_rows]]:
        a, b = geometry.corners[geometry.corner_offsets[row]:geometry.corner_offsets[row + 1]]
        if max(a, b) < degree.size and degree[a] >= 2 and degree[b] >= 2:
            connecting.append(row)
    connecting = np.asarray(sorted(connecting), dtype=np.int64)
    radius = geometry.geom[:, 15]
    mean_radius = float(radius[is_rod].mean()) if is_rod.any() else 1.0
    order = _weighted_order(rng["severing"],
                            (radius[connecting] / mean_radius) ** (-loss.thin_rod_bias))
    # An even number keeps half of them an integer (reversal_fraction 0.5).
    n_sever = 2 * round(loss.sever_fraction * connecting.size / 2)
    edits = _even(editor, _sever(site, editor, connecting[order], n_sever, loss))
    plates = np.sort(analysed_rows[~is_rod[analysed_rows]])
    plates = plates[np.argsort(rng["perforation"].random(plates.size), kind="stable")]
    n_perforate = 2 * round(loss.perforation_fraction * plates.size / 2)
    edits += _even(editor, _perforate(rng["perforation"], site, editor, plates, n_perforate,
                                      loss.hole_diameter_mm / 2, 1.5 * h))
    severed_ids = {e.element for e in edits if e.kind == "sever"}
    intact_rods = [row for row in np.sort(analysed_rows[is_rod[analysed_rows]])
                   if int(geometry.ids[row]) not in severed_ids]
    edits += _thin_rods(site, editor, intact_rods, loss.rod_thinning)
    n_trabecular_bone = int(np.count_nonzero(ai_world.labels))
    # Cavities stay in the baseline trabecular compartment (none in the band the
    # endosteal resorption releases).
    cavity_region = depth_f > thickness["baseline"] + h
    edits += _surface_packets(
        rng["cavities"], site, editor, cavity_region, form=False,
        target_voxels=loss.cavity_volume_fraction * n_trabecular_bone,
        height_range=loss.cavity_depth_mm, length_range=loss.cavity_length_mm,
        exclusive=True,
    )
    ai_state = _State(edits=tuple(range(len(edits))), cortical_thickness=thickness["on_ai"],
                      pore_radius=radii["on_ai"])
    kinds = np.array([e.kind for e in edits])

    # --- post-withdrawal ----------------------------------------------------------------
    recovery_rng = rng["recovery"]
    undone = set()
    if recovery == "withdrawal":
        cavity_edits = np.flatnonzero(kinds == "cavity")
        refilled = _subset(recovery_rng, cavity_edits.size, withdrawal.cavity_refill)
        undone = {int(cavity_edits[i]) for i in refilled}
        kept = tuple(i for i in range(len(edits)) if i not in undone)
        post_state = _State(edits=kept, cortical_thickness=thickness["post_withdrawal"],
                            pore_radius=radii["on_ai"])
        post_world = _build_world(site, post_state, pores, edits)
        post_editor = _Editor(site, post_world.labels, post_world.bone, roi_box)
        formation = _surface_packets(
            recovery_rng, site, post_editor, depth_f > thickness["post_withdrawal"] + h,
            form=True,
            target_voxels=withdrawal.formation_volume_fraction * int(
                np.count_nonzero(post_world.labels)),
            height_range=withdrawal.packet_height_mm, length_range=withdrawal.packet_length_mm,
            exclusive=False,
        )
        first = len(edits)
        edits += formation
        post_state.edits = kept + tuple(range(first, len(edits)))
    else:
        f = float(reversal_fraction)
        for kind in ("sever", "perforation", "thinning", "cavity"):
            of_kind = np.flatnonzero(kinds == kind)
            undone |= {int(of_kind[i]) for i in _subset(recovery_rng, of_kind.size, f)}
        kept_new = set(_subset(recovery_rng, n_new, 1.0 - f))
        post_radius = pore_radius + (1.0 - f) * (radii["on_ai"] - pore_radius)
        for index in range(n_new):
            post_radius[n_base_pores + index] = pore_radius if index in kept_new else 0.0
        post_state = _State(
            edits=tuple(i for i in range(len(edits)) if i not in undone),
            cortical_thickness=thickness["post_withdrawal"], pore_radius=post_radius,
        )
        post_world = _build_world(site, post_state, pores, edits)
    radii["post_withdrawal"] = post_state.pore_radius
    worlds = {"baseline": base_world, "on_ai": ai_world, "post_withdrawal": post_world}
    states = {"baseline": baseline_state, "on_ai": ai_state, "post_withdrawal": post_state}

    # --- measure and render every visit -----------------------------------------------------
    baseline_edges = _connections(site.bone, analysed)
    cortical_common_fine = fine_of(in_box(common["cortical"]))
    noise_seeds = [_int_seed(s) for s in streams["noise"].spawn(3)]
    visits, visit_truth, severed_per_role = [], [], {}
    for index, role in enumerate(ROLES):
        state, world = states[role], worlds[role]
        applied = [edits[i] for i in state.edits]
        severed = {e.element for e in applied if e.kind == "sever"}
        severed_per_role[role] = severed
        reference = _reference(site, world, thickness[role])
        measures, own = _measures(site, world, state, common, reference,
                                  cortical_common_fine, tissue_density, marrow_density)
        measures["n_connections"] = sum(1 for edge in baseline_edges if edge[2] not in severed)
        measures["n_intact_rods"] = int(np.count_nonzero(is_rod[analysed_rows])) - len(severed)
        measures["n_severed_rods"] = len(severed)
        measures["n_perforated_plates"] = sum(1 for e in applied if e.kind == "perforation")
        measures["n_thinned_rods"] = sum(1 for e in applied if e.kind == "thinning")
        measures["n_open_cavities"] = sum(1 for e in applied if e.kind == "cavity")
        measures["n_formation_packets"] = sum(1 for e in applied if e.kind == "formation")

        transform = transforms[index]
        fraction = _sample_fraction(site, world.bone, transform)
        scan = _render(fraction, h, psf_sigma_voxels, noise_sd, tissue_density, marrow_density,
                       noise_seeds[index], calibration, site.k)
        peri_v, cort_v, trab_v = _visit_compartments(site, transform, thickness[role])
        masks = {"bone": fraction >= 0.5, "periosteal": peri_v, "cortical": cort_v,
                 "trabecular": trab_v}
        truth = {
            "visit": VISITS[index],
            "role": role,
            "transform": transform.as_dict(),
            "measures": measures,
            "own": own,
            "scan": _scan_density(scan, h, masks),
        }
        visit_truth.append(truth)
        visits.append(SimulatedVisit(
            visit=VISITS[index], role=role, scan=scan, transform=transform, masks=masks,
            reference=reference, truth=truth,
        ))

    parameters = {
        "shape": list(shape), "spacing": h, "seed": int(seed), "oversample": site.k,
        "max_shift_mm": list(max_shift), "max_rotation_deg": float(max_rotation_deg),
        "cortical_thickness": float(cortical_thickness), "porosity": float(porosity),
        "pore_diameter": float(pore_diameter), "pore_length": float(pore_length),
        "outer_semi_axes": list(site.semi_axes), "psf_sigma_voxels": float(psf_sigma_voxels),
        "noise_sd": float(noise_sd), "tissue_density": float(tissue_density),
        "marrow_density": float(marrow_density),
        "calibration": {key: calibration[key] for key in sorted(calibration)},
        "trabecular_options": trabecular_options,
        "loss": dataclasses.asdict(loss), "withdrawal": dataclasses.asdict(withdrawal),
    }
    truth = _series_truth(site, recovery, reversal_fraction, visit_truth, edits, undone,
                          baseline_edges, severed_per_role, n_base_pores, n_new, analysed,
                          parameters)
    return VisitSeries(visits=tuple(visits), spacing=(h, h, h), common=common, truth=truth)


def _series_truth(site, recovery, reversal_fraction, visit_truth, edits, undone,
                  baseline_edges, severed, n_base_pores, n_new, analysed, parameters):
    geometry = site.bone._geometry
    h = site.h

    def point(p):
        return [float(v) for v in site.box_to_baseline(p)]

    def rod_record(edit):
        row = edit.detail["row"]
        return {"id": edit.element, "a": point(geometry.geom[row, 0:3]),
                "b": point(geometry.geom[row, 3:6]),
                "diameter": float(2 * geometry.geom[row, 15])}

    def hole_record(edit):
        return {"plate": edit.element, "centre": point(edit.detail["centre"]),
                "diameter": edit.detail["diameter"],
                "normal": [float(v) for v in geometry.geom[edit.detail["row"], 9:12]]}

    ai_edits = [e for e in edits if e.kind != "formation"]
    lost = [edge for edge in baseline_edges if edge[2] in severed["on_ai"]]
    back = [edge for edge in lost if edge[2] not in severed["post_withdrawal"]]
    measures = [v["measures"] for v in visit_truth]
    owns = [v["own"] for v in visit_truth]
    skip = {"TV", "n_perforated_plates", "n_thinned_rods", "n_open_cavities",
            "n_formation_packets", "n_severed_rods"}
    memory = {key: _memory_index(*(m[key] for m in measures)) for key in measures[0]
              if key not in skip}
    change = {}
    for role, values, own in zip(ROLES[1:], measures[1:], owns[1:]):
        change[role] = {key: _percent(measures[0][key], values[key])
                        for key in ("BV/TV", "Conn.D", "Tb.BMD", "Tt.BMD", "Ct.BMD", "Ct.Th",
                                    "Ct.Po", "n_connections")}
        change[role].update({f"own {key}": _percent(owns[0][key], own[key])
                             for key in ("Tt.BMD", "Tb.BMD", "Ct.BMD", "BV/TV")})
    expected = 1.0 if recovery == "withdrawal" else 1.0 - float(reversal_fraction)
    undone_edits = [edits[i] for i in sorted(undone)]
    return {
        "recovery": recovery,
        "reversal_fraction": float(reversal_fraction) if recovery == "reversal" else None,
        "expected_memory_index": {"Conn.D": expected, "n_connections": expected},
        "frame": FRAME,
        "spacing": [h, h, h],
        "visits": visit_truth,
        "events": {
            "severed_rods": [rod_record(e) for e in ai_edits if e.kind == "sever"],
            "perforated_plates": [hole_record(e) for e in ai_edits if e.kind == "perforation"],
            "restored_rods": [e.element for e in undone_edits if e.kind == "sever"],
            "closed_perforations": [e.element for e in undone_edits if e.kind == "perforation"],
            "n_thinned_rods": sum(1 for e in ai_edits if e.kind == "thinning"),
            "n_cavities_on_ai": sum(1 for e in ai_edits if e.kind == "cavity"),
            "n_cavities_refilled": sum(1 for e in undone_edits if e.kind == "cavity"),
            "n_formation_packets": sum(1 for e in edits if e.kind == "formation"),
            "n_pores_baseline": int(n_base_pores),
            "n_pores_new_on_ai": int(n_new),
            "n_analysed_elements": int(analysed.size),
        },
        "connections": {
            "definition": (
                "junction-graph edges [vertex_a, vertex_b, element] of the analysed elements: "
                "a rod links its two ends, a plate consecutive corners; both vertices are "
                "junctions (>= 2 elements at baseline). Vertex ids are those of "
                "TrabecularPhantom.junctions."
            ),
            "baseline": [list(edge) for edge in baseline_edges],
            "lost_on_ai": [list(edge) for edge in lost],
            "restored_post_withdrawal": [list(edge) for edge in back],
        },
        "memory_index": memory,
        "change_percent": change,
        "parameters": parameters,
    }
