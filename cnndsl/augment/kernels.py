"""Numba kernels of the augmentations.

Every augmentation runs in two steps:

1. a small serial `draw_*` function turns (indices, seed, epoch, op, p, ...)
   into a float64 / int64 table of per-image parameters (one row per image),
   using the counter-based hash of `cnndsl.augment.rng`;
2. a serial kernel (a loop over the images) applies those parameters,
   reading `src` and writing `dst` (never in place: src and dst are distinct
   C-contiguous float32 (N, C, H, W) arrays). Serial on purpose: a `parallel=True`
   driver cost 1 to 2.8 CPU s each to compile (Numba's parfor lowering; LeNet-5's
   augmentation 5.0 CPU s cold, vgg_small's 6.6; serial 2.7 and 2.3), and a batch
   of 128 takes 0.27 to 0.31 ms serial against 0.14 to 0.17 on 2 threads: nothing
   beside vgg_small's step, about 3 % more of LeNet-5's 2 ms step
   (docs/performance.md, "Serial augmentation and dense epilogue").

Keeping the draws apart makes every kernel a deterministic function of
explicit parameters, which tests (and helpers such as `rotate_images`) call
directly. Five kernels cover the eight augmentations:

    _grayscale  grayscale
    _flip       hflip, vflip
    _window     random_crop, translate     (integer offsets, constant fill)
    _affine     rotate, scale              (bilinear, constant fill)
    _jitter     color_jitter

Draw numbering (k) per op, k = 0 always being the apply-or-not draw:
    random_crop: k=1 row offset, k=2 column offset
    translate:   k=1 column shift, k=2 row shift
    rotate:      k=1 angle;  scale: k=1 factor
    color_jitter: k=1..4 brightness, contrast, saturation, hue; k=5..7 order
"""
from __future__ import annotations

import math

import numpy as np

from cnndsl.kernels.cpu.common import kernel
from cnndsl.kernels.cpu.hash import GOLDEN
from cnndsl.kernels.cpu.hash import mix as _mix

F0 = np.float32(0.0)
F1 = np.float32(1.0)
# ITU-R BT.601 luma (the grayscale op)
LR = np.float32(0.299)
LG = np.float32(0.587)
LB = np.float32(0.114)
# torchvision's rgb_to_grayscale weights (used by color_jitter, as torchvision does)
JR = np.float32(0.2989)
JG = np.float32(0.587)
JB = np.float32(0.114)
F2 = np.float32(2.0)
F4 = np.float32(4.0)
F6 = np.float32(6.0)
SNAP = 1e-12


# ---------------------------------------------------------------------------- the hash (see rng.py)
EPOCH_MUL = np.uint64(0xD6E8FEB86659FD93)
INDEX_MUL = np.uint64(0xA0761D6478BD642F)
OP_MUL = np.uint64(0xE7037ED1A0B428DB)
S11 = np.uint64(11)
INV53 = 1.0 / 9007199254740992.0  # 2**-53
# Draw numbers as NumPy scalars, not literals: Numba types a literal argument `Literal[int](0)` and
# compiles the callee once per value (uniform compiled 5 times for LeNet-5's pipeline)
K0, K1, K2, K3, K4 = (np.int64(k) for k in range(5))


@kernel
def image_key(seed, epoch, index, op):
    """The 64-bit key (uint64) of one (seed, epoch, image index, op) — all int64 arguments."""
    h = _mix((np.uint64(seed) + np.uint64(1)) * GOLDEN)
    h = _mix(h ^ (np.uint64(epoch) * EPOCH_MUL))
    h = _mix(h ^ (np.uint64(index) * INDEX_MUL))
    return _mix(h ^ (np.uint64(op) * OP_MUL))


@kernel
def uniform(key, k):
    """Draw number k (int) of `key`: a float64 uniform in [0, 1)."""
    z = _mix(np.uint64(key) + np.uint64(k + 1) * GOLDEN)
    return np.float64(z >> S11) * INV53


@kernel
def randint(key, k, n):
    """Draw number k of `key` as an integer uniform in [0, n) (n >= 1)."""
    i = np.int64(uniform(key, k) * n)
    return i if i < n else n - 1


@kernel
def _clamp01(v):
    return min(max(v, F0), F1)


