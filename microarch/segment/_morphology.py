"""Slice-wise disk morphology in physical units, hole filling and component selection.

HR-pQCT contouring works slice by slice in the (y, x) plane with radii in mm, so that the
same parameters serve 61 µm and 82 µm scans. Disks are exact Euclidean disks (distance
to pixel centres <= radius) on possibly anisotropic pixels. All helpers take and return
C-contiguous bool arrays of shape (Z, Y, X) and never modify their input.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

_CONNECTIVITY = {6: ndi.generate_binary_structure(3, 1), 26: np.ones((3, 3, 3), bool)}


def disk_half_widths(radius, spacing_yx):
    """Half-widths (pixels) of the disk's rows: ``(di hx)² + (c hy)² <= r²`` for row c."""
    hy, hx = (float(h) for h in spacing_yx)
    r2 = radius * radius * (1.0 + 1e-9)  # a pixel exactly on the rim is in the disk
    n_rows = math.floor(radius / hy * (1.0 + 1e-9)) + 1
    widths = np.empty(n_rows, np.int64)
    for c in range(n_rows):
        rest = r2 - (c * hy) ** 2
        w = math.floor(math.sqrt(max(rest, 0.0)) / hx)
        while ((w + 1) * hx) ** 2 <= rest:
            w += 1
        while w > 0 and (w * hx) ** 2 > rest:
            w -= 1
        widths[c] = w
    return widths


def _pad_width(radius, spacing_yx):
    return math.ceil(radius / min(spacing_yx)) + 1


def _within(sites, radius, spacing_yx):
    from microarch._kernels.segment import within_distance_2d

    out = np.empty(sites.shape, bool)
    widths = disk_half_widths(radius, spacing_yx)
    return within_distance_2d(np.ascontiguousarray(sites), widths, out)


def _pad(mask, width, value):
    return np.pad(mask, ((0, 0), (width, width), (width, width)), constant_values=value)


def _crop(mask, width):
    return np.ascontiguousarray(mask[:, width:-width, width:-width])


def dilate_2d(mask, radius, spacing_yx):
    """Dilate every slice by a disk of ``radius`` mm."""
    if radius <= 0:
        return mask.copy()
    return _within(mask, radius, spacing_yx)


def erode_2d(mask, radius, spacing_yx):
    """Erode every slice by a disk of ``radius`` mm; beyond the image is background."""
    if radius <= 0:
        return mask.copy()
    width = _pad_width(radius, spacing_yx)
    return _crop(~_within(_pad(~mask, width, True), radius, spacing_yx), width)


def close_2d(mask, radius, spacing_yx):
    """Closing (dilate, then erode) by a disk; the result always contains ``mask``."""
    if radius <= 0:
        return mask.copy()
    width = _pad_width(radius, spacing_yx)
    dilated = _within(_pad(mask, width, False), radius, spacing_yx)
    # the padding is wider than the radius, so its outer rim stays background and the
    # erosion sees background beyond the image
    return _crop(~_within(~dilated, radius, spacing_yx), width)


def open_2d(mask, radius, spacing_yx):
    """Opening (erode, then dilate) by a disk; the result is contained in ``mask``."""
    if radius <= 0:
        return mask.copy()
    width = _pad_width(radius, spacing_yx)
    eroded = ~_within(_pad(~mask, width, True), radius, spacing_yx)
    return _crop(_within(eroded, radius, spacing_yx), width)


def fill_holes_2d(mask):
    """Fill, in every slice, the background regions not 4-connected to the slice border."""
    from microarch._kernels.segment import border_connected_2d

    outside = np.empty(mask.shape, bool)
    border_connected_2d(np.ascontiguousarray(~mask), outside)
    return ~outside


def component_sizes(mask, connectivity):
    """Label the components of ``mask``; return (labels, voxel counts by label, int64)."""
    labels, n = ndi.label(mask, structure=_CONNECTIVITY[connectivity])
    # counting only the foreground is much faster than a bincount over the whole volume
    sizes = np.bincount(labels[mask], minlength=n + 1).astype(np.int64)
    sizes[0] = 0
    return labels, sizes


def largest_components(mask, count, connectivity, min_fraction=None):
    """Keep the ``count`` largest components (ties broken by label order).

    With ``min_fraction``, also keep every component holding at least that fraction of
    the largest one's voxels.
    """
    labels, sizes = component_sizes(mask, connectivity)
    if sizes.size <= 1:
        return np.zeros(mask.shape, bool)
    if sizes.size - 1 <= count:
        return mask.copy()
    order = np.argsort(-sizes[1:], kind="stable")[:count] + 1
    if min_fraction is not None:
        big = np.flatnonzero(sizes >= min_fraction * sizes.max())
        order = np.union1d(order, big[big > 0])
    if order.size <= 4:
        keep = labels == order[0]
        for label in order[1:]:
            keep |= labels == label
        return keep
    table = np.zeros(sizes.size, bool)
    table[order] = True
    return table[labels]


def remove_small_components(mask, min_size, connectivity):
    """Drop components with fewer than ``min_size`` voxels."""
    if min_size <= 1 or not mask.any():
        return mask.copy()
    labels, sizes = component_sizes(mask, connectivity)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def bounding_box(mask, margin_yx=0):
    """Slices of the smallest box holding ``mask`` (all z; y and x widened by a margin).

    None when the mask is empty.
    """
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    ny, nx = mask.shape[1:]
    return (slice(None),
            slice(max(rows[0] - margin_yx, 0), min(rows[-1] + 1 + margin_yx, ny)),
            slice(max(cols[0] - margin_yx, 0), min(cols[-1] + 1 + margin_yx, nx)))
