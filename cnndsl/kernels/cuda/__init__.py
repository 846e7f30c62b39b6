"""Numba CUDA kernels (through the shim in cnndsl/kernels/cuda/shim.py): flat float32 device
buffers and integer shapes. Modules: common (decorator, launch sizes), gemm (conv and dense
as tiled implicit GEMMs), elementwise, reduce, pool, tensor, loss, optim; typecheck (no
float64 in any kernel, checked by compiling for the real target). Importing this package
imports no kernel module (nothing touches the CUDA driver at import)."""
