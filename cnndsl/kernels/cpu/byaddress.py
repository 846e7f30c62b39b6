"""Call a compiled kernel by address, so that its caller does not compile it again.

Numba links a callee's LLVM IR into every caller's module and optimizes and generates machine code
for it again there (CPUCodeLibrary.finalize, Numba 0.68); a parallel driver does it twice, in its
parfor's gufunc and in itself. The direct convolution's drivers hold one loop each and call a
per-image (or per-band) function: `_wgrad_parallel` took 3.3 to 3.9 CPU s to compile with its
callees already compiled, `_bands_parallel` 1.9 to 2.1, against 0.26 s for a parallel driver whose
callee is trivial (2-core AMD EPYC, 2026-12-03). microkernel.call_tile does this for the tiles;
this module does it for any kernel:

    _wgrad_image_at = by_address(_wgrad_image)   # at import, beside the kernel
    ...
    _wgrad_image_at(x, dy, ...)                  # in a kernel: the same arguments and result

`by_address(kernel)` is an intrinsic with the kernel's parameters. Typing it compiles (or loads
from the cache) the kernel for the argument types and puts the address of its C wrapper (Numba
makes one for every compiled function) into a slot in this process's memory, which LLVM's symbol
table knows by a name derived from the kernel and the types; the caller's machine code loads the
slot and calls through it, and names the slot, never an address, so it stays cacheable. A process
that loads such a caller from the cache fills the slot first: the intrinsic adds `install` for
it to the caller's `reload_init`, which Numba runs before loading (kernel_cache.keep_reload_init
keeps it for callers compiled against a cached caller).

The C wrapper does not pass exceptions on (Numba reports one as unraisable and returns): use it
for kernels that raise nothing once their launcher's checks passed. Under NUMBA_BOUNDSCHECK
(common.BOUNDSCHECK), whose IndexError must reach the test, `by_address` returns the kernel itself:
a direct call.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib
import inspect

import llvmlite.binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from cnndsl.kernels.cpu.common import BOUNDSCHECK

_SLOTS: dict[str, ctypes.c_void_p] = {}
_INSTALLERS: dict[str, functools.partial] = {}


def _symbol(module: str, name: str, argtys: tuple) -> str:
    key = f"{module}.{name}{tuple(str(t) for t in argtys)}"
    return "cnndsl_entry_" + hashlib.sha256(key.encode()).hexdigest()[:20]


def _slot(symbol: str) -> ctypes.c_void_p:
    slot = _SLOTS.get(symbol)
    if slot is None:
        addr = ll.address_of_symbol(symbol)
        if addr:  # this module imported again: the machine code loaded already names that slot
            slot = ctypes.c_void_p.from_address(addr)
        else:
            slot = ctypes.c_void_p(0)
            ll.add_symbol(symbol, ctypes.addressof(slot))
        _SLOTS[symbol] = slot
    return slot


def install(module: str, name: str, argtys: tuple) -> None:
    """Compile (or load) kernel `module.name` for argtys and put its C wrapper's address in its
    slot. Idempotent."""
    slot = _slot(_symbol(module, name, argtys))
    if slot.value:
        return
    kernel = getattr(importlib.import_module(module), name)
    if argtys not in kernel.overloads:
        kernel.compile(argtys)
    cres = kernel.overloads[argtys]
    address = cres.library.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name)
    if not address:  # compiled without its C entry (no_cfunc_wrapper)
        raise RuntimeError(f"{module}.{name} has no C entry to call by address")
    slot.value = address


def _typer(kernel, typingctx, args):
    fn = kernel.py_func
    module, name = fn.__module__, fn.__name__
    argtys = tuple(types.unliteral(t) for t in args)
    install(module, name, argtys)  # a caller compiled in this process runs at once
    cres = kernel.overloads[argtys]
    restype = cres.signature.return_type
    symbol = _symbol(module, name, argtys)
    installer = _INSTALLERS.setdefault(symbol, functools.partial(install, module, name, argtys))

    def codegen(context, builder, signature, cargs):
        context.active_code_library._reload_init.add(installer)
        vals = [context.cast(builder, v, t, u) for v, t, u in zip(cargs, signature.args, argtys)]
        out = call_entry(context, builder, symbol, f"{module}.{name}", argtys, restype, vals)
        return context.get_dummy_value() if restype == types.none else out

    return restype(*args), codegen


def call_entry(context, builder, symbol: str, what: str, argtys: tuple, restype, vals):
    """Emit a call of the C entry in slot `symbol` (argtys -> restype) with vals; abort with a
    message if the slot is empty (its installer never ran). Shared with parallel.py's trampolines."""
    mod = builder.module
    gv = mod.globals.get(symbol)
    if gv is None:
        gv = ir.GlobalVariable(mod, ir.IntType(8).as_pointer(), symbol)  # external: resolved by name
    fp = builder.load(gv)
    with builder.if_then(cgutils.is_null(builder, fp), likely=False):
        cgutils.printf(builder, f"cnndsl: kernel entry {what} not installed (byaddress.install)\n")
        abort = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), []), "abort")
        builder.call(abort, [])
        builder.unreachable()
    fnty = ir.FunctionType(context.get_value_type(restype), [context.get_value_type(t) for t in argtys])
    return builder.call(builder.bitcast(fp, fnty.as_pointer()), vals)


def by_address(kernel):
    """An intrinsic that calls `kernel` (an @kernel dispatcher) through its installed C entry,
    with the kernel's own parameters; the kernel itself under NUMBA_BOUNDSCHECK."""
    if BOUNDSCHECK:
        return kernel
    params = list(inspect.signature(kernel.py_func).parameters)
    names = ", ".join(params)
    src = f"def {kernel.py_func.__name__}_at(typingctx, {names}):\n    return _typer(kernel, typingctx, ({names},))\n"
    ns = {"_typer": _typer, "kernel": kernel}
    exec(src, ns)  # noqa: S102 - a fixed-arity typer: Numba's intrinsics take no *args
    return intrinsic(ns[f"{kernel.py_func.__name__}_at"])
