"""One parallel loop for every kernel: `parallel_items(item)` runs item(t, *args) for t in range(n)
on Numba's threads, through a single compiled prange loop (`_launch`) shared by all kernels.

Why: a `parallel=True` kernel is the most expensive thing Numba compiles. Each prange loop is
lowered into a gufunc compiled by a pipeline of its own, plus its launching code and wrappers:
0.7 CPU s per parallel kernel on average in LeNet-5's cold first step (Numba's `pipeline_times`:
7.3 of 25 CPU s in `native_parfor_lowering` for about ten kernels, 2026-12-03), against 0.2 s for
a serial one. Here the loop is compiled once, for every kernel and model, and a kernel that runs
in parallel is a serial driver that packs its arguments and calls it:

    _pad_items = parallel_items(_pad_chunk)      # at import; _pad_chunk(t, a, b, ...) a @kernel
    ...
    _pad_items(n, a, b, ...)                     # in a kernel: item(t, a, b, ...) for t < n

The intrinsic stores the arguments in a struct on the caller's stack and passes `_launch` its
address and that of a small trampoline it emits in the caller's module, which loads the struct
and calls the item's C entry (byaddress.py: filled at typing and by the caller's reload_init).
_launch is called by address too, so no caller links (and compiles again) its parallel code.

The items should be few and coarse (a chunk of planes or rows each: `chunks`): Numba splits a
prange's range into one equal block per thread, and a call through a C entry costs more than an
inlined call (about 0.3 us with array arguments, measured for the padding's planes). An item's
element loops should index with np.uint64 (tensor._elementwise): `range(t * per, hi)` is an
index Numba cannot prove non-negative, and its wrap-around select left add2's loop scalar (4.5
ms instead of 0.5 to 0.8 for 4 M elements). An item must not launch items itself (nested
parallel loops are not supported by every Numba threading layer). The item
must not raise (a C entry reports an exception as unraisable and returns); under
NUMBA_BOUNDSCHECK (common.BOUNDSCHECK) the intrinsic is replaced by a serial loop of direct calls,
so that an IndexError reaches the caller (a checked run has one thread anyway: kernel_cache.py).
"""
from __future__ import annotations

import hashlib
import inspect

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from cnndsl.kernels.cpu import byaddress
from cnndsl.kernels.cpu.common import BOUNDSCHECK, kernel, parallel_kernel

_I64 = ir.IntType(64)
_ITEM = ir.FunctionType(ir.VoidType(), [_I64, _I64])  # trampoline(t, context address)


@intrinsic
def _call_item(typingctx, fn, t, ctx):
    """fn(t, ctx): fn the address of a trampoline."""
    def codegen(context, builder, signature, args):
        builder.call(builder.inttoptr(args[0], _ITEM.as_pointer()), [args[1], args[2]])
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64), codegen


@parallel_kernel
def _launch(fn, ctx, n):
    """The one prange loop: trampoline fn(t, ctx) for t in range(n)."""
    for t in prange(n):
        _call_item(fn, np.int64(t), ctx)


_launch_at = byaddress.by_address(_launch)
_LAUNCH_TYPES = (types.int64, types.int64, types.int64)


def _threads_ready() -> None:
    """Numba's thread pool started, which registers the `get_num_threads` symbol with LLVM."""
    from numba.np.ufunc.parallel import _launch_threads

    _launch_threads()


@intrinsic
def _num_threads(typingctx):
    """numba.get_num_threads() by the symbol's name: Numba's own overload embeds the function's
    address, which its cache refuses ("dynamic globals"); this one is cached, and the caller's
    reload_init starts the pool (and so registers the symbol) before it is loaded."""
    def codegen(context, builder, signature, args):
        context.active_code_library._reload_init.add(_threads_ready)
        _threads_ready()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "get_num_threads")
        return builder.sext(builder.call(fn, []), _I64)

    return types.int64(), codegen


@kernel
def chunks(n):
    """(items, per): n units cut into one item of `per` consecutive units per thread
    (numba.get_num_threads(), this thread's setting); (0, 1) for no units."""
    if n <= 0:
        return 0, 1
    items = min(_num_threads(), n)
    per = (n + items - 1) // items
    return (n + per - 1) // per, per


