"""Numba kernels: private, assume validated contiguous input, import numba on use.

Never import this package from a module that ``import microarch`` loads eagerly; public
functions import the kernel modules inside their bodies.
"""
