"""Triton kernels of stnas, one file per op (kernel + launcher), shipped as ``stnas.kernels``.

Modules import triton themselves; ``stnas.ops`` imports them lazily and falls back when triton is absent.
Under ``TRITON_INTERPRET=1`` (set before the first import) they run on CPU tensors for testing.
"""
