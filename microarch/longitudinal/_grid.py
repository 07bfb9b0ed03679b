"""The one place where numpy (z, y, x) arrays meet SimpleITK (x, y, z) images.

Frame convention of the whole subpackage: every visit's grid is placed with its first
voxel centre at the physical origin (0, 0, 0) mm and its axes along the array axes
(identity direction). File origins and direction cosines are ignored on purpose: Scanco
scanner positions change from visit to visit and carry no anatomical meaning, and the
centred initialisation of :func:`~microarch.longitudinal.register` aligns the bones.
Transforms therefore map *baseline-grid* physical points to *follow-up-grid* physical
points, both in that frame; a ``.tfm`` file written here refers to it.

SimpleITK is imported inside the functions so that ``import microarch.longitudinal``
stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microarch._shared.validation import as_spacing


@dataclass(frozen=True)
class Grid:
    """Shape (z, y, x) and voxel size (mm, z, y, x) of one visit's image."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @classmethod
    def of(cls, array, spacing) -> Grid:
        shape = tuple(int(n) for n in np.shape(array))
        if len(shape) != 3:
            raise ValueError(f"images must be 3D (z, y, x); got shape {shape}")
        return cls(shape, as_spacing(spacing))

    @property
    def voxel_volume(self) -> float:
        """Voxel volume in mm³."""
        return float(np.prod(self.spacing))

    def points(self, index) -> np.ndarray:
        """Physical positions (mm, z, y, x) of voxel indices (N, 3) in (z, y, x)."""
        return np.asarray(index, dtype=float) * np.asarray(self.spacing)


def to_sitk(array, grid: Grid, *, pixel=None):
    """A SimpleITK image of a (z, y, x) numpy array on ``grid`` (a copy; input untouched)."""
    import SimpleITK as sitk

    array = np.ascontiguousarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in grid.spacing[::-1]])
    image.SetOrigin((0.0, 0.0, 0.0))
    if pixel is not None:
        image = sitk.Cast(image, pixel)
    return image


def reference_image(grid: Grid):
    """An empty SimpleITK image that only carries ``grid`` (for resampling onto it)."""
    import SimpleITK as sitk

    image = sitk.Image([int(n) for n in grid.shape[::-1]], sitk.sitkUInt8)
    image.SetSpacing([float(s) for s in grid.spacing[::-1]])
    image.SetOrigin((0.0, 0.0, 0.0))
    return image


def matrix_offset_zyx(transform) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) in numpy order with ``q = A @ p + b`` for a SimpleITK affine-like transform."""
    matrix = np.asarray(transform.GetMatrix(), dtype=float).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), dtype=float)
    translation = np.asarray(transform.GetTranslation(), dtype=float)
    offset = centre + translation - matrix @ centre  # x, y, z
    return matrix[::-1, ::-1].copy(), offset[::-1].copy()


def euler_from_matrix_offset(matrix_zyx, offset_zyx, *, centre_zyx=(0.0, 0.0, 0.0)):
    """A SimpleITK Euler3DTransform with ``q = A @ p + b`` (numpy order), rotating about
    ``centre_zyx``."""
    import SimpleITK as sitk

    matrix = np.asarray(matrix_zyx, dtype=float)[::-1, ::-1]
    offset = np.asarray(offset_zyx, dtype=float)[::-1]
    centre = np.asarray(centre_zyx, dtype=float)[::-1]
    # Re-orthonormalise: products of rotations drift by ~1e-16 per step, and ITK's
    # Euler3DTransform refuses matrices that are not orthogonal to 1e-10.
    u, _, vt = np.linalg.svd(matrix)
    matrix = u @ vt
    transform = sitk.Euler3DTransform()
    transform.SetCenter([float(c) for c in centre])
    transform.SetMatrix([float(m) for m in matrix.ravel()], 1e-8)
    translation = offset - centre + matrix @ centre
    transform.SetTranslation([float(t) for t in translation])
    return transform


def as_euler(transform):
    """Downcast a SimpleITK transform holding a rigid 3D map to an Euler3DTransform."""
    import SimpleITK as sitk

    if isinstance(transform, sitk.Euler3DTransform):
        return sitk.Euler3DTransform(transform)
    if transform.GetDimension() != 3:
        raise ValueError(f"expected a 3D transform, got a {transform.GetDimension()}D one")
    name = transform.GetName()
    if name in ("Euler3DTransform", "VersorRigid3DTransform", "TranslationTransform",
                "AffineTransform", "Similarity3DTransform", "ScaleSkewVersor3DTransform",
                "CompositeTransform"):
        if name == "CompositeTransform":
            composite = sitk.CompositeTransform(transform)
            return compose(*[composite.GetNthTransform(i)
                             for i in reversed(range(composite.GetNumberOfTransforms()))])
        if name == "TranslationTransform":
            offset = np.asarray(sitk.TranslationTransform(transform).GetOffset(), float)
            return euler_from_matrix_offset(np.eye(3), offset[::-1])
        generic = {"Euler3DTransform": sitk.Euler3DTransform,
                   "VersorRigid3DTransform": sitk.VersorRigid3DTransform,
                   "AffineTransform": sitk.AffineTransform,
                   "Similarity3DTransform": sitk.Similarity3DTransform,
                   "ScaleSkewVersor3DTransform": sitk.ScaleSkewVersor3DTransform}[name]
        typed = generic(transform)
        matrix, offset = matrix_offset_zyx(typed)
        if not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-6) or np.linalg.det(matrix) < 0:
            raise ValueError(f"the {name} is not a rigid rotation + translation")
        centre = np.asarray(typed.GetCenter(), float)[::-1]
        return euler_from_matrix_offset(matrix, offset, centre_zyx=centre)
    raise ValueError(f"cannot use a {name} as a rigid transform; expected Euler3DTransform")


def compose(*transforms):
    """One Euler3DTransform applying ``transforms[0]`` first, then ``transforms[1]``, ..."""
    matrix, offset = np.eye(3), np.zeros(3)
    centre = None
    for transform in transforms:
        a, b = matrix_offset_zyx(as_euler(transform))
        matrix, offset = a @ matrix, a @ offset + b
        if centre is None:
            centre = np.asarray(transform.GetCenter(), float)[::-1]
    return euler_from_matrix_offset(matrix, offset,
                                    centre_zyx=(0.0, 0.0, 0.0) if centre is None else centre)


def identity_transform(centre_zyx=(0.0, 0.0, 0.0)):
    """The identity as an Euler3DTransform."""
    return euler_from_matrix_offset(np.eye(3), np.zeros(3), centre_zyx=centre_zyx)
