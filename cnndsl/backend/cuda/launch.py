"""`@launches("op", ...)`: register a CUDA launcher, prepared once per node and executable.

The decorated function `build(rc, node, ins, out)` runs on the node's first launch: it
makes the flat device views, picks the launch configurations and binds the arguments, and
returns `run(rc)`, which every launch of the node then calls (kept in `rc.cache`). So a
training step costs the kernel launches and little else on the host.
"""
from __future__ import annotations

import numpy as np

from cnndsl.backend.base import register_launcher
from cnndsl.kernels.cuda import reduce as R
from cnndsl.kernels.cuda.common import prepared

BACKEND = "cuda"


def launches(*ops: str):
    def register(build):
        def launcher(rc, node, ins, out):
            run = rc.cache.get(node.name)
            if run is None:
                run = rc.cache[node.name] = build(rc, node, ins, out)
            run(rc)
        launcher.build = build
        register_launcher(BACKEND, ops, launcher)
        return build
    return register


def flat(a):
    """A 1-D view of a C-contiguous device array."""
    return a if a.ndim == 1 else a.reshape(a.size)


def nothing(rc) -> None:
    pass


def params_of(rc, layer: str) -> dict:
    """The layer's learnable tensors on the device, by short name ("weight", "bias", ...)."""
    return rc.store.on_device().by_layer.get(layer, {})


def grads_of(rc, layer: str) -> dict:
    return rc.store.on_device().grads_by_layer.get(layer, {})


def buffers_of(rc, layer: str) -> dict:
    return rc.store.on_device().buffers_by_layer.get(layer, {})


def no_bias(rc):
    """A 1-element device array standing in for an absent bias."""
    return rc.ws("", "no_bias", (1,))


def f32(x) -> np.float32:
    return np.float32(x)


def split3(shape) -> tuple[int, int, int]:
    """(N, C, S) of an (N, C, ...) shape, S the product of the rest (1 for vectors)."""
    n, c = shape[0], shape[1]
    return n, c, int(np.prod(shape[2:], dtype=np.int64))


def sequence(steps):
    """`run(rc)` calling each prepared launch (a no-argument callable) in order."""
    steps = [s for s in steps if s is not None]
    if len(steps) == 1:
        only = steps[0]
        return lambda rc: only()

    def run(rc):
        for s in steps:
            s()
    return run


def chain(steps):
    """One no-argument callable doing the prepared launches `steps` in order."""
    steps = [s for s in steps if s is not None]

    def run():
        for s in steps:
            s()
    return steps[0] if len(steps) == 1 else run


def steps(triples):
    """One no-argument callable doing the prepared launches of [(kernel, config, args)] in order
    (the kernels' host helpers that plan several launches return these)."""
    return chain([launch(k, config, *args) for k, config, args in triples])


def splitk(rc):
    """The workspace of a split-K GEMM launch (kernels/cuda/gemm.py's `workspace`): the shared
    scratch buffer its partial sums go to, consumed by the launch's second kernel."""
    return lambda n: rc.scratch("cuda_splitk", n)


def channel_sums(rc, x, n: int, c: int, s: int, scale, out):
    """One no-argument callable writing out[j] = scale * the sum of channel j of x ((n, c, s)
    flat): kernels/cuda/reduce.py's runs, their partial sums in a shared scratch buffer."""
    part = rc.scratch("cuda_channel_runs", R.workspace(c, n * s))
    return steps(R.channel_sum_steps(x, n, c, s, np.float32(scale), out, part))


def launch(kernel, config, *args, varying: tuple[int, ...] = ()):
    """A prepared launch: `kernel[config](*args)` as a callable taking the values of the scalar
    arguments at `varying` (none: no arguments) (cnndsl/kernels/cuda/common.py's PreparedLaunch:
    from its second call, one cuda.core launch)."""
    return prepared(kernel, config, args, varying)
