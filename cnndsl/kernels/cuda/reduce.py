"""Reductions: per-channel sums (bias gradients, global average pooling), batchnorm, scalar sums.

Per-channel reductions over an (N, C, S) layout (flat, S = H*W, 1 for vectors) split each
channel's M = N*S elements into `chunks` runs of L (`plan`), one block of RB threads per (chunk,
channel): grid (chunks, channels), channels grid-strided. Each thread sums a strided share of its
run in float32, then the block adds the RB partial sums as a tree in shared memory. With one chunk
the block finishes the channel itself; otherwise it writes its run's partial result to a
workspace and a second kernel (one thread per channel) combines the runs in their order, so the
result is deterministic and needs no atomics. `plan` takes enough chunks to give the GPU about
TARGET_BLOCKS blocks, each run at least CHUNK_MIN elements. (With one block per channel, as
before, vgg_small's first stage ran 32 blocks of 256 threads on a 132-SM GPU, each thread reading
M/256 elements with an int64 division per element; the runs' element index is divided in uint32.)
Batchnorm's statistics combine the runs' means and sums of squared deviations with Chan et al.'s
pairwise update, which keeps the two-pass variance's accuracy.

The batchnorm kernels also serve fused_batchnorm: `act` (the code of cnndsl/ops/fused/epilogue.py,
0 none) and alpha apply the activation as the output is written, and the backward recomputes
dz = act'(y) * dy from the forward output y where it reads dy (plain batchnorm: act 0, y = dy).
"""
from __future__ import annotations

import math

from cnndsl.kernels.cuda.common import (F32, MAX_BLOCKS, RB, SIMULATOR, TARGET_BLOCKS, activate, channel_of, cuda, device,
                                        div_mod, float32, grad_from_output, grid1d, int64, kernel)

# the fewest elements a run of a per-channel reduction gets (the simulator's small, so that its
# tests split channels), and the most channel blocks of one launch (grid y; then grid-stride)
CHUNK_MIN = RB if SIMULATOR else 16 * RB
CHANNEL_BLOCKS = MAX_BLOCKS if SIMULATOR else 65535


