"""Columnar Cython kernels (validation, hashing, netting) with pure-Python twins; no I/O.

Nothing outside ``eap.node.kernels`` imports this package.
"""
