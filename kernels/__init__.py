"""Numba kernels of fastca; installed as ``fastca.kernels``.

Import them through :mod:`fastca.backends`, the one place that loads kernels.
"""
