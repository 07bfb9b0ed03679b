"""Euler characteristic by summing local contributions over 2x2x2 windows.

Every voxel of a window is in one of three states: 0 outside the region of interest,
1 inside it and background, 2 inside it and bone. A window's code is
``sum(state[i] * 3**i)`` with ``i = x + 2*y + 4*z`` its position in the window; the lookup
table built in :mod:`microarch.measure._connectivity` maps the code to eight times the
window's share of the Euler characteristic (zero for windows without bone).
"""

import numpy as np
from numba import prange

from microarch._kernels._jit import njit


@njit(parallel=True)
def _padded_states(mask, roi, use_roi, outside_state):
    nz, ny, nx = mask.shape
    states = np.full((nz + 2, ny + 2, nx + 2), outside_state, dtype=np.uint8)
    for z in prange(nz):
        for y in range(ny):
            for x in range(nx):
                if use_roi and not roi[z, y, x]:
                    states[z + 1, y + 1, x + 1] = 0
                elif mask[z, y, x]:
                    states[z + 1, y + 1, x + 1] = 2
                else:
                    states[z + 1, y + 1, x + 1] = 1
    return states


@njit(parallel=True)
def window_sum(mask, roi, use_roi, outside_state, lut):
    """Sum ``lut`` over every 2x2x2 window of the volume padded by one voxel.

    ``mask`` and ``roi`` are bool arrays of one shape (``roi`` is ignored unless
    ``use_roi``); voxels beyond the image take ``outside_state``. Returns the integer sum,
    eight times the Euler characteristic.
    """
    states = _padded_states(mask, roi, use_roi, outside_state)
    pz, py, px = states.shape
    partial = np.zeros(pz - 1, dtype=np.int64)
    for z in prange(pz - 1):
        total = 0
        for y in range(py - 1):
            a = states[z, y]
            b = states[z, y + 1]
            c = states[z + 1, y]
            d = states[z + 1, y + 1]
            # column code of the 4 voxels at one x; a window is two neighbouring columns
            left = a[0] + 9 * b[0] + 81 * c[0] + 729 * d[0]
            for x in range(1, px):
                right = a[x] + 9 * b[x] + 81 * c[x] + 729 * d[x]
                total += lut[left + 3 * right]
                left = right
        partial[z] = total
    return partial.sum()
