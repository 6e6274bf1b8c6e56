"""Triton kernels of stnas, one file per op (kernel + launcher), shipped as ``stnas.kernels``; also
``skip_pool``, a method's kernel that is not a public op (TopoNAS's merged skip + pooling, called from
``stnas.supernet.toponas``).

Modules import triton themselves; ``stnas.ops`` imports them lazily and falls back when triton is absent.
Under ``TRITON_INTERPRET=1`` (set before the first import) they run on CPU tensors for testing.
"""