def _trampoline(module: ir.Module, context, name: str, symbol: str, argtys: tuple, restype) -> ir.Function:
    """void name(i64 t, i64 ctx): load the struct of argtys[1:] at ctx, call the C entry in slot
    `symbol` with (t, its fields)."""
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    fn = ir.Function(module, _ITEM, name)
    fn.linkage = "linkonce_odr"
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    t, ctx = fn.args
    vals = [context.get_value_type(a) for a in argtys[1:]]
    struct = ir.LiteralStructType(vals)
    p = builder.inttoptr(ctx, struct.as_pointer())
    fields = [builder.load(cgutils.gep_inbounds(builder, p, 0, i)) for i in range(len(vals))]
    # Arrays without their meminfo (and parent): the caller holds them for the whole launch, and
    # every view an item takes (x[n, c]) would otherwise increment and decrement the one shared
    # reference count atomically from all threads at once. That cache line, bounced between the
    # cores, made LeNet-5's second max pool 8x slower (0.05 -> 0.40 ms); Numba's own parallel
    # loops pass their gufuncs arrays without a meminfo, and so does this.
    for i, a in enumerate(argtys[1:]):
        if isinstance(a, types.Array):
            ty = fields[i].type
            fields[i] = builder.insert_value(fields[i], ir.Constant(ty.elements[0], None), 0)
            fields[i] = builder.insert_value(fields[i], ir.Constant(ty.elements[1], None), 1)
    byaddress.call_entry(context, builder, symbol, name, argtys, restype, [t] + fields)
    builder.ret_void()
    return fn


def _typer(item, typingctx, n, args):
    if not isinstance(n, types.Integer):
        return None
    argtys = (types.int64,) + tuple(types.unliteral(a) for a in args)
    fn = item.py_func
    symbol = byaddress._symbol(fn.__module__, fn.__name__, argtys)
    # the item's C entry: compiled (or loaded) now, and installed again by the caller's reload_init
    item_sig, item_codegen = byaddress._typer(item, typingctx, argtys)
    launch_sig, launch_codegen = byaddress._typer(_launch, typingctx, _LAUNCH_TYPES)
    restype = item_sig.return_type
    tramp = "cnndsl_items_" + hashlib.sha256(symbol.encode()).hexdigest()[:20]

    def codegen(context, builder, signature, cargs):
        # the item's installer in the caller's reload_init (its codegen adds it; the call is not emitted)
        context.active_code_library._reload_init.add(byaddress._INSTALLERS[symbol])
        f = _trampoline(builder.module, context, tramp, symbol, argtys, restype)
        vals = [context.cast(builder, v, t, u) for v, t, u in zip(cargs[1:], signature.args[1:], argtys[1:])]
        struct = ir.LiteralStructType([context.get_value_type(a) for a in argtys[1:]])
        slot = cgutils.alloca_once(builder, struct)
        for i, v in enumerate(vals):
            builder.store(v, cgutils.gep_inbounds(builder, slot, 0, i))
        ctx = builder.ptrtoint(slot, _I64)
        n64 = context.cast(builder, cargs[0], signature.args[0], types.int64)
        launch_codegen(context, builder, launch_sig, [builder.ptrtoint(f, _I64), ctx, n64])
        return context.get_dummy_value()

    del item_codegen
    return types.void(n, *args), codegen


def parallel_items(item):
    """An intrinsic f(n, *args) that runs item(t, *args) for t in range(n) in parallel (see the
    module docstring); `item` an @kernel whose first parameter is the item's index (int64).
    Under NUMBA_BOUNDSCHECK, a serial kernel of direct calls."""
    params = list(inspect.signature(item.py_func).parameters)[1:]
    names = ", ".join(params)
    name = f"{item.py_func.__name__}_items"
    if BOUNDSCHECK:  # (underscored names: the item's own parameters may be called n or t)
        src = (f"def {name}(_n, {names}):\n    for _t in range(_n):\n"
               f"        _item(_np.int64(_t), {names})\n")
        ns = {"_item": item, "_np": np}
        exec(src, ns)  # noqa: S102 - a fixed-arity loop: the item's own parameters
        return njit(ns[name])  # not cached: no source file (checked runs only)
    src = f"def {name}(_typingctx, _n, {names}):\n    return _typer(_item, _typingctx, _n, ({names},))\n"
    ns = {"_typer": _typer, "_item": item}
    exec(src, ns)  # noqa: S102 - a fixed-arity typer: Numba's intrinsics take no *args
    return intrinsic(ns[name])