def plan(C: int, M: int) -> tuple[int, int]:
    """(chunks, L): each of C channels' M elements in `chunks` runs of L (the last may be shorter)."""
    chunks = max(1, min(-(-TARGET_BLOCKS // max(1, C)), -(-M // CHUNK_MIN)))
    L = -(-M // chunks)
    return -(-M // L), L


def chunk_grid(chunks: int, C: int):
    return (chunks, max(1, min(C, CHANNEL_BLOCKS))), RB


@device
def _block_sum(part, tid):
    """The sum of part[0:RB] (each thread's partial sum, part[tid] written by thread tid) into
    part[0], as a tree; every thread of the block calls it and may read part[0] after it."""
    cuda.syncthreads()
    step = RB // 2
    while step > 0:
        if tid < step:
            part[tid] += part[tid + step]
        cuda.syncthreads()
        step //= 2


@device
def _offset(i, M, S, CS, cS):
    """The flat offset n*C*S + c*S + s of element i = n*S + s < M of channel c (cS = c*S, CS = C*S)."""
    n, s = div_mod(i, S, M)
    return n * CS + cS + s


@device
def _run(L, M):
    """The element range [lo, hi) of this block's run."""
    lo = cuda.blockIdx.x * L
    hi = lo + L
    if hi > M:
        hi = M
    return lo, hi


@device
def _run_sum(x, M, S, CS, cS, lo, hi, tid):
    acc = float32(0.0)
    for i in range(lo + tid, hi, RB):
        acc += x[_offset(i, M, S, CS, cS)]
    return acc


@kernel(F32, int64, int64, int64, int64, int64, float32, F32, F32)
def channel_sum(x, N, C, S, chunks, L, scale, out, part):
    """out[c] = scale * sum over n, s of x[n, c, s]; with several chunks, part[c * chunks + j] =
    the sum of run j, which chunk_sum_finish adds up."""
    ps = cuda.shared.array(RB, float32)
    tid = cuda.threadIdx.x
    M = N * S
    lo, hi = _run(L, M)
    for c in range(cuda.blockIdx.y, C, cuda.gridDim.y):
        ps[tid] = _run_sum(x, M, S, C * S, c * S, lo, hi, tid)
        _block_sum(ps, tid)
        if tid == 0:
            if chunks == 1:
                out[c] = ps[0] * scale
            else:
                part[c * chunks + cuda.blockIdx.x] = ps[0]
        cuda.syncthreads()


@kernel(F32, int64, int64, float32, F32)
def chunk_sum_finish(part, C, chunks, scale, out):
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        v = float32(0.0)
        for j in range(chunks):
            v += part[c * chunks + j]
        out[c] = v * scale


def channel_sum_steps(x, N: int, C: int, S: int, scale, out, part) -> list:
    """[(kernel, config, args)] writing out[c] = scale * sum of channel c; `part` a workspace of
    workspace(C, N * S) elements (any array when that is 0)."""
    chunks, L = plan(C, N * S)
    steps = [(channel_sum, chunk_grid(chunks, C), (x, N, C, S, chunks, L, scale, out, part))]
    if chunks > 1:
        steps.append((chunk_sum_finish, grid1d(C), (part, C, chunks, scale, out)))
    return steps


def workspace(C: int, M: int, per_channel: int = 1) -> int:
    """Elements of partial results a per-channel reduction of C channels of M elements needs,
    `per_channel` values per run (0: none)."""
    chunks, _ = plan(C, M)
    return 0 if chunks == 1 else per_channel * C * chunks


@kernel(F32, int64, float32, F32, int64)
def sum_to(x, n, scale, out, idx):
    """out[idx] = scale * sum(x[:n]); launch with one block of RB threads."""
    part = cuda.shared.array(RB, float32)
    tid = cuda.threadIdx.x
    acc = float32(0.0)
    for i in range(tid, n, RB):
        acc += x[i]
    part[tid] = acc
    _block_sum(part, tid)
    if tid == 0:
        out[idx] = part[0] * scale


# -- batchnorm ------------------------------------------------------------------------------


@device
def _bn_finish_stats(c, mean, var, M, gamma, beta, eps, momentum, running_mean, running_var,
                     save_mean, save_invstd, scale, shift):
    inv = float32(1.0) / math.sqrt(var + eps)
    save_mean[c] = mean
    save_invstd[c] = inv
    unbiased = var * float32(M) / float32(M - 1) if M > 1 else var
    keep = float32(1.0) - momentum
    running_mean[c] = keep * running_mean[c] + momentum * mean
    running_var[c] = keep * running_var[c] + momentum * unbiased
    sc = inv * gamma[c]
    scale[c] = sc
    shift[c] = beta[c] - mean * sc


@kernel(F32, int64, int64, int64, int64, int64, F32, F32, float32, float32, F32, F32, F32, F32, F32, F32, F32)
def bn_train_stats(x, N, C, S, chunks, L, gamma, beta, eps, momentum, running_mean, running_var,
                   save_mean, save_invstd, scale, shift, part):
    """Batch mean and biased variance per channel (two passes over each run); saves mean and
    1/sqrt(var + eps), updates the running statistics (unbiased variance, PyTorch convention) and
    writes the per-channel affine y = x * scale + shift. With several chunks, run j of channel c
    writes its mean and sum of squared deviations to part[c * chunks + j] and part[(C + c) *
    chunks + j], and bn_stats_finish does the rest."""
    ps = cuda.shared.array(RB, float32)
    tid = cuda.threadIdx.x
    M = N * S
    lo, hi = _run(L, M)
    for c in range(cuda.blockIdx.y, C, cuda.gridDim.y):
        CS, cS = C * S, c * S
        ps[tid] = _run_sum(x, M, S, CS, cS, lo, hi, tid)
        _block_sum(ps, tid)
        mean = ps[0] / float32(hi - lo)
        cuda.syncthreads()
        acc = float32(0.0)
        for i in range(lo + tid, hi, RB):
            d = x[_offset(i, M, S, CS, cS)] - mean
            acc += d * d
        ps[tid] = acc
        _block_sum(ps, tid)
        if tid == 0:
            if chunks == 1:
                _bn_finish_stats(c, mean, ps[0] / float32(M), M, gamma, beta, eps, momentum, running_mean,
                                 running_var, save_mean, save_invstd, scale, shift)
            else:
                part[c * chunks + cuda.blockIdx.x] = mean
                part[(C + c) * chunks + cuda.blockIdx.x] = ps[0]
        cuda.syncthreads()


@kernel(F32, int64, int64, int64, int64, F32, F32, float32, float32, F32, F32, F32, F32, F32, F32)
def bn_stats_finish(part, M, C, chunks, L, gamma, beta, eps, momentum, running_mean, running_var,
                    save_mean, save_invstd, scale, shift):
    """The runs of bn_train_stats combined per channel in their order (Chan, Golub and LeVeque's
    pairwise update of count, mean and sum of squared deviations), then finished as there."""
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        na = float32(0.0)
        mean = float32(0.0)
        m2 = float32(0.0)
        for j in range(chunks):
            cnt = L
            if (j + 1) * L > M:
                cnt = M - j * L
            nb = float32(cnt)
            n = na + nb
            delta = part[c * chunks + j] - mean
            mean += delta * (nb / n)
            m2 += part[(C + c) * chunks + j] + delta * delta * (na * nb / n)
            na = n
        _bn_finish_stats(c, mean, m2 / float32(M), M, gamma, beta, eps, momentum, running_mean, running_var,
                         save_mean, save_invstd, scale, shift)


def bn_train_stats_steps(x, N: int, C: int, S: int, gamma, beta, eps, momentum, running_mean, running_var,
                         save_mean, save_invstd, scale, shift, part) -> list:
    """[(kernel, config, args)] of the training statistics; `part` of workspace(C, N * S, 2) elements."""
    chunks, L = plan(C, N * S)
    stats = (gamma, beta, eps, momentum, running_mean, running_var, save_mean, save_invstd, scale, shift)
    steps = [(bn_train_stats, chunk_grid(chunks, C), (x, N, C, S, chunks, L) + stats + (part,))]
    if chunks > 1:
        steps.append((bn_stats_finish, grid1d(C), (part, N * S, C, chunks, L) + stats))
    return steps


@kernel(F32, F32, F32, F32, float32, F32, F32, int64)
def bn_inference_coeffs(gamma, beta, running_mean, running_var, eps, scale, shift, C):
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        sc = gamma[c] / math.sqrt(running_var[c] + eps)
        scale[c] = sc
        shift[c] = beta[c] - running_mean[c] * sc


@kernel(F32, F32, F32, int64, float32, F32, int64, int64, int64)
def channel_affine(x, scale, shift, act, alpha, y, C, S, n):
    """y = act(x * scale[c] + shift[c]) over (N, C, S) flat, n = N*C*S elements."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = channel_of(i, S, C, n)
        y[i] = activate(x[i] * scale[c] + shift[c], act, alpha)


@device
def _bn_finish_backward(c, sdy, sdyx, M, C, gamma, save_invstd, dgamma, dbeta, coef):
    inv = save_invstd[c]
    dbeta[c] = sdy
    dgamma[c] = sdyx * inv
    coef[c] = gamma[c] * inv
    coef[C + c] = sdy / float32(M)
    coef[2 * C + c] = sdyx * inv * inv / float32(M)


@kernel(F32, F32, F32, int64, float32, int64, int64, int64, int64, int64, F32, F32, F32, F32, F32, F32, F32)
def bn_backward_reduce(x, dy, y, act, alpha, N, C, S, chunks, L, gamma, save_mean, save_invstd, dgamma, dbeta, coef,
                       part):
    """With g = act'(y) * dy: dbeta = sum g, dgamma = sum g * xhat per channel, and the coefficients of
    dx = k * (g - mdy - (x - mean) * mdyx) into coef[c], coef[C + c], coef[2C + c]. With several
    chunks, run j of channel c writes its two sums to part[c * chunks + j] and part[(C + c) *
    chunks + j], and bn_backward_finish does the rest."""
    p1 = cuda.shared.array(RB, float32)
    p2 = cuda.shared.array(RB, float32)
    tid = cuda.threadIdx.x
    M = N * S
    lo, hi = _run(L, M)
    for c in range(cuda.blockIdx.y, C, cuda.gridDim.y):
        CS, cS = C * S, c * S
        mean = save_mean[c]
        a1 = float32(0.0)
        a2 = float32(0.0)
        for i in range(lo + tid, hi, RB):
            j = _offset(i, M, S, CS, cS)
            g = grad_from_output(dy[j], y[j], act, alpha)
            a1 += g
            a2 += g * (x[j] - mean)
        p1[tid] = a1
        p2[tid] = a2
        _block_sum(p1, tid)
        _block_sum(p2, tid)
        if tid == 0:
            if chunks == 1:
                _bn_finish_backward(c, p1[0], p2[0], M, C, gamma, save_invstd, dgamma, dbeta, coef)
            else:
                part[c * chunks + cuda.blockIdx.x] = p1[0]
                part[(C + c) * chunks + cuda.blockIdx.x] = p2[0]
        cuda.syncthreads()


@kernel(F32, int64, int64, int64, F32, F32, F32, F32, F32)
def bn_backward_finish(part, M, C, chunks, gamma, save_invstd, dgamma, dbeta, coef):
    """bn_backward_reduce's runs added per channel in their order, then finished as there."""
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        sdy = float32(0.0)
        sdyx = float32(0.0)
        for j in range(chunks):
            sdy += part[c * chunks + j]
            sdyx += part[(C + c) * chunks + j]
        _bn_finish_backward(c, sdy, sdyx, M, C, gamma, save_invstd, dgamma, dbeta, coef)


def bn_backward_reduce_steps(x, dy, y, act: int, alpha, N: int, C: int, S: int, gamma, save_mean, save_invstd,
                             dgamma, dbeta, coef, part) -> list:
    """[(kernel, config, args)] of batchnorm's backward sums; `part` of workspace(C, N * S, 2) elements."""
    chunks, L = plan(C, N * S)
    steps = [(bn_backward_reduce, chunk_grid(chunks, C), (x, dy, y, act, alpha, N, C, S, chunks, L, gamma, save_mean,
                                                         save_invstd, dgamma, dbeta, coef, part))]
    if chunks > 1:
        steps.append((bn_backward_finish, grid1d(C), (part, N * S, C, chunks, gamma, save_invstd, dgamma, dbeta, coef)))
    return steps


@kernel(F32, F32, F32, int64, float32, F32, F32, F32, int64, int64, int64)
def bn_backward_apply(x, dy, y, act, alpha, dx, save_mean, coef, C, S, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = channel_of(i, S, C, n)
        g = grad_from_output(dy[i], y[i], act, alpha)
        dx[i] = coef[c] * (g - coef[C + c] - (x[i] - save_mean[c]) * coef[2 * C + c])
