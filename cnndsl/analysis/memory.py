"""Memory estimates: what a model needs before anything is allocated, and the checks that
refuse a model that cannot fit.

A file can be valid and still impossible to build: `conv 1000000000000` or `dense 999999999999`
is a well-formed layer whose parameters would take petabytes, and numpy's refusal to allocate
them used to surface as `internal error: MemoryError` (or, under overcommit, as an allocation
that succeeds and a process the kernel kills when it is touched). This module estimates, from the
checked graph alone (no allocation, no Numba import):

* the parameter store: every learnable value is held 4 times as float32 (the flat buffer, its
  gradient, the learning-rate and weight-decay multipliers: `FlatParams` in
  cnndsl/backend/params.py), plus the non-learnable buffers (batchnorm statistics);
* the optimizer state: the state arrays its declaration keeps for its options, each a copy of
  the parameters (`OptimizerDef.state` in cnndsl/ops/training/optimizers.py: Adam and AdamW 2,
  SGD with momentum 1, plain SGD none);
* activations: the memory plan (cnndsl/analysis/plan.py) of the inference, evaluation and
  training graphs, per sample, times the batch; plus an upper bound of the kernels' work
  buffers (im2col scratch, kept unfolded inputs, max-pool indices).

The plan is computed on the graphs as written, before the optimization passes: fusions only
remove tensors, so the activation figure is an upper bound of what the executable allocates
(docs/reliability.md, section 3, gives the measured accuracy).

The limit (`memory_limit`) is the smallest of the physical memory, the cgroup's limit and the
address-space limit (`ulimit -v`, less what the process maps already); CNNDSL_MEMORY_LIMIT
(bytes, or with a K/M/G/T suffix) replaces it.

Checks, each a CnnError located at the layer that contributes most:
  check_buildable(program)     parameters, or one sample of inference, exceed the limit: nothing
                               can run (`cnndsl check` errors, `Model` refuses)
  training_warning(program)    a training step at the file's batch will not fit (`cnndsl check`
                               warns with the figures)
  require_fits(program, ...)   train/bench: refuse before allocating, with needed vs available
                               and the largest batch that fits
  check_executable(...)        the executor, before allocating one executable's buffers
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

from cnndsl.analysis.plan import VIEW_OPS, plan_memory, produces_tensor
from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.ir.graph import layers_matching
from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.machine import MAX_BYTES, Limit, human_bytes, memory_limit
from cnndsl.ops.registry import get_op
from cnndsl.ops.training.optimizers import OPTIMIZERS
from cnndsl.training_graph import build_training_graph, loss_specs

FLOAT32 = 4
# FlatParams keeps data, grad, lr_mult and wd_mult, each one float32 per learnable value.
STORE_COPIES = 4
# cnndsl/train/trainer.py's EVAL_BATCH: the held-out set is evaluated in batches of this size (or
# of the training batch when that is smaller), and its executable stays cached beside the training one (tests/test_memory_estimate.py checks
# the two agree; importing the trainer here would load Numba into `cnndsl check`).
EVAL_BATCH = 256
# cnndsl/backend/cpu/conv.py's KEEP_COL_BUDGET_BYTES: the largest unfolded input a training conv
# keeps for its weight gradient (importing the launchers would register every CPU kernel; the
# same test checks the two agree).
KEEP_COL_BUDGET = 64 << 20
# No limit above this is believed: numpy cannot index more bytes, and sizes of 2**63 and more
# overflowed into "Python int too large to convert to C long" before this check existed.

_ITEMSIZE = {"float32": 4, "int64": 8, "int32": 4}
# Graphs with more nodes than this are not planned: the plan's best-fit search grows with the
# number of free slots and took 6.5 s on the 30,000-node training graph of a 5,000-layer network
# (2 cores); their activations are the sum of every tensor instead, an upper bound.
MAX_PLANNED_NODES = 6000


# ---------------------------------------------------------------------------- the estimate

def optimizer_copies(config) -> tuple[str, int]:
    """(description, extra float32 copies of the parameters the optimizer keeps)."""
    o = getattr(config, "optimizer", None)
    if o is None:
        return "sgd", 0
    d = OPTIMIZERS[o.name]
    keys = d.state(d.resolve({k: v for k, v in o.options.items() if k != "lr"}))
    momentum = " with momentum" if o.name == "sgd" and keys else ""
    return o.name + momentum, len(keys)


@dataclass
class ConvLayer:
    """What sizes a conv's work buffers: its op and its geometry (N-independent; conv_transpose's
    is its adjoint conv's, cnndsl/kernels/geometry.py)."""

    op: str
    geo: ConvGeometry

    @property
    def plain_1x1(self) -> bool:
        g = self.geo
        return g.kernel == (1, 1) and g.stride == (1, 1) and not any(g.pads) and g.out_hw == (g.H, g.W)

    def direct(self):
        """The direct conv's forward plan (kernels/cpu/direct.py), or None: im2col serves it."""
        from cnndsl.kernels.cpu import direct as DR

        if self.op == "conv_transpose" or not DR.allowed():
            return None
        g = self.geo
        return DR.plan(g.C, g.F, g.H, g.W, g.KH, g.KW, *g.cpu_args, g.OH, g.OW)


