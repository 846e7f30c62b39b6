"""No float64 in any CUDA kernel: compile each one for the real CUDA target, without a GPU.

    python -m cnndsl.kernels.cuda.typecheck        (NOT under NUMBA_ENABLE_CUDASIM)

The simulator runs kernels as Python and checks no types, so a stray `1.0` or a Python
float argument (both float64) would go unseen there and cost a factor 2-64 on a GPU. This
script types and lowers every kernel (every tile variant of the GEMM template included)
with numba's CUDA compiler for compute capability 8.0 and its DECLARED argument types (the
simulator tests check that every launch passes exactly those), then reads the LLVM IR of
the kernel and every device function it calls. Any `double` in it fails the check, except
`fptrunc double <constant> to float`, which is how a `float32(0.5)` literal looks before
constant folding. No PTX is made, so neither a driver nor NVVM is needed.

The CUDA driver is only consulted for the compute capability when a kernel calls a device
function; that lookup is answered with 8.0 here.
"""
from __future__ import annotations

import re
import sys

CC = (8, 0)
_ALLOWED = re.compile(r"=\s*fptrunc double\s+[-+0-9.eExXa-fA-F]+\s+to float\s*$")


def _patch_device_lookup() -> None:
    import numba.cuda.dispatcher as dispatcher

    class _Device:
        compute_capability = CC

    dispatcher.get_current_device = lambda: _Device()


def all_kernels(full: bool = False):
    """Every kernel of cnndsl/kernels/cuda, GEMM variants for every tile and operand order."""
    from cnndsl.kernels.cuda import (  # noqa: F401
        elementwise, gemm, igemm, im2col, layers, loss, optim, pool, reduce, tensor, yolo_loss)
    from cnndsl.kernels.cuda.common import KERNELS

    # Tiles only change integer constants: every tile with one operand order, and every
    # operand order with one tile, per mode (`full=True`: every combination).
    for mode in (gemm.FWD, gemm.BWD_DATA, gemm.BWD_WEIGHT):
        for tile in gemm.TILES:
            for a_kfast in (False, True):
                for b_kfast in (False, True):
                    if full or tile == "s32x16" or (a_kfast, b_kfast) == (False, True):
                        gemm.gemm_kernel(mode, tile, a_kfast, b_kfast)
        # the pipelined family (igemm.py): every operand order (and BWD_DATA's unit-stride
        # variant) with the smallest tile; the other tiles (only constants and unrolling
        # change, 1.5-2.6 s of compilation each) for FWD alone
        for tile in igemm.TILES:
            for a_kfast in (False, True):
                for b_kfast in (False, True):
                    if full or (tile == "p32x16" or (mode, a_kfast, b_kfast) == (gemm.FWD, False, True)):
                        for unit in ((False, True) if mode == gemm.BWD_DATA else (False,)):
                            igemm.pipelined_kernel(mode, tile, a_kfast, b_kfast, unit)
        if mode != gemm.BWD_WEIGHT:  # the split-K variants (tune.py's candidates), the smallest tile
            for unit in ((False, True) if mode == gemm.BWD_DATA else (False,)):
                igemm.pipelined_kernel(mode, "p32x16", False, True, unit, True)
    return list(KERNELS)


def double_lines(k) -> list[str]:
    """The offending IR lines of one kernel (empty when it is float32 only)."""
    from numba.cuda.compiler import compile_cuda

    cres = compile_cuda(k.py_func, None, k.signature, cc=CC)
    ir = cres.library.get_llvm_str()
    return [line.strip() for line in ir.splitlines() if "double" in line and not _ALLOWED.search(line)]


def self_test() -> None:
    """The check must catch a float64 literal and a float64 argument, and pass a float32 kernel."""
    from numba import float32, float64, int64

    from cnndsl.kernels.cuda.common import F32, Kernel, cuda

    def literal(x, y, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            y[i] = x[i] * 0.5

    def argument(x, y, a, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            y[i] = x[i] * a

    def clean(x, y, a, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            y[i] = x[i] * a + float32(0.5)

    def make(fn, sig):
        k = Kernel(fn, sig)
        from cnndsl.kernels.cuda.common import KERNELS
        KERNELS.remove(k)
        return k

    assert double_lines(make(literal, (F32, F32, int64))), "a float64 literal went unnoticed"
    assert double_lines(make(argument, (F32, F32, float64, int64))), "a float64 argument went unnoticed"
    assert not double_lines(make(clean, (F32, F32, float32, int64))), "a float32 kernel was flagged"
    print("typecheck: self-test passed (a float64 literal and argument are caught)")


def main() -> int:
    from cnndsl.kernels.cuda.shim import SIMULATOR, cuda

    if SIMULATOR:
        print("typecheck: run it without NUMBA_ENABLE_CUDASIM (it compiles for the real target)", file=sys.stderr)
        return 2
    if not cuda.__name__.startswith("numba"):
        print(f"typecheck: needs numba's CUDA target, the shim chose {cuda.__name__}", file=sys.stderr)
        return 2
    _patch_device_lookup()
    self_test()
    bad, count = 0, 0
    for k in all_kernels(full="--all" in sys.argv):
        count += 1
        try:
            lines = double_lines(k)
        except Exception as e:  # a kernel that does not compile for the real target
            print(f"FAIL {k.name}: does not compile: {type(e).__name__}: {str(e).splitlines()[0]}")
            bad += 1
            continue
        if lines:
            bad += 1
            print(f"FAIL {k.name}: float64 in the IR:")
            for line in lines[:5]:
                print(f"    {line}")
    print(f"typecheck: {count} kernels, {bad} with float64 or compile errors")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
