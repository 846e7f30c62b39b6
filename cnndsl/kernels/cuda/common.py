"""Shared pieces of the CUDA kernels: the `kernel` decorator, launch configurations, types.

Conventions (see docs/cuda.md):

* Every kernel takes flat (1-D, C-contiguous) float32 device buffers plus integer shapes,
  and declares its argument types with `@kernel(sig...)`. Float scalars are float32,
  never Python floats (those would make numba type the argument as float64).
* The kernel bodies are float32 only: literals are written `float32(1.0)`, integer
  ratios use `//`. `python -m cnndsl.kernels.cuda.typecheck` compiles every kernel for
  the real CUDA target (no GPU needed) with its declared signature and fails on any
  float64 in its types or LLVM IR; under the simulator every launch checks its
  arguments against the declared signature (the simulator itself checks no types).
* Kernels are compiled lazily (on first launch), one specialization per kernel.
* Elementwise and row kernels use grid-stride loops, so any grid is correct; launch
  sizes come from `grid1d`. Under the simulator (one Python thread per CUDA thread)
  grids and blocks are kept tiny, which exercises the grid-stride loops harder.
"""
from __future__ import annotations

import numpy as np
from numba import boolean, float32, int32, int64, uint8, uint32, uint64  # noqa: F401

from cnndsl.kernels.cuda.shim import SIMULATOR, cache_policy, cuda
from cnndsl.kernels.activations import ACTIVATIONS, CODE, jit_helpers

jit_helpers()

F32 = float32[::1]
I32 = int32[::1]
I64 = int64[::1]
U8 = uint8[::1]

# Threads per block of elementwise kernels, the cap on their grid (grid-stride loops),
# and the threads of a block reduction (a power of two; the shared arrays are this long).
if SIMULATOR:
    THREADS, MAX_BLOCKS, RB = 32, 2, 32
else:
    THREADS, MAX_BLOCKS, RB = 256, 4096, 256
# Blocks wanted to fill the GPU, where a launch's work can be split to get them (GEMM tiles and
# reduction splits, per-channel reductions' chunks): about two per SM on an H100's 132 SMs.
TARGET_BLOCKS = 4 if SIMULATOR else 264

KERNELS: list["Kernel"] = []  # every kernel made, for the float64 type check


def _install_cuda_locator() -> None:
    """With CNNDSL_CUDA_CACHE=on, numba-cuda's cache files cnndsl's kernels as Numba's CPU cache
    does (kernel_cache.install_locator: a subfolder named after the package folder and the
    sources' fingerprint); numba-cuda has its own copy of Numba's caching code. Not under the
    simulator, nor with numba's built-in CUDA target, which has no such copy."""
    if SIMULATOR or cache_policy() != "on":
        return
    try:
        from numba.cuda.core import caching as cuda_caching
        from numba.cuda.core import config as cuda_config
    except ImportError:
        return
    from cnndsl import kernel_cache

    kernel_cache.install_locator(cuda_caching, cuda_config)


_install_cuda_locator()


class Kernel:
    """A lazily compiled CUDA kernel with a declared signature.

    `k[blocks, threads](*args)` launches it. Under the simulator each launch first
    checks its arguments against the declared signature."""

    def __init__(self, fn, signature: tuple, name: str | None = None):
        self.py_func = fn
        self.signature = tuple(signature)
        self.name = name or fn.__name__
        # CNNDSL_CUDA_CACHE=on: numba-cuda keeps the compiled kernel on disk, keyed by its source
        # file's path and stamp, its bytecode, closure values, argument types, the GPU's compute
        # capability and the CUDA and numba-cuda versions (numba-cuda 0.30's CUDACache), in the
        # folder kernel_cache.configure fingerprints, so a change of any kernel source (a callee
        # in another file too) starts a fresh cache. Where numba finds no folder for it (no
        # source file, an unwritable place), the kernel compiles in every process, as with "off";
        # `cache_note` says why.
        self.cache_requested, self.cache_note = cache_policy() == "on", ""
        if self.cache_requested:
            try:
                self.dispatcher = cuda.jit(fn, cache=True)
            except RuntimeError as e:  # numba-cuda: "cannot cache function ...: no locator available"
                self.dispatcher, self.cache_note = cuda.jit(fn), str(e)
        else:
            self.dispatcher = cuda.jit(fn)
        KERNELS.append(self)

    def __getitem__(self, config):
        if not SIMULATOR:
            return self.dispatcher[config]  # a configured launcher, kept by callers for later launches

        def checked(*args):
            check_args(self, args)
            # the simulator's kernel[config] sets the config on the kernel itself: apply it at launch time
            return self.dispatcher[config](*args)
        # what numba's configured launcher tells (benchmarks/cuda_conv.py reports it)
        checked.name, checked.griddim, checked.blockdim = self.name, config[0], config[1]
        return checked

    def __repr__(self) -> str:
        return f"<cuda kernel {self.name}>"