@dataclass
class GraphMemory:
    """One graph's activations per sample, and what sizes its kernels' work buffers."""

    per_sample: int  # bytes of the memory plan's slots for one sample
    planned: bool = True  # False: per_sample is the sum of every tensor (no reuse), an upper bound
    convs: list[ConvLayer] = field(default_factory=list)
    argmax_per_sample: int = 0  # max-pool indices (int32), kept for the backward pass
    fixed: int = 0  # batch-independent work buffers (weights folded with their batchnorm)
    fused_out_per_sample: int = 0  # largest output of a fused layer: the gradient's shared dz scratch
    training: bool = False

    def workspace(self, batch: int) -> int:
        """The kernels' work buffers at `batch`, allocated on an executable's first run
        (RunContext.ws / scratch), sized as the CPU launchers size them (cnndsl/backend/cpu/):
        the im2col scratch shared by every conv (col and tmp, the largest request), the unfolded
        input a training conv keeps for its weight gradient (per layer, when it fits
        KEEP_COL_BUDGET), max-pool indices, folded weights, the fused gradients' dz scratch; for a
        conv the direct kernels serve, their scratch (padded input, weight blocks, and while
        training dy in channel blocks and the per-thread partial weight gradients) instead, and
        Winograd's where it serves the forward or the input gradient (U)."""
        from cnndsl.kernels.cpu import conv as K
        from cnndsl.kernels.cpu import direct as DR
        from cnndsl.kernels.cpu import winograd as WG

        scratch = kept = 0
        direct_x = direct_w = direct_dy = winograd_u = 0
        for layer in self.convs:
            g = layer.geo
            p = layer.direct()
            if p is not None:
                xl, wl = DR.scratch_len(batch, g.C, g.F, g.KH, g.KW, p)
                direct_x, direct_w = max(direct_x, xl), max(direct_w, wl)
                # Winograd's transformed weights (forward; the input gradient's with the channels
                # swapped): it reads x itself, no padded copy
                args = (g.C, g.F, g.H, g.W, g.KH, g.KW, *g.cpu_args, g.OH, g.OW, WG.forced())
                for q, cin, cout in ((WG.plan(*args), g.C, g.F),
                                     (WG.input_grad_plan(*args) if self.training else None, g.F, g.C)):
                    if q is not None and WG.allowed():
                        winograd_u = max(winograd_u, WG.scratch_len(cout, cin))
                if self.training:
                    # the input gradient runs the forward kernel F -> C; the weight gradient's scratch
                    q = DR.wgrad_plan(g.C, g.F, g.H, g.W, g.KH, g.KW, *g.cpu_args, g.OH, g.OW)
                    xl, dl, pl = DR.wgrad_scratch_len(batch, g.C, g.F, g.KH, g.KW, g.OH, g.OW, q, os.cpu_count() or 1)
                    b = DR.backward_data_plan(g.C, g.F, g.H, g.W, g.KH, g.KW, *g.cpu_args, g.OH, g.OW)
                    bx, bw = DR.scratch_len(batch, g.F, g.C, g.KH, g.KW, b) if b else (0, 0)
                    direct_x, direct_w, direct_dy = max(direct_x, xl, bx), max(direct_w, pl, bw), max(direct_dy, dl)
                if layer.op == "fused_conv_pool":  # the conv's full output, then the pool's indices
                    kept += FLOAT32 * batch * g.F * g.OH * g.OW + 4 * batch * g.F * (g.OH // 2) * (g.OW // 2)
                continue
            if layer.op == "conv_transpose":  # the adjoint conv's F and (OH, OW) are the layer's input
                nb, col, tmp = K.conv_transpose2d_workspace(batch, g.F, g.C, g.KH, g.KW, g.G, g.OH, g.OW)
            else:
                nb, col, tmp = K.conv2d_workspace(batch, g.C, g.F, g.KH, g.KW, g.G, g.OH, g.OW)
            scratch = max(scratch, FLOAT32 * (col + tmp))
            if layer.op == "fused_conv_pool" and nb == 0:  # the direct path pools a full-size buffer
                kept += FLOAT32 * batch * g.F * g.OH * g.OW * 2
            length = K.saved_col_len(batch, g.C, g.KH, g.KW, g.OH, g.OW)
            if (self.training and layer.op in ("conv", "fused_conv") and nb > 0 and not layer.plain_1x1
                    and FLOAT32 * length <= KEEP_COL_BUDGET):
                kept += FLOAT32 * length
        dz = FLOAT32 * batch * self.fused_out_per_sample if self.training else 0
        scratch += FLOAT32 * (direct_x + direct_w + direct_dy + winograd_u)
        return scratch + kept + self.argmax_per_sample * batch + self.fixed + dz

    def bytes(self, batch: int) -> int:
        return batch * self.per_sample + self.workspace(batch)


_CONV_OPS = ("conv", "fused_conv", "fused_conv_pool", "conv_transpose")


def graph_memory(graph, training: bool = False, plan=None) -> GraphMemory:
    if plan is None and len(graph) > MAX_PLANNED_NODES:
        g = GraphMemory(_all_tensors_per_sample(graph), planned=False, training=training)
    else:
        plan = plan or plan_memory(graph)
        g = GraphMemory(plan.peak_bytes_per_sample(), training=training)
    for node in graph.nodes():
        if node.type is None:
            continue
        if node.op in _CONV_OPS and "weight" in node.params:
            op = node.op
            if not training and op in ("conv", "fused_conv") and _pooled_after(graph, node.name):
                op = "fused_conv_pool"  # what fuse_conv_pool makes of it at inference: its full map is a work buffer
            g.convs.append(ConvLayer(op, node.geometry))
        if node.op == "maxpool":
            g.argmax_per_sample += 4 * node.type.size
        if node.attrs.get("folded_bn"):
            g.fixed += FLOAT32 * sum(math.prod(s) for s in node.params.values())
        if node.op in ("conv", "dense") or node.op.startswith("fused_") and not node.op.endswith("_grad"):
            # a conv or dense layer is fused with its activation at -O1 and above: count its dz
            g.fused_out_per_sample = max(g.fused_out_per_sample, node.type.size)
    return g


def _pooled_after(graph, name: str) -> bool:
    """Whether a conv's output reaches an unpadded 2x2 stride-2 max pool through nothing but its
    activation and batchnorm, each the only reader of the one before: the chain the inference
    passes fuse into one fused_conv_pool (passes/fuse_conv_pool.py; conservatively, without its
    other guards: an estimate bounds from above)."""
    from cnndsl.kernels.activations import ACTIVATIONS

    passing = {a.name for a in ACTIVATIONS} | {"batchnorm"}
    while True:
        readers = graph.consumers(name)
        if len(readers) != 1:
            return False
        node = graph.node(readers[0])
        if node.op == "maxpool":
            geo = node.geometry
            return geo is not None and geo.kernel == (2, 2) and geo.stride == (2, 2) and not any(geo.pads)
        if node.op not in passing:
            return False
        name = node.name


def _all_tensors_per_sample(graph) -> int:
    return sum(node.type.size * _ITEMSIZE.get(node.type.dtype, 4) for node in graph.nodes()
               if node.type is not None and node.op not in VIEW_OPS and produces_tensor(graph, node.name))


@dataclass
class Estimate:
    """What a model needs, from its checked forward graph and training section."""

    params: int  # learnable values
    buffers: int  # non-learnable values (batchnorm running statistics)
    optimizer: str
    optimizer_copies: int
    inference: GraphMemory
    evaluation: GraphMemory | None  # forward + losses (held-out evaluation), None without a loss
    training: GraphMemory | None  # forward + backward + optimizer step, None without a loss
    largest_params: object  # the Node with the most parameters (or None)
    largest_output: object  # the Node with the largest output per sample
    graph: object = None  # the forward graph

    @property
    def store_bytes(self) -> int:
        return FLOAT32 * (STORE_COPIES * self.params + self.buffers)

    @property
    def optimizer_bytes(self) -> int:
        return FLOAT32 * self.optimizer_copies * self.params

    def predicting(self, batch: int) -> int:
        """Parameters plus one inference executable at `batch`."""
        return self.store_bytes + self.inference.bytes(batch)

    def training_step(self, batch: int, eval_batch: int | None = None) -> int:
        """A training run: parameters, optimizer state, the training executable at `batch` and
        the held-out evaluation's at `eval_batch` (None: the trainer's, min(EVAL_BATCH, batch)),
        which the model keeps cached side by side."""
        eval_batch = eval_batch_for(batch) if eval_batch is None else eval_batch
        total = self.store_bytes + self.optimizer_bytes
        if self.training is not None:
            total += self.training.bytes(batch)
        if self.evaluation is not None and eval_batch:
            total += self.evaluation.bytes(eval_batch)
        return total


def estimate(program, frozen=None, training: bool = True) -> Estimate:
    """The estimate of a loaded program (shape-checked); allocates nothing. `training=False`
    skips the evaluation and training graphs (what `Model` checks: it may never train)."""
    graph = program.graph
    config = program.training
    name, copies = optimizer_copies(config)
    params = buffers = 0
    largest_params = largest_output = None
    most_params = most_out = -1
    for node in graph.nodes():
        n = sum(math.prod(s) for s in node.params.values())
        params += n
        buffers += sum(math.prod(s) for s in (node.meta.get("buffers") or {}).values())
        if n > most_params:
            largest_params, most_params = node, n
        size = node.type.size if node.type is not None else 0
        if size > most_out:
            largest_output, most_out = node, size
    evaluation = train = None
    losses = _losses(program) if training else []
    if losses:
        if frozen is None:
            frozen = _frozen(program)
        try:
            train = graph_memory(build_training_graph(graph, losses, frozen), training=True)
        except CnnError:
            train = None  # the heads take no loss of this kind: inference only
    inference = graph_memory(graph)
    if train is not None:
        # The evaluation graph is the forward graph plus one target and one loss value per head,
        # all live to the end: the inference plan plus the targets (no third graph to copy and plan).
        evaluation = replace(inference, per_sample=inference.per_sample + _target_bytes(graph, losses))
    return Estimate(params, buffers, name, copies, inference, evaluation, train,
                    largest_params if most_params > 0 else None, largest_output, graph)


def _target_bytes(graph, losses) -> int:
    total = 0
    for spec in losses:
        shape, dtype = get_op(spec.kind).target(graph.node(graph.heads[spec.head]).type)
        total += math.prod(shape) * _ITEMSIZE.get(dtype, 4) + FLOAT32  # the target and the loss value
    return total


def _losses(program):
    try:
        return loss_specs(program)
    except (CnnError, AttributeError):
        return []


def _frozen(program) -> set:
    if program.training is None or not program.training.freeze:
        return set()
    return set(layers_matching(program.graph, program.training.freeze))


# ---------------------------------------------------------------------------- diagnostics

def _at(node, severity: str, message: str, details: list[str], help: str | None, code: str) -> Diagnostic:
    """A diagnostic at a layer, with the block use sites as notes (as ShapeContext does)."""
    span = getattr(node, "span", None)
    notes = [(site, "in the block used here") for site in getattr(node, "trace", ())]
    return Diagnostic(severity, message, span, details, help, notes, code)


def _describe(node) -> str:
    return f"{node.op} '{node.name}'"


def _param_details(est: Estimate) -> list[str]:
    out = [f"parameters: {est.params:,} float32 values = {human_bytes(FLOAT32 * est.params)}, "
           f"held {STORE_COPIES} times (values, gradients, learning-rate and weight-decay multipliers): "
           f"{human_bytes(est.store_bytes)}"]
    node = est.largest_params
    if node is not None:
        n = sum(math.prod(s) for s in node.params.values())
        out.append(f"largest: {_describe(node)} with {n:,} parameters ({human_bytes(FLOAT32 * n)} each copy)")
        src = _input_of(est, node)
        if src is not None and node.op in ("dense", "fused_dense"):
            out.append(f"its input, {_describe(src)}, has {src.type.size:,} values per sample")
    return out


def _input_of(est: Estimate, node):
    if est.graph is None:
        return None
    srcs = est.graph.inputs_of(node.name)
    return est.graph.node(srcs[0]) if srcs and est.graph.node(srcs[0]).type is not None else None


def _smaller_params(est: Estimate) -> str:
    """How to shrink the layer with the most parameters: fewer filters or units; for a dense
    layer fed by a huge flatten, a smaller input (what a user usually got wrong)."""
    node = est.largest_params
    if node.op in ("dense", "fused_dense"):
        src = _input_of(est, node)
        if src is not None and src.type.size > node.type.size:
            big = est.largest_output
            return (f"fewer units in {_describe(node)}, or a smaller input to it (fewer channels, or pooling "
                    f"before it; the largest output is {_describe(big)})")
        return f"fewer units in {_describe(node)}"
    return f"make {_describe(node)} smaller (fewer filters, a smaller kernel)"


def _activation_detail(est: Estimate) -> str:
    node = est.largest_output
    return (f"largest output: {_describe(node)}, {'x'.join(map(str, node.type.shape))} = "
            f"{node.type.size:,} values ({human_bytes(FLOAT32 * node.type.size)}) per sample")


def check_buildable(program, est: Estimate | None = None, limit: Limit | None = None) -> Estimate:
    """Raise a CnnError when the parameters, or one sample of inference, cannot fit in memory:
    nothing could run. Returns the estimate."""
    est = est or estimate(program)
    limit = limit or memory_limit()
    if est.store_bytes > limit.bytes:
        node = est.largest_params or est.largest_output
        raise CnnError([_at(
            node, "error",
            f"the parameters of this network need {human_bytes(est.store_bytes)} of memory; "
            f"this machine allows {human_bytes(limit.bytes)}",
            _param_details(est) + [f"memory limit: {limit.describe()}"],
            _smaller_params(est) if est.largest_params is not None else None,
            "memory-parameters")])
    one = est.predicting(1)
    if one > limit.bytes:
        node = est.largest_output
        raise CnnError([_at(
            node, "error",
            f"one sample of inference needs {human_bytes(one)} of memory; this machine allows "
            f"{human_bytes(limit.bytes)}",
            [_activation_detail(est),
             f"planned activations: {human_bytes(est.inference.per_sample)} per sample; parameters "
             f"and their copies: {human_bytes(est.store_bytes)}",
             f"memory limit: {limit.describe()}"],
            f"make the output of {_describe(node)} smaller (fewer channels, a smaller input, "
            f"a stride or pooling before it)",
            "memory-activations")])
    return est


def eval_batch_for(batch: int) -> int:
    """The batch the trainer evaluates the held-out split at (cnndsl.train.trainer.Trainer)."""
    return min(EVAL_BATCH, batch)


def _training_breakdown(est: Estimate, batch: int, eval_batch: int | None, training: bool = True,
                        inference_batches=()) -> str:
    eval_batch = eval_batch_for(batch) if eval_batch is None else eval_batch
    parts = [f"parameters and copies {human_bytes(est.store_bytes)}"]
    if training and est.optimizer_bytes:
        parts.append(f"{est.optimizer} state {human_bytes(est.optimizer_bytes)}")
    if training and est.training is not None:
        parts.append(f"training activations at batch {batch:,} {human_bytes(est.training.bytes(batch))}")
    if training and est.evaluation is not None and eval_batch:
        parts.append(f"held-out evaluation at batch {eval_batch} {human_bytes(est.evaluation.bytes(eval_batch))}")
    for n in inference_batches:
        parts.append(f"inference at batch {n or batch:,} {human_bytes(est.inference.bytes(n or batch))}")
    return ", ".join(parts)


def largest_batch(needed, limit: int) -> int:
    """The largest batch b with needed(b) <= limit, needed growing with b (0 when 1 does not fit)."""
    if needed(1) > limit:
        return 0
    lo, hi = 1, 2
    while needed(hi) <= limit and hi < 2**40:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if needed(mid) <= limit else (lo, mid)
    return lo


def _refusal(est: Estimate, severity: str, what: str, total: int, breakdown: str, needed, limit: Limit,
             flag: str, code: str) -> Diagnostic:
    """needed vs allowed, located at the layer that contributes most: the one with the most
    parameters when parameters and optimizer state are most of the total, else the largest output."""
    fixed = est.store_bytes + est.optimizer_bytes
    by_params = est.largest_params is not None and (fixed > limit.bytes or 2 * fixed > total)
    node = est.largest_params if by_params else est.largest_output
    detail = _param_details(est)[1:] if by_params else [_activation_detail(est)]
    best = largest_batch(needed, limit.bytes)
    smaller = (_smaller_params(est) if by_params else
               f"make the output of {_describe(node)} smaller (fewer channels, or a stride or pooling before it)")
    verb = "needs" if severity == "error" else "would need"
    return _at(node, severity,
               f"{what} {verb} about {human_bytes(total)} of memory; this machine allows {human_bytes(limit.bytes)}",
               [breakdown] + detail + [f"memory limit: {limit.describe()}"],
               f"{flag} {best:,} fits; or {smaller}" if best else smaller, code)


def training_problem(program, batch: int, est: Estimate | None = None, limit: Limit | None = None,
                     eval_batch: int | None = None, severity: str = "error", flag: str = "--batch"):
    """A Diagnostic when a training run at `batch` needs more than the limit, else None."""
    est = est or estimate(program)
    limit = limit or memory_limit()
    if est.training is None:
        return None
    total = est.training_step(batch, eval_batch)
    if total <= limit.bytes:
        return None
    return _refusal(est, severity, f"training at batch {batch:,}", total, _training_breakdown(est, batch, eval_batch),
                    lambda b: est.training_step(b, eval_batch), limit, flag, "memory-training")


def training_warning(program, est: Estimate | None = None, limit: Limit | None = None):
    """For `cnndsl check`: a warning when a training step at the file's batch will not fit."""
    if program.training is None:
        return None
    return training_problem(program, program.training.batch, est, limit, severity="warning", flag="batch")


def require_fits(program, batch: int, training: bool, inference_batches=(1,), eval_batch: int | None = None,
                 est: Estimate | None = None, limit: Limit | None = None) -> Estimate:
    """train/bench: raise a CnnError, before anything is allocated, when the run cannot fit.
    `training`: a training executable at `batch` and the evaluation's at `eval_batch`;
    `inference_batches`: the inference executables the run keeps beside them (0 means `batch`)."""
    limit = limit or memory_limit()
    est = check_buildable(program, est, limit)
    training = training and est.training is not None

    def needed(b: int) -> int:
        total = est.training_step(b, eval_batch) if training else est.store_bytes
        return total + sum(est.inference.bytes(n or b) for n in inference_batches)

    total = needed(batch)
    if total > limit.bytes:
        what = f"{'training' if training else 'inference'} at batch {batch:,}"
        raise CnnError([_refusal(est, "error", what, total,
                                 _training_breakdown(est, batch, eval_batch, training, inference_batches),
                                 needed, limit, "--batch", "memory-training" if training else "memory-inference")])
    return est


def check_model(program) -> Estimate:
    """`Model.__init__`, before the parameter store is allocated: the parameters and one sample
    of inference must fit (training is checked when a training executable is built)."""
    return check_buildable(program, estimate(program, training=False))


def check_store(graph, shapes: dict) -> None:
    """`ParamStore`, before its flat buffers are allocated: the same parameter check as
    `check_buildable`, for a graph handed over without a program (np.prod of a tensor's shape in
    int64, as the flat layout computes sizes, wraps around at 2**63 elements; this check sees
    Python ints first)."""
    params = sum(math.prod(s) for s in shapes.values())
    buffers = sum(math.prod(s) for node in graph.nodes() for s in (node.meta.get("buffers") or {}).values())
    needed = FLOAT32 * (STORE_COPIES * params + buffers)
    limit = memory_limit()
    if needed <= limit.bytes:
        return
    node = max(graph.nodes(), key=lambda n: sum(math.prod(s) for s in n.params.values()))
    n = sum(math.prod(s) for s in node.params.values())
    raise CnnError([_at(
        node, "error", f"the parameters of this network need {human_bytes(needed)} of memory; this machine allows "
                       f"{human_bytes(limit.bytes)}",
        [f"parameters: {params:,} float32 values, held {STORE_COPIES} times",
         f"largest: {_describe(node)} with {n:,} parameters", f"memory limit: {limit.describe()}"],
        f"make {_describe(node)} smaller", "memory-parameters")])


def check_executable(graph, batch: int, store, backend, plan=None) -> None:
    """Before an Executable allocates its buffers: refuse when they and the parameter store
    cannot fit in host memory. A device backend's buffers are refused only when no array could
    have their size (its memory is not queried here)."""
    mem = graph_memory(graph, training="optimizer_step" in graph.attrs, plan=plan)
    needed = mem.bytes(batch)
    held = 0
    if store is not None:
        p = store.params
        held = (sum(a.nbytes for a in (p.data, p.grad, p.lr_mult, p.wd_mult))
                + sum(b.nbytes for b in store.buffers.values()))
    if getattr(backend, "host", True):
        limit = memory_limit()
    else:
        limit = Limit(MAX_BYTES, "the largest size an array can have")
    if limit.net or not getattr(backend, "host", True):
        held = 0  # already mapped, so already subtracted from the limit (or not in device memory)
    if needed + held <= limit.bytes:
        return
    typed = [n for n in graph.nodes() if n.type is not None]
    biggest = max(typed, key=lambda n: n.type.size, default=None)
    fit = largest_batch(mem.bytes, limit.bytes - held)
    kind = ("a training step" if "optimizer_step" in graph.attrs else
            "an evaluation step" if graph.attrs.get("losses") else "inference")
    beside = f" beside {human_bytes(held)} of parameters" if held else ""
    raise CnnError([_at(
        biggest, "error",
        f"{kind} of '{graph.name.split('.')[0]}' at batch {batch:,} needs {human_bytes(needed)} of buffers"
        f"{beside}; this machine allows {human_bytes(limit.bytes)}",
        [f"planned activations: {human_bytes(mem.per_sample)} per sample, work buffers "
         f"{human_bytes(mem.workspace(batch))}",
         f"largest tensor: {_describe(biggest)}, {human_bytes(FLOAT32 * biggest.type.size)} per sample"
         if biggest is not None else "no tensors",
         f"memory limit: {limit.describe()}"],
        f"a batch of {fit:,} fits" if fit else "make the largest layers smaller",
        "memory-executable")])


# ---------------------------------------------------------------------------- `cnndsl shapes`

def memory_lines(program, est: Estimate | None = None, limit: Limit | None = None) -> list[str]:
    """Peak activation memory per sample with the memory plan, next to one buffer per tensor,
    and the estimate of a training step at the file's batch against this machine's limit."""
    graphs = [("inference", program.graph)]
    try:
        graphs.append(("training step", build_training_graph(program.graph, loss_specs(program))))
    except CnnError:
        pass  # no trainable loss for these heads: inference only
    lines = []
    for what, graph in graphs:
        plan = plan_memory(graph)
        lines.append(f"Planned activation memory, {what}: {human_bytes(plan.peak_bytes_per_sample())} per sample "
                     f"({human_bytes(plan.unplanned_bytes_per_sample(graph))} without buffer reuse)")
    est = est or estimate(program)
    limit = limit or memory_limit()
    lines.append(f"Estimated memory, parameters: {human_bytes(est.store_bytes)} "
                 f"(values, gradients, learning-rate and weight-decay multipliers)")
    if program.training is not None and est.training is not None:
        batch = program.training.batch
        lines.append(f"Estimated memory, training at batch {batch:,}: {human_bytes(est.training_step(batch))} "
                     f"({_training_breakdown(est, batch, None)})")
    lines.append(f"Memory limit: {limit.describe()}")
    if est.store_bytes > limit.bytes or est.predicting(1) > limit.bytes:
        lines.append("Does not fit: this network cannot be built here (`cnndsl check` says where and why)")
    elif program.training is not None and est.training_step(program.training.batch) > limit.bytes:
        lines.append(f"Does not fit: training at batch {program.training.batch:,} needs more than the limit "
                     f"(`cnndsl check` gives the largest batch that fits)")
    return lines