# ---------------------------------------------------------------------------- draws
@kernel
def draw_flags(idx, seed, epoch, op, p):
    """(N,) 1.0 where the op applies to image i, else 0.0."""
    n = idx.shape[0]
    out = np.zeros(n, np.float64)
    for i in range(n):
        key = image_key(seed, epoch, idx[i], op)
        if uniform(key, K0) < p:
            out[i] = 1.0
    return out


@kernel
def draw_crop(idx, seed, epoch, op, p, range_h, range_w, pad):
    """(N, 2) int64 source offsets (row, col) of the window's top-left corner in the
    *unpadded* input: a random position in [0, range] minus pad when applied,
    the centre window otherwise."""
    n = idx.shape[0]
    out = np.empty((n, 2), np.int64)
    for i in range(n):
        key = image_key(seed, epoch, idx[i], op)
        if uniform(key, K0) < p:
            out[i, 0] = randint(key, K1, range_h + 1) - pad
            out[i, 1] = randint(key, K2, range_w + 1) - pad
        else:
            out[i, 0] = range_h // 2 - pad
            out[i, 1] = range_w // 2 - pad
    return out


@kernel
def draw_translate(idx, seed, epoch, op, p, max_dy, max_dx):
    """(N, 2) int64 source offsets (-dy, -dx) for shifts dy, dx = round(U(-max, max))."""
    n = idx.shape[0]
    out = np.zeros((n, 2), np.int64)
    for i in range(n):
        key = image_key(seed, epoch, idx[i], op)
        if uniform(key, K0) < p:
            dx = np.int64(np.round((2.0 * uniform(key, K1) - 1.0) * max_dx))
            dy = np.int64(np.round((2.0 * uniform(key, K2) - 1.0) * max_dy))
            out[i, 0] = -dy
            out[i, 1] = -dx
    return out


@kernel
def rotation_rows(flags, degrees):
    """(N, 5) affine rows [applied, a, b, c, d] for counter-clockwise angles in degrees."""
    n = flags.shape[0]
    out = np.zeros((n, 5), np.float64)
    for i in range(n):
        if flags[i] != 0.0:
            rad = degrees[i] * (math.pi / 180.0)
            c = math.cos(rad)
            s = math.sin(rad)
            if abs(c) < SNAP:
                c = 0.0
            if abs(s) < SNAP:
                s = 0.0
            # source offset from the centre: dy_s = c*dy + s*dx,  dx_s = -s*dy + c*dx
            out[i, 0] = 1.0
            out[i, 1] = c
            out[i, 2] = s
            out[i, 3] = -s
            out[i, 4] = c
    return out


@kernel
def draw_rotate(idx, seed, epoch, op, p, degrees):
    n = idx.shape[0]
    flags = np.zeros(n, np.float64)
    angles = np.zeros(n, np.float64)
    for i in range(n):
        key = image_key(seed, epoch, idx[i], op)
        if uniform(key, K0) < p:
            flags[i] = 1.0
            angles[i] = (2.0 * uniform(key, K1) - 1.0) * degrees
    return rotation_rows(flags, angles)


@kernel
def draw_scale(idx, seed, epoch, op, p, lo, hi):
    """(N, 5) affine rows for a zoom by a factor in [lo, hi] (source = centre + offset / factor)."""
    n = idx.shape[0]
    out = np.zeros((n, 5), np.float64)
    for i in range(n):
        key = image_key(seed, epoch, idx[i], op)
        if uniform(key, K0) < p:
            f = lo + (hi - lo) * uniform(key, K1)
            out[i, 0] = 1.0
            out[i, 1] = 1.0 / f
            out[i, 4] = 1.0 / f
    return out


