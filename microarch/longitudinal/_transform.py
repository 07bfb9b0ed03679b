"""Apply, save and load rigid transforms between visits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from microarch._shared.threads import available
from microarch._shared.validation import as_spacing, check_choice
from microarch.longitudinal._grid import Grid, as_euler, reference_image, to_sitk

INTERPOLATIONS = ("nearest", "linear", "bspline")


def check_threads(threads) -> int:
    """Validated thread count; ``None`` means every CPU this process may use."""
    if threads is None:
        return available()
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be a positive integer or None; got {threads!r}")
    return int(threads)


def _transform_of(transform):
    """Accept a Registration (its ``transform``) or a SimpleITK transform."""
    import SimpleITK as sitk

    if not isinstance(transform, sitk.Transform):
        transform = getattr(transform, "transform", transform)
    if not isinstance(transform, sitk.Transform):
        raise TypeError("transform must be a Registration or a SimpleITK transform, not "
                        f"{type(transform).__name__}")
    return transform


def apply_transform(image, transform, *, spacing, reference_shape, reference_spacing,
                    interpolation=None, fill=0, threads=None):
    """Resample a follow-up image or mask onto the baseline grid, in one step.

    Parameters
    ----------
    image : (Z, Y, X) array_like
        The follow-up volume (grey values or a mask), axes (z, y, x). Not modified.
    transform : Registration or SimpleITK transform
        Maps baseline physical points to follow-up physical points (what
        :func:`register` returns), in the frame of :mod:`microarch.longitudinal`
        (first voxel centre at 0 mm, axes along the array axes).
    spacing : float or sequence of 3 floats
        Voxel size of ``image`` in mm (z, y, x).
    reference_shape : sequence of 3 ints
        Shape of the baseline grid (z, y, x).
    reference_spacing : float or sequence of 3 floats
        Voxel size of the baseline grid in mm (z, y, x).
    interpolation : {"nearest", "linear", "bspline"}, optional
        Default: ``"nearest"`` for bool and integer arrays (masks and labels), ``"linear"``
        for floating grey values. Masks must use ``"nearest"``. ``"bspline"`` is cubic.
    fill : scalar
        Value of baseline voxels that fall outside the follow-up's field of view.
    threads : int, optional
        SimpleITK threads (default: all CPUs available to this process).

    Returns
    -------
    (Z, Y, X) ndarray
        On the baseline grid: bool for bool input, the input dtype for integer input with
        ``"nearest"``, float32 otherwise.

    Notes
    -----
    Resample each image once, from its own grid, with the composed transform: chaining
    resamplings blurs grey values and erodes thin structures.

    Examples
    --------
    A shift of one voxel along z (0.5 mm) moves the content one plane down:

    >>> import numpy as np
    >>> import SimpleITK as sitk
    >>> shift = sitk.Euler3DTransform()
    >>> shift.SetTranslation((0.0, 0.0, 0.5))      # SimpleITK order (x, y, z), mm
    >>> mask = np.zeros((4, 3, 3), bool)
    >>> mask[2] = True
    >>> moved = apply_transform(mask, shift, spacing=0.5, reference_shape=(4, 3, 3),
    ...                         reference_spacing=0.5)
    >>> [int(plane.sum()) for plane in moved]
    [0, 9, 0, 0]
    """
    array = np.asarray(image)
    if array.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x); got shape {array.shape}")
    if interpolation is None:
        interpolation = "nearest" if array.dtype == bool or array.dtype.kind in "iu" \
            else "linear"
    check_choice(interpolation, INTERPOLATIONS, name="interpolation")
    if array.dtype == bool and interpolation != "nearest":
        raise ValueError("masks must be resampled with interpolation='nearest'; resample the "
                         "grey image instead and segment it on the baseline grid")
    source = Grid.of(array, spacing)
    reference = Grid(tuple(int(n) for n in reference_shape),
                     as_spacing(reference_spacing, name="reference_spacing"))
    if len(reference.shape) != 3 or min(reference.shape) < 1:
        raise ValueError(f"reference_shape must hold 3 positive sizes; got {reference_shape}")
    box = tuple(slice(0, n) for n in reference.shape)
    return resample_box(array, source, _transform_of(transform), reference, box,
                        interpolation=interpolation, fill=fill, threads=check_threads(threads))


def resample_box(array, source, transform, reference, box, *, interpolation, fill=0,
                 threads=1):
    """Resample ``array`` (on grid ``source``) onto the part ``box`` (tuple of slices,
    z, y, x) of the ``reference`` grid; validated inputs, private use."""
    import SimpleITK as sitk

    is_mask = array.dtype == bool
    is_integer = array.dtype.kind in "iu"
    if interpolation == "nearest":
        moving = to_sitk(array.view(np.uint8) if is_mask else array, source)
        output_pixel = moving.GetPixelID()
        method = sitk.sitkNearestNeighbor
    else:
        moving = to_sitk(array.astype(np.float32, copy=False), source)
        output_pixel = sitk.sitkFloat32
        method = sitk.sitkLinear if interpolation == "linear" else sitk.sitkBSpline
    size = [b.stop - b.start for b in box]
    target = reference_image(Grid(tuple(size), reference.spacing))
    start = np.array([b.start for b in box], float) * np.asarray(reference.spacing)
    target.SetOrigin([float(v) for v in start[::-1]])
    resampler = sitk.ResampleImageFilter()
    resampler.SetNumberOfThreads(int(threads))
    resampler.SetReferenceImage(target)
    resampler.SetTransform(transform)
    resampler.SetInterpolator(method)
    resampler.SetOutputPixelType(output_pixel)
    resampler.SetDefaultPixelValue(float(fill))
    out = sitk.GetArrayFromImage(resampler.Execute(moving))
    if is_mask:
        return out.astype(bool)
    if interpolation == "nearest" and is_integer:
        return out.astype(array.dtype, copy=False)
    return out.astype(np.float32, copy=False)


def field_of_view(shape, transform, *, spacing, reference_shape, reference_spacing,
                  threads=None):
    """Baseline voxels whose transformed centre lies inside the follow-up's image (bool).

    Parameters are those of :func:`apply_transform` (``shape`` is the follow-up's).

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> shift = sitk.Euler3DTransform()
    >>> shift.SetTranslation((0.0, 0.0, 1.0))        # x, y, z in mm: 2 planes of 0.5 mm
    >>> fov = field_of_view((6, 2, 2), shift, spacing=0.5, reference_shape=(6, 2, 2),
    ...                     reference_spacing=0.5)
    >>> fov[:, 0, 0].astype(int).tolist()
    [1, 1, 1, 1, 0, 0]
    """
    ones = np.ones(tuple(int(n) for n in shape), dtype=bool)
    return apply_transform(ones, transform, spacing=spacing, reference_shape=reference_shape,
                           reference_spacing=reference_spacing, interpolation="nearest",
                           threads=threads)


def save_transform(transform, path) -> Path:
    """Write a rigid transform (or a Registration's) as an ITK ``.tfm`` text file.

    The file holds an ``Euler3DTransform_double_3_3`` (parameters: rotations about x, y, z
    in radians, then the translation in mm, x, y, z; fixed parameters: the centre of
    rotation), mapping baseline-grid to follow-up-grid physical points in the frame of
    :mod:`microarch.longitudinal`. ITK, SimpleITK, 3D Slicer and elastix's transformix
    read it.

    Parameters
    ----------
    transform : Registration or SimpleITK transform
    path : str or os.PathLike
        Destination; the suffix must be ``.tfm`` (or ``.txt``).

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import SimpleITK as sitk
    >>> rigid = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, 0.01, (0.1, 0.0, 0.0))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_transform(rigid, pathlib.Path(folder) / "visit2_to_baseline.tfm")
    ...     round(load_transform(path).GetAngleZ(), 6)
    0.01
    """
    import SimpleITK as sitk

    path = Path(os.fspath(path))
    if path.suffix.lower() not in (".tfm", ".txt"):
        raise ValueError(f"transform files must end in .tfm (or .txt); got {path.name!r}")
    sitk.WriteTransform(as_euler(_transform_of(transform)), str(path))
    return path


def load_transform(path):
    """Read a rigid transform written by :func:`save_transform` (or by ITK tools).

    Returns
    -------
    SimpleITK.Euler3DTransform

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it holds a transform that is not rigid.
    """
    import SimpleITK as sitk

    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"no transform file at {path}")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise ValueError(f"cannot read a transform from {path}: {exc}") from None
    return as_euler(transform)