def prepared(k: Kernel, config, args, varying: tuple[int, ...] = ()) -> "PreparedLaunch":
    """`k[config](*args)` as a callable, for launches whose arguments never change (the backend
    prepares each node's launches once per executable) but for the scalar arguments at the
    positions `varying`, whose values each call passes (a dropout seed, an optimizer's step
    coefficients)."""
    return PreparedLaunch(k[config], tuple(args), tuple(varying))


class PreparedLaunch:
    """A launch with fixed arguments. The first two calls go through numba's dispatcher, which
    compiles the kernel, types the arguments and marshals them, every time. From the second on,
    where numba-cuda's launch path is the one this was written against (numba-cuda 0.30 over
    cuda.core), the arguments marshalled once are kept and each call is one `cuda.core.launch`:
    typing and marshalling 27 arguments per conv launch is host time every step, and small
    networks are launch-bound (docs/cuda.md). A varying scalar is marshalled again per call by
    numba's own `_prepare_args`, alone. `CNNDSL_CUDA_LAUNCH=dispatch` keeps numba's path
    throughout; anything unexpected does too, and `fallback_reason` says why."""

    __slots__ = ("configured", "args", "varying", "fast", "calls", "fallback_reason")

    def __init__(self, configured, args: tuple, varying: tuple[int, ...] = ()):
        import os

        self.configured, self.args, self.varying = configured, args, varying
        self.fast, self.calls, self.fallback_reason = None, 0, ""
        # the launch path is chosen when the launch is prepared (like CNNDSL_CUDA_GEMM's family)
        if os.environ.get("CNNDSL_CUDA_LAUNCH", "prepared").strip() == "dispatch":
            self.calls, self.fallback_reason = -1, "CNNDSL_CUDA_LAUNCH=dispatch"

    def __call__(self, *values) -> None:
        if len(values) != len(self.varying):
            raise TypeError(f"this launch takes {len(self.varying)} varying argument(s), got {len(values)}")
        if self.fast is not None:
            self.fast(*values)
            return
        if values:
            args = list(self.args)
            for i, v in zip(self.varying, values):
                args[i] = v
            self.args = tuple(args)
        self.configured(*self.args)
        if self.calls >= 0:
            self.calls += 1
            if self.calls == 2 and not SIMULATOR:
                self.fast, self.fallback_reason = fast_launch(self.configured, self.args, self.varying)


def fast_launch(configured, args, varying: tuple[int, ...] = ()):
    """(a callable launching `configured` with `args` through cuda.core directly, taking the
    values of the scalar arguments at `varying`, "") or (None, why not). Call it only after
    `configured(*args)` has run once (compiled)."""
    try:
        from numba.cuda import dispatcher as D

        disp = configured.dispatcher
        if type(configured).__module__ != D.__name__ or not (hasattr(D, "launch") and hasattr(D, "LaunchConfig")):
            return None, f"not numba-cuda's cuda.core launch path ({type(configured).__module__})"
        if len(disp.overloads) != 1 or getattr(disp, "_launch_config_sensitive", False):
            return None, "the kernel has several specializations"
        kern = next(iter(disp.overloads.values()))
        if kern.debug or kern.cooperative or configured.pre_launch_callbacks or configured.sharedmem:
            return None, "debug, cooperative, callbacks or dynamic shared memory"
        cufunc = kern._codelibrary.get_cufunc()
        retr, kernelargs, slots = [], [], {}
        for i, (ty, val) in enumerate(zip(kern.argument_types, args)):
            start = len(kernelargs)
            kern._prepare_args(ty, val, configured.stream, retr, kernelargs)
            if i in varying:
                if len(kernelargs) - start != 1:
                    return None, f"varying argument {i} is not one scalar"
                slots[i] = (start, ty)
        if retr:
            return None, "a host array argument (copied back after each launch)"
        if D.CUDA_CORE_GE_1_0:
            cfg = D.LaunchConfig(grid=configured.griddim, block=configured.blockdim, shmem_size=0,
                                 is_cooperative=False)
        else:
            cfg = D.LaunchConfig(grid=configured.griddim, block=configured.blockdim, shmem_size=0,
                                 cooperative_launch=False)
        launch, stream, fn = D.launch, configured.stream, cufunc.kernel
        if not varying:
            kargs = tuple(kernelargs)

            def fast() -> None:
                launch(stream, cfg, fn, *kargs)
        else:
            kargs, prepare = kernelargs, kern._prepare_args
            where = tuple(slots[i] for i in varying)

            def fast(*values) -> None:
                for (at, ty), v in zip(where, values):
                    one = []
                    prepare(ty, v, stream, retr, one)
                    kargs[at] = one[0]
                launch(stream, cfg, fn, *kargs)
        fast.keep = args  # the device arrays stay alive as long as the marshalled pointers
        return fast, ""
    except Exception as e:  # another numba-cuda: its own path still works
        return None, f"{type(e).__name__}: {e}"