@kernel
def draw_jitter(idx, seed, epoch, op, p, brightness, contrast, saturation, hue):
    """(N, 6) rows [applied, brightness factor, contrast factor, saturation factor,
    hue shift, order] where order packs a permutation of the four steps in 2-bit fields."""
    n = idx.shape[0]
    out = np.zeros((n, 6), np.float64)
    for i in range(n):
        key = image_key(seed, epoch, idx[i], op)
        out[i, 1] = 1.0
        out[i, 2] = 1.0
        out[i, 3] = 1.0
        out[i, 5] = 228.0  # identity order 0, 1, 2, 3
        if uniform(key, K0) < p:
            out[i, 0] = 1.0
            if brightness > 0.0:
                lo = max(0.0, 1.0 - brightness)
                out[i, 1] = lo + (1.0 + brightness - lo) * uniform(key, K1)
            if contrast > 0.0:
                lo = max(0.0, 1.0 - contrast)
                out[i, 2] = lo + (1.0 + contrast - lo) * uniform(key, K2)
            if saturation > 0.0:
                lo = max(0.0, 1.0 - saturation)
                out[i, 3] = lo + (1.0 + saturation - lo) * uniform(key, K3)
            if hue > 0.0:
                out[i, 4] = (2.0 * uniform(key, K4) - 1.0) * hue
            perm = np.int64(228)
            for j in range(3, 0, -1):  # Fisher-Yates on 2-bit fields
                r = randint(key, 8 - j, j + 1)
                a = (perm >> (2 * j)) & 3
                b = (perm >> (2 * r)) & 3
                perm = (perm & ~(3 << (2 * j))) | (b << (2 * j))
                perm = (perm & ~(3 << (2 * r))) | (a << (2 * r))
            out[i, 5] = np.float64(perm)
    return out


# ---------------------------------------------------------------------------- kernels
@kernel
def _copy_image(src, dst, i):
    c_, h_, w_ = src.shape[1], src.shape[2], src.shape[3]
    for c in range(c_):
        for y in range(h_):
            for x in range(w_):
                dst[i, c, y, x] = src[i, c, y, x]


@kernel
def _grayscale_image(src, dst, i, flag):
    if flag == 0.0:
        _copy_image(src, dst, i)
        return
    h_, w_ = src.shape[2], src.shape[3]
    for y in range(h_):
        for x in range(w_):
            v = _clamp01(LR * src[i, 0, y, x] + LG * src[i, 1, y, x] + LB * src[i, 2, y, x])
            dst[i, 0, y, x] = v
            dst[i, 1, y, x] = v
            dst[i, 2, y, x] = v


@kernel
def _grayscale(src, dst, flags):
    """BT.601 luma written to all three channels where flags[i] != 0 (C == 3)."""
    n = src.shape[0]
    for i in range(n):
        _grayscale_image(src, dst, i, flags[i])


@kernel
def _flip_image(src, dst, i, flag, vertical):
    c_, h_, w_ = src.shape[1], src.shape[2], src.shape[3]
    if flag == 0.0:
        _copy_image(src, dst, i)
    elif vertical == 0:
        last = np.uint64(w_ - 1)  # unsigned indices: no negative-index wraparound, so it vectorizes
        for c in range(c_):
            for y in range(h_):
                for x in range(w_):
                    dst[i, c, y, x] = src[i, c, y, last - np.uint64(x)]
    else:
        for c in range(c_):
            for y in range(h_):
                sy = np.uint64(h_ - 1 - y)
                for x in range(w_):
                    dst[i, c, y, x] = src[i, c, sy, x]


@kernel
def _flip(src, dst, flags, vertical):
    """Mirror left-right (vertical == 0) or top-bottom (vertical == 1) where flags[i] != 0."""
    n = src.shape[0]
    for i in range(n):
        _flip_image(src, dst, i, flags[i], vertical)


@kernel
def _window_image(src, dst, i, oy, ox, f):
    c_, h_, w_ = src.shape[1], src.shape[2], src.shape[3]
    oh, ow = dst.shape[2], dst.shape[3]
    x_lo = min(max(-ox, 0), ow)  # valid x: 0 <= x + ox < w_
    x_hi = max(min(w_ - ox, ow), x_lo)
    # unsigned indices: Numba adds no negative-index wraparound, so the row copy vectorizes
    ulo = np.uint64(x_lo)
    uhi = np.uint64(x_hi)
    uow = np.uint64(ow)
    us0 = np.uint64(x_lo + ox)
    for c in range(c_):
        for y in range(oh):
            sy = y + oy
            if sy < 0 or sy >= h_:
                for x in range(ow):
                    dst[i, c, y, x] = f
            else:
                usy = np.uint64(sy)
                for x in range(ulo):
                    dst[i, c, y, x] = f
                for k in range(uhi - ulo):
                    dst[i, c, y, ulo + k] = src[i, c, usy, us0 + k]
                for x in range(uhi, uow):
                    dst[i, c, y, x] = f


