"""Numba kernel for slice-wise disk morphology (private; inputs are trusted).

:func:`within_distance_2d` marks, in every z-slice independently, the pixels whose
in-plane Euclidean distance (mm) to the nearest *site* pixel of the same slice is at most
a radius. Dilating a mask by a disk of radius r is ``within(mask, r)``; eroding it is
``~within(~mask, r)``. The distance is exact: a per-column count of the rows to the
nearest site, then the lower envelope of parabolas along each row (Felzenszwalb &
Huttenlocher 2012, doi:10.4086/toc.2012.v008a019), both sweeps over contiguous memory.

Imported lazily by :mod:`microarch.segment._filters` and :mod:`microarch.segment._morphology`.
"""

import numpy as np
from numba import prange

from microarch._kernels._jit import njit


@njit(parallel=True)
def within_distance_2d(sites, half_width, out):
    """out[k, j, i] = some site of slice k lies within the disk around (j, i).

    The disk is described by ``half_width``: ``half_width[c]`` (c = 0 .. R) is the largest
    column offset |di| such that the pixel (j + c, i + di) or (j - c, i + di) is in the
    disk; rows farther than R are outside it. The caller derives it from the radius
    and the pixel sizes (``(di hx)² + (c hy)² <= r²``), which makes the result equal to
    thresholding the exact Euclidean distance transform.

    For each pixel, the count of rows to the nearest site in its column is found with a
    downward and an upward sweep (capped at R + 1); a site at column q and row distance
    c then covers the columns q - half_width[c] .. q + half_width[c] of the row, whose
    union is found with a left and a right running extremum. All sweeps are over
    contiguous memory. A slice without sites gives False everywhere.
    """
    nz, ny, nx = sites.shape
    far = half_width.size  # row counts >= far never reach the disk
    for k in prange(nz):
        rows = np.empty((ny, nx), np.int32)
        for i in range(nx):
            rows[0, i] = 0 if sites[k, 0, i] else far
        for j in range(1, ny):
            for i in range(nx):
                if sites[k, j, i]:
                    rows[j, i] = 0
                else:
                    rows[j, i] = min(rows[j - 1, i] + 1, far)
        for j in range(ny - 2, -1, -1):
            for i in range(nx):
                rows[j, i] = min(rows[j, i], rows[j + 1, i] + 1)
        for j in range(ny):
            reach = -1  # rightmost column covered by a site at or left of i
            for i in range(nx):
                c = rows[j, i]
                if c < far:
                    reach = max(reach, i + half_width[c])
                out[k, j, i] = reach >= i
            reach = nx  # leftmost column covered by a site at or right of i
            for i in range(nx - 1, -1, -1):
                c = rows[j, i]
                if c < far:
                    reach = min(reach, i - half_width[c])
                if reach <= i:
                    out[k, j, i] = True
    return out


@njit(parallel=True)
def border_connected_2d(background, out):
    """out[k] = pixels of ``background[k]`` 4-connected to the border of slice k.

    A flood fill from every background pixel on the slice border; slices are
    independent and processed in parallel.
    """
    nz, ny, nx = background.shape
    for k in prange(nz):
        for j in range(ny):
            for i in range(nx):
                out[k, j, i] = False
        stack = np.empty(2 * (ny + nx) + ny * nx, np.int64)
        top = 0
        for j in range(ny):
            for i in range(nx):
                on_rim = j == 0 or j == ny - 1 or i == 0 or i == nx - 1
                if on_rim and background[k, j, i] and not out[k, j, i]:
                    out[k, j, i] = True
                    stack[top] = j * nx + i
                    top += 1
        while top > 0:
            top -= 1
            p = stack[top]
            j = p // nx
            i = p - j * nx
            if j > 0 and background[k, j - 1, i] and not out[k, j - 1, i]:
                out[k, j - 1, i] = True
                stack[top] = p - nx
                top += 1
            if j < ny - 1 and background[k, j + 1, i] and not out[k, j + 1, i]:
                out[k, j + 1, i] = True
                stack[top] = p + nx
                top += 1
            if i > 0 and background[k, j, i - 1] and not out[k, j, i - 1]:
                out[k, j, i - 1] = True
                stack[top] = p - 1
                top += 1
            if i < nx - 1 and background[k, j, i + 1] and not out[k, j, i + 1]:
                out[k, j, i + 1] = True
                stack[top] = p + 1
                top += 1
    return out


@njit(parallel=True)
def correlate_separable(image, wz, wy, wx, out):
    """Correlate a 3D float32 image with the outer product of three odd 1D kernels.

    Borders repeat the edge voxel (scipy.ndimage mode "nearest"). Each pass sums in
    float64 and stores float32, in the order z, y, x, exactly like three calls of
    ``scipy.ndimage.correlate1d``; the passes are fused slice by slice so that the
    y and x passes work on a slice held in cache.
    """
    nz, ny, nx = image.shape
    rz, ry, rx = wz.size // 2, wy.size // 2, wx.size // 2
    for k in prange(nz):
        acc = np.zeros(nx, np.float64)
        plane = np.empty((ny, nx), np.float32)
        for j in range(ny):
            acc[:] = 0.0
            for t in range(-rz, rz + 1):
                kk = min(max(k + t, 0), nz - 1)
                w = wz[t + rz]
                for i in range(nx):
                    acc[i] += w * image[kk, j, i]
            for i in range(nx):
                plane[j, i] = acc[i]
        smoothed_y = np.empty((ny, nx), np.float32)
        for j in range(ny):
            acc[:] = 0.0
            for t in range(-ry, ry + 1):
                jj = min(max(j + t, 0), ny - 1)
                w = wy[t + ry]
                for i in range(nx):
                    acc[i] += w * plane[jj, i]
            for i in range(nx):
                smoothed_y[j, i] = acc[i]
        for j in range(ny):
            for i in range(nx):
                total = 0.0
                for t in range(-rx, rx + 1):
                    ii = min(max(i + t, 0), nx - 1)
                    total += wx[t + rx] * smoothed_y[j, ii]
                out[k, j, i] = total
    return out
