"""The optimization pipeline: every pass, registered here and only here, in order.

    -O0  nothing but autodiff (training) and the memory plan
    -O1  clean-ups:     remove_dropout (inference), fold_constants, cse, dce
    -O2  fusions:       fold_batchnorm (inference), fuse_batchnorm_activation, fuse_residual,
                        fuse_conv_activation, fuse_dense_activation, fuse_conv_pool (inference),
                        and after autodiff fuse_backward (training)  [default]
    -O3  as -O2 (no pass is worth its risk only at -O3 yet)

Forward rewrites run in one fixed-point group, because one enables another: folding a
batchnorm makes conv -> relu adjacent, CSE leaves dead duplicates for DCE. Then autodiff
(training), the backward fusion, a last DCE, and the memory plan.

    graph = optimize(forward_graph, mode="inference", level=2)
    graph = optimize(forward_graph, mode="training", level=2, losses=..., frozen=...)
    graph = optimize(loss_graph, mode="either")    # runs correctly with and without training semantics
"""
from __future__ import annotations

from cnndsl.analysis.plan import VIEW_OPS
from cnndsl.ir.graph import Graph
from cnndsl.ops.registry import all_ops
from cnndsl.passes.autodiff import Autodiff
from cnndsl.passes.base import EITHER, INFERENCE, MAX_LEVEL, TRAINING, PassContext
from cnndsl.passes.cse import CommonSubexpressionElimination
from cnndsl.passes.dce import DeadCodeElimination
from cnndsl.passes.fold_batchnorm import FoldBatchnorm
from cnndsl.passes.fold_constants import FoldConstants
from cnndsl.passes.fuse_backward import FuseBackward
from cnndsl.passes.fuse_batchnorm_activation import FuseBatchnormActivation
from cnndsl.passes.fuse_conv_activation import FuseConvActivation
from cnndsl.passes.fuse_conv_pool import FuseConvPool
from cnndsl.passes.fuse_dense_activation import FuseDenseActivation
from cnndsl.passes.fuse_residual import FuseResidual
from cnndsl.passes.manager import FixedPoint, PassManager
from cnndsl.passes.plan_memory import PlanMemory
from cnndsl.passes.remove_dropout import RemoveDropout

DEFAULT_LEVEL = 2
MODES = (INFERENCE, TRAINING, EITHER)


def default_pipeline() -> PassManager:
    return PassManager([
        RemoveDropout(),
        FoldConstants(),
        FixedPoint("forward", [
            CommonSubexpressionElimination(),
            DeadCodeElimination(),
            FoldBatchnorm(),           # before the epilogue fusions: conv -> bn -> relu
            FuseBatchnormActivation(),  # after fold_batchnorm: it takes only the batchnorms not folded
            FuseResidual(),            # before fuse_conv_activation: it takes the add's activation too
            FuseConvActivation(),
            FuseDenseActivation(),
            FuseConvPool(),            # after the epilogue fusions: the pool closes the epilogue
        ]),
        Autodiff(),
        FuseBackward(),
        DeadCodeElimination(),
        PlanMemory(),
    ])


def pass_names() -> list[str]:
    return [p.name for p in default_pipeline().passes()]


def optimize(graph: Graph, mode: str = INFERENCE, level: int = DEFAULT_LEVEL, *, disabled=(), verify=None,
             dump_after=(), on_dump=None, losses=(), frozen=(), optimizer: dict | None = None,
             backend: str | None = None, ctx: PassContext | None = None) -> Graph:
    """A rewritten copy of a shape-checked graph (the input is not modified). Pass `ctx` to read
    the per-pass statistics (ctx.stats), the passes run (ctx.ran) and dumps afterwards. With a
    `backend`, fusions fire only into ops that backend has kernels for."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"optimization level must be 0 to {MAX_LEVEL}, got {level}")
    unknown = sorted((set(disabled) | set(dump_after)) - set(pass_names()))
    if unknown:
        raise ValueError(f"unknown pass {', '.join(unknown)}; passes: {', '.join(pass_names())}")
    ctx = ctx or PassContext()
    ctx.mode, ctx.level = mode, level
    ctx.disabled, ctx.dump_after, ctx.on_dump = frozenset(disabled), frozenset(dump_after), on_dump
    ctx.losses, ctx.frozen, ctx.backend = list(losses), frozenset(frozen), _loaded_backend(backend)
    ctx.optimizer = dict(optimizer) if optimizer is not None else None
    if verify is not None:
        ctx.verify = verify
    out = graph.copy()
    default_pipeline().run(out, ctx)
    return out


def _loaded_backend(backend) -> str | None:
    """The name of the backend the fusions ask about: a loaded backend object, or the name of one
    whose launchers are already in the op registry (load_backend registers them). The passes sit
    below the backends and never load one themselves; an unloaded name would look like a backend
    with no kernels at all, and nothing would fuse."""
    if backend is None:
        return None
    name = backend if isinstance(backend, str) else backend.name
    if not any(name in d.kernels for d in all_ops().values()):
        raise ValueError(f"backend {name!r} is not loaded: pass load_backend({name!r}) "
                         f"(cnndsl.backend.executor) as the backend, or call it first")
    return name


def kernel_count(graph: Graph) -> int:
    """Launches that do work: every node but inputs, targets and reshapes (views of their input)."""
    return sum(1 for n in graph.nodes() if n.op not in ("input", "target") and n.op not in VIEW_OPS)