@kernel
def _window(src, dst, offsets, fill):
    """dst[i, c, y, x] = src[i, c, y + offsets[i, 0], x + offsets[i, 1]], or `fill` outside src.

    dst may be smaller than src (a crop); offsets may be negative (padding / shifts)."""
    n = src.shape[0]
    f = np.float32(fill)
    for i in range(n):
        _window_image(src, dst, i, offsets[i, 0], offsets[i, 1], f)


@kernel
def _affine(src, dst, rows, fill):
    """Bilinear resampling about the image centre where rows[i, 0] != 0:

        source = centre + [[a, b], [c, d]] @ (pixel - centre)       (row, column order)

    with rows[i] = [applied, a, b, c, d], centre = ((H-1)/2, (W-1)/2). Neighbours
    outside the image count as `fill`. Coordinates are float64, so transforms that
    map pixel centres onto pixel centres (quarter turns) reproduce pixels exactly."""
    f = np.float32(fill)
    for i in range(src.shape[0]):
        if rows[i, 0] == 0.0:
            _copy_image(src, dst, i)
        else:
            _affine_image(src, dst, i, rows[i, 1], rows[i, 2], rows[i, 3], rows[i, 4], f)


@kernel
def _blend4(w00, w01, w10, w11, v00, v01, v10, v11):
    """Bilinear blend, clamped to the range of the four values (rounding could leave it by an ulp)."""
    v = w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11
    lo = min(min(v00, v01), min(v10, v11))
    hi = max(max(v00, v01), max(v10, v11))
    return min(max(v, lo), hi)


@kernel
def _affine_image(src, dst, i, a, b, cc, d, f):
    c_, h_, w_ = src.shape[1], src.shape[2], src.shape[3]
    cy = (h_ - 1) * 0.5
    cx = (w_ - 1) * 0.5
    for y in range(h_):
        dy = y - cy
        sy = cy + a * dy - b * cx  # the source point of (y, x = 0); it moves by (b, d) per column
        sx = cx + cc * dy - d * cx
        for x in range(w_):
            fy0 = np.floor(sy)
            fx0 = np.floor(sx)
            # written so that NaN (a NaN or infinite angle or factor) takes the fill branch: NaN fails
            # every comparison, and np.int64(NaN) below indexed far outside src (boundscheck run)
            if not (fy0 >= -1.0 and fy0 < h_ and fx0 >= -1.0 and fx0 < w_):
                for c in range(c_):
                    dst[i, c, y, x] = f
            else:
                wy = np.float32(sy - fy0)
                wx = np.float32(sx - fx0)
                y0 = np.int64(fy0)
                x0 = np.int64(fx0)
                w00 = (F1 - wy) * (F1 - wx)
                w01 = (F1 - wy) * wx
                w10 = wy * (F1 - wx)
                w11 = wy * wx
                if y0 >= 0 and y0 + 1 < h_ and x0 >= 0 and x0 + 1 < w_:
                    uy = np.uint64(y0)
                    ux = np.uint64(x0)
                    for c in range(c_):
                        dst[i, c, y, x] = _blend4(w00, w01, w10, w11, src[i, c, uy, ux], src[i, c, uy, ux + 1],
                                                  src[i, c, uy + 1, ux], src[i, c, uy + 1, ux + 1])
                else:
                    iny0 = y0 >= 0
                    iny1 = y0 + 1 < h_
                    inx0 = x0 >= 0
                    inx1 = x0 + 1 < w_
                    for c in range(c_):
                        v00 = src[i, c, y0, x0] if iny0 and inx0 else f
                        v01 = src[i, c, y0, x0 + 1] if iny0 and inx1 else f
                        v10 = src[i, c, y0 + 1, x0] if iny1 and inx0 else f
                        v11 = src[i, c, y0 + 1, x0 + 1] if iny1 and inx1 else f
                        dst[i, c, y, x] = _blend4(w00, w01, w10, w11, v00, v01, v10, v11)
            sy += b
            sx += d