def kernel(*signature, name: str | None = None):
    """`@kernel(F32, F32, int64)`: a CUDA kernel with the given argument types."""
    def wrap(fn):
        return Kernel(fn, signature, name)
    return wrap


def device(fn):
    """A device function (inlined into the kernels that call it)."""
    return cuda.jit(device=True)(fn)


# Index arithmetic of the element-wise kernels: numba types it int64, and an int64 division or
# remainder is a call to a subroutine of 83 (__cuda_sm20_div_s64) or 79 (rem_s64) instructions
# (ptxas 12.9, sm_90); the uint32 ones are a few inline instructions. So where the operand is
# below 2**32 (every tensor a GPU holds in practice; the test is per element, uniform) they
# divide in uint32.


@device
def div_mod(a, b, n):
    """(a // b, a % b) for 0 <= a < n, b > 0."""
    if n < 4294967296:
        q = int64(uint32(a) // uint32(b))
    else:
        q = a // b
    return q, a - q * b


@device
def channel_of(i, S, C, n):
    """The channel (i // S) % C of flat element i of an (N, C, S) tensor of n elements."""
    return div_mod(div_mod(i, S, n)[0], C, n)[1]


NONE, RELU, LEAKY_RELU, SIGMOID, TANH = (CODE[n] for n in ("none", "relu", "leaky_relu", "sigmoid", "tanh"))


def _dispatch(entries, arity: int):
    """A device function f(*args, act, alpha) that calls entries' function of code `act` (the
    identity on its first argument for none), made from cnndsl/kernels/activations.py's table:
    a chain of device functions, each testing one code and calling the next (inlined by the
    compiler into one if-chain). CUDA's target has no literal_unroll, the CPU kernels' way."""
    def last1(v, act, alpha):
        return v

    def last2(g, v, act, alpha):
        return g

    fn = device(last1 if arity == 1 else last2)
    for code, scalar in reversed(entries):
        fn = _link(code, device(scalar), fn, arity)
    return fn


def _link(code, scalar, rest, arity: int):
    if arity == 1:
        def step1(v, act, alpha):
            if act == code:
                return scalar(v, alpha)
            return rest(v, act, alpha)
        return device(step1)

    def step2(g, v, act, alpha):
        if act == code:
            return scalar(g, v, alpha)
        return rest(g, v, act, alpha)
    return device(step2)


# activate(v, act, alpha): the fused epilogue's and the element-wise kernels' activation;
# activation_grad(g, v, act, alpha): its gradient from v, the output y or the input z as the
# activation's record says (grad_from).
activate = _dispatch([(a.code, a.forward) for a in ACTIVATIONS if a.code != NONE], 1)
activation_grad = _dispatch([(a.code, a.grad) for a in ACTIVATIONS if a.code != NONE], 2)
# the fused layers' backward keeps only y: in training the fusion passes fuse only the
# activations whose gradient reads the output (cnndsl/passes/fusion.py)
grad_from_output = activation_grad


def grid1d(n: int, threads: int = THREADS) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop over n items."""
    return max(1, min(MAX_BLOCKS, -(-n // threads))), threads


def check_args(k: Kernel, args) -> None:
    """Each argument must have the declared type: arrays by dtype, rank and C layout,
    scalars exactly (a Python float is float64 and is refused where float32 is declared)."""
    import numba

    if len(args) != len(k.signature):
        raise TypeError(f"{k.name}: {len(args)} arguments, {len(k.signature)} declared")
    for i, (a, want) in enumerate(zip(args, k.signature)):
        if isinstance(want, numba.types.Array):
            dt = getattr(a, "dtype", None)
            ok = (dt is not None and getattr(a, "ndim", None) == want.ndim
                  and numba.from_dtype(np.dtype(dt)) == want.dtype and _c_contiguous(a))
        else:
            got = numba.typeof(a)
            ok = got == want or (want == boolean and isinstance(a, (bool, np.bool_))) or \
                (want in (int64, int32) and isinstance(a, (int, np.integer))
                 and not isinstance(a, (bool, np.bool_, np.uint64))
                 and (want == int64 or -2**31 <= int(a) < 2**31))
        if not ok:
            raise TypeError(f"{k.name}: argument {i} is {_describe(a)}, declared {want}")


def _c_contiguous(a) -> bool:
    if hasattr(a, "is_c_contiguous"):
        return bool(a.is_c_contiguous())
    flags = getattr(a, "flags", None)
    return bool(flags["C_CONTIGUOUS"]) if flags is not None else True


def _describe(a) -> str:
    if hasattr(a, "dtype") and hasattr(a, "shape") and not np.isscalar(a):
        return f"array {a.dtype} {a.shape}"
    return f"{type(a).__name__} {a!r}"
