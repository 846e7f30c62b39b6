"""A static profile of the CUDA GEMM kernels, without a GPU: registers, spills and the SASS
instruction mix of each loop, for the machine code the real target would run.

    python benchmarks/cuda_sass.py                       # the default set below
    python benchmarks/cuda_sass.py fwd:p128x64:mk bwd_weight:l128x64:kk ...

Each kernel is compiled by numba's CUDA target to PTX (NVVM, no driver needed), by `ptxas` to
an sm_90 cubin (`-v` gives registers, spills, shared memory) and disassembled by `nvdisasm`.
A loop is a backward branch in the SASS; for each one the script prints its instruction
count and mix. The FFMA share of the main loop bounds the FP32 efficiency from above (an SM
issues one warp instruction per scheduler per cycle; every non-FFMA instruction takes a slot).
It is not a timing: memory latency, occupancy and bank conflicts are not in it.

Needs, beside this project: numba-cuda with the CUDA 12 toolkit wheels (`pip install
"numba-cuda[cu12]"`, which has NVVM and ptxas) and nvdisasm (`pip download
nvidia-cuda-nvdisasm` and unzip it, or a CUDA toolkit), found on PATH, in the installed
`nvidia` packages or at $NVDISASM. Run it outside NUMBA_ENABLE_CUDASIM.
"""
from __future__ import annotations

import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODES = {"fwd": 0, "bwd_data": 1, "bwd_weight": 2}
DEFAULT = ["fwd:l128x64:mk", "fwd:p128x64:mk", "fwd:p128x128:mk", "bwd_data:l128x64:mk", "bwd_data:p128x64:mk",
           "bwd_weight:m64x32:kk", "bwd_weight:p64x32:kk"]


def _tool(name: str) -> str:
    env = os.environ.get(name.upper())
    if env:
        return env
    found = shutil.which(name)
    if found:
        return found
    for site in sys.path:
        hits = glob.glob(os.path.join(site, "nvidia", "**", "bin", name), recursive=True)
        if hits:
            return sorted(hits)[-1]
    sys.exit(f"cuda_sass: {name} not found (PATH, the nvidia wheels, ${name.upper()}); see the docstring")


def sass(kernel, cc=(9, 0)) -> tuple[str, str]:
    """(ptxas's resource line, the SASS text) of one cnndsl Kernel."""
    from numba import cuda

    ptx, _ = cuda.compile_ptx(kernel.py_func, kernel.signature, cc=cc)
    with tempfile.TemporaryDirectory() as d:
        Path(d, "k.ptx").write_text(ptx)
        r = subprocess.run([_tool("ptxas"), f"-arch=sm_{cc[0]}{cc[1]}", "-v", "-o", f"{d}/k.cubin", f"{d}/k.ptx"],
                           capture_output=True, text=True, check=True)
        info = "; ".join(line.split(":", 1)[-1].strip() for line in r.stderr.splitlines()
                         if "registers" in line or "spill" in line)
        text = subprocess.run([_tool("nvdisasm"), "-c", f"{d}/k.cubin"], capture_output=True, text=True,
                              check=True).stdout
    return info, text


def loops(text: str):
    """[(first, last, Counter of opcodes)] of every backward branch's body, and the count of all
    instructions."""
    labels, ins = {}, []
    for line in text.splitlines():
        m = re.match(r"^\s*\.(L_x_\d+):", line)
        if m:
            labels[m.group(1)] = len(ins)
            continue
        m = re.search(r"/\*[0-9a-f]{4,6}\*/\s+(.*?);", line)
        if m:
            ins.append(m.group(1))
    out = []
    for i, op in enumerate(ins):
        m = re.search(r"BRA\s+`?\(?\.?(L_x_\d+)", op)
        if m and m.group(1) in labels and labels[m.group(1)] <= i:
            body = ins[labels[m.group(1)]:i + 1]
            out.append((labels[m.group(1)], i, collections.Counter(
                re.sub(r"^@!?U?P\w+\s+", "", b).split()[0].split(".")[0] for b in body)))
    return out, len(ins)


def kernel_of(spec: str):
    from cnndsl.kernels.cuda import gemm, igemm

    mode, tile, orders = spec.split(":")
    a_kfast, b_kfast = orders[0] == "k", orders[1] == "k"
    if tile in igemm.TILES:
        return igemm.pipelined_kernel(MODES[mode], tile, a_kfast, b_kfast, True)
    return gemm.gemm_kernel(MODES[mode], tile, a_kfast, b_kfast)


def tile_of(spec: str):
    from cnndsl.kernels.cuda import gemm

    return gemm.tile_spec(spec.split(":")[1])


def main() -> int:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("cuda_sass: run it without NUMBA_ENABLE_CUDASIM", file=sys.stderr)
        return 2
    from cnndsl.kernels.cuda.typecheck import _patch_device_lookup

    _patch_device_lookup()
    for spec in sys.argv[1:] or DEFAULT:
        k = kernel_of(spec)
        info, text = sass(k)
        found, total = loops(text)
        print(f"{spec:24s} {k.name}: {total} instructions; {info}")
        for first, last, c in sorted(found, key=lambda t: t[0]):
            n = sum(c.values())
            if c["FFMA"] or c["LDG"]:  # the main loops (the epilogue's are activations)
                mix = ", ".join(f"{a} {b}" for a, b in c.most_common(10))
                print(f"    loop [{first}, {last}]: {n} instructions, FFMA {c['FFMA']} ({c['FFMA'] / n:.0%}): {mix}")
        def inner_of(loop):  # the rank-1 update loops inside a loop: FFMA from shared memory, no global access
            return [x for x in found if loop[0] < x[0] and x[1] < loop[1] and x[2]["FFMA"] and x[2]["LDS"]
                    and not x[2]["LDG"] and not x[2]["STG"]]

        main_loop = [x for x in found if x[2]["LDG"] and inner_of(x)]
        t = tile_of(spec)
        step = t.TM * t.TN * t.BK  # a thread's FFMA per reduction step
        if main_loop:  # the loop with the global loads, holding one pass of its inner loop
            first, last, c = max(main_loop, key=lambda x: x[1] - x[0])
            inner = inner_of((first, last, c))
            per_pass = sum(x[2]["FFMA"] for x in inner)
            runs = (step - c["FFMA"]) // per_pass  # the inner loop's further passes in one step
            n = sum(c.values()) + runs * sum(sum(x[2].values()) for x in inner)
            print(f"    one reduction step of {t.BK} (the main loop, its inner loop {runs} more times): "
                  f"{n} instructions, {step} FFMA ({step / n:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