@kernel
def _hue_shift_image(dst, i, shift):
    """torchvision's adjust_hue (RGB -> HSV, h = (h + shift) mod 1, -> RGB) on image i, in
    the closed form of the HSV hexcone: with k_n = (n + 6h) mod 6,
        channel_n = V - V*S * clamp(min(k_n, 4 - k_n), 0, 1),   n = 5 (R), 3 (G), 1 (B)
    where V = max(r, g, b) and V*S = max - min. Branch-free per pixel (selects only)."""
    h_, w_ = dst.shape[2], dst.shape[3]
    s6 = np.float32(6.0 * shift)
    inv6 = np.float32(1.0 / 6.0)
    for y in range(h_):
        for x in range(w_):
            r = dst[i, 0, y, x]
            g = dst[i, 1, y, x]
            b = dst[i, 2, y, x]
            maxc = max(r, max(g, b))
            minc = min(r, min(g, b))
            cr = maxc - minc
            inv = F1 / cr if cr > F0 else F0
            h6 = (F4 + (r - g) * inv) if maxc != g else (F2 + (b - r) * inv)
            h6 = ((g - b) * inv) if maxc == r else h6
            h6 = h6 + s6
            h6 = h6 - F6 * np.floor(h6 * inv6)
            kr = np.float32(5.0) + h6
            kr = kr - F6 if kr >= F6 else kr
            kg = np.float32(3.0) + h6
            kg = kg - F6 if kg >= F6 else kg
            kb = F1 + h6
            kb = kb - F6 if kb >= F6 else kb
            dst[i, 0, y, x] = maxc - cr * min(max(min(kr, F4 - kr), F0), F1)
            dst[i, 1, y, x] = maxc - cr * min(max(min(kg, F4 - kg), F0), F1)
            dst[i, 2, y, x] = maxc - cr * min(max(min(kb, F4 - kb), F0), F1)


@kernel
def _jitter(src, dst, rows):
    """torchvision ColorJitter with explicit factors: rows[i] = [applied, brightness,
    contrast, saturation, hue, order]; the four steps run in the packed order, each
    clamping to [0, 1]; factors of exactly 1 (hue 0) are skipped."""
    for i in range(src.shape[0]):
        _copy_image(src, dst, i)
        if rows[i, 0] != 0.0:
            _jitter_image(dst, i, rows[i, 1], rows[i, 2], rows[i, 3], rows[i, 4], np.int64(rows[i, 5]))


@kernel
def _jitter_image(dst, i, bf, cf, sf, hf, order):
    c_, h_, w_ = dst.shape[1], dst.shape[2], dst.shape[3]
    for step in range(4):
        kind = (order >> (2 * step)) & 3
        if kind == 0:
            if bf != 1.0:
                fb = np.float32(bf)
                for c in range(c_):
                    for y in range(h_):
                        for x in range(w_):
                            dst[i, c, y, x] = _clamp01(dst[i, c, y, x] * fb)
        elif kind == 1:
            if cf != 1.0:
                fc = np.float32(cf)
                total = 0.0
                if c_ == 3:
                    for y in range(h_):
                        for x in range(w_):
                            total += JR * dst[i, 0, y, x] + JG * dst[i, 1, y, x] + JB * dst[i, 2, y, x]
                    mean = np.float32(total / (h_ * w_))
                else:
                    for c in range(c_):
                        for y in range(h_):
                            for x in range(w_):
                                total += dst[i, c, y, x]
                    mean = np.float32(total / (c_ * h_ * w_))
                m = (F1 - fc) * mean
                for c in range(c_):
                    for y in range(h_):
                        for x in range(w_):
                            dst[i, c, y, x] = _clamp01(fc * dst[i, c, y, x] + m)
        elif kind == 2:
            if sf != 1.0 and c_ == 3:
                fs = np.float32(sf)
                g1 = F1 - fs
                for y in range(h_):
                    for x in range(w_):
                        r = dst[i, 0, y, x]
                        g = dst[i, 1, y, x]
                        b = dst[i, 2, y, x]
                        gray = (JR * r + JG * g + JB * b) * g1
                        dst[i, 0, y, x] = _clamp01(fs * r + gray)
                        dst[i, 1, y, x] = _clamp01(fs * g + gray)
                        dst[i, 2, y, x] = _clamp01(fs * b + gray)
        else:
            if hf != 0.0 and c_ == 3:
                _hue_shift_image(dst, i, hf)
