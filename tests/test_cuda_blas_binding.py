"""cnndsl/kernels/cuda/blas.py's ctypes calls without a GPU: cuBLAS is stood in for by a fake
library that computes what the cuBLAS documentation says its column-major SGEMMs compute, on
host memory at the addresses it is given. What this shows: the row-major products `sgemm` is asked
for (both transposes, leading dimensions wider than the matrices, offsets, strided batches,
beta 0 and 1) reach cuBLAS as the right column-major calls, and a failing status is raised. What
it cannot show: cuBLAS itself (benchmarks/gpu_session.sh runs tests/cuda/test_im2col.py on a GPU)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

blas = pytest.importorskip("cnndsl.kernels.cuda.blas")


def _colmajor(addr: int, rows: int, cols: int, ld: int) -> np.ndarray:
    """The rows x cols column-major matrix with leading dimension ld at host address addr (a view)."""
    n = (cols - 1) * ld + rows
    flat = np.ctypeslib.as_array((ctypes.c_float * n).from_address(addr))
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(4, 4 * ld))


class FakeCublas:
    """cublasSgemm_v2 / cublasSgemmStridedBatched as documented: C = alpha op(A) op(B) + beta C,
    column-major, op(A) m x k, op(B) k x n, C m x n; 0 for success, else `status`."""

    def __init__(self, status: int = 0):
        self.status, self.calls = status, []

    def _one(self, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        A = _colmajor(a, k, m, lda).T if ta else _colmajor(a, m, k, lda)
        B = _colmajor(b, n, k, ldb).T if tb else _colmajor(b, k, n, ldb)
        C = _colmajor(c, m, n, ldc)
        prod = alpha * (A.astype(np.float64) @ B)
        C[...] = prod if beta == 0 else prod + beta * C

    def cublasSgemm_v2(self, h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        self.calls.append("sgemm")
        self._one(ta, tb, m, n, k, alpha._obj.value, a, lda, b, ldb, beta._obj.value, c, ldc)
        return self.status

    def cublasSgemmStridedBatched(self, h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count):
        self.calls.append(f"batched {count}")
        for i in range(count):
            self._one(ta, tb, m, n, k, alpha._obj.value, a + 4 * i * sa, lda, b + 4 * i * sb, ldb,
                      beta._obj.value, c + 4 * i * sc, ldc)
        return self.status


class HostArray:
    """A float32 host buffer posing as a device array (its address in __cuda_array_interface__)."""

    def __init__(self, values):
        self.a = np.ascontiguousarray(values, dtype=np.float32).ravel()
        self.__cuda_array_interface__ = {"data": (self.a.ctypes.data, False), "shape": self.a.shape,
                                         "typestr": "<f4", "version": 3}


@pytest.fixture
def fake(monkeypatch):
    lib = FakeCublas()
    monkeypatch.setattr(blas, "SIMULATOR", False)
    monkeypatch.setattr(blas, "_LIB", blas._Library())
    blas._LIB.loaded, blas._LIB.lib, blas._LIB.handle = True, lib, ctypes.c_void_p(1)
    return lib


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("batch, beta", [(1, 0.0), (1, 1.0), (3, 0.0), (3, 1.0)])
def test_row_major_products_reach_cublas_as_column_major_calls(fake, ta, tb, batch, beta):
    rng = np.random.default_rng(0)
    M, N, K = 5, 4, 3
    lda, ldb, ldc = (M if ta else K) + 2, (K if tb else N) + 1, N + 3  # wider than the matrices
    a_off, b_off, c_off = 2, 1, 4
    sa = (K if ta else M) * lda + 1
    sb = (N if tb else K) * ldb + 2
    sc = M * ldc + 1
    A = HostArray(rng.standard_normal(a_off + batch * sa))
    B = HostArray(rng.standard_normal(b_off + batch * sb))
    C = HostArray(rng.standard_normal(c_off + batch * sc))
    before = C.a.copy()
    run = blas.sgemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, beta, a_off=a_off, b_off=b_off, c_off=c_off,
                    batch=batch, sa=sa, sb=sb, sc=sc)
    run()
    assert fake.calls == (["sgemm"] if batch == 1 else [f"batched {batch}"])
    for i in range(batch):
        a0, b0, c0 = a_off + i * sa, b_off + i * sb, c_off + i * sc
        opa = A.a[a0:a0 + (K if ta else M) * lda].reshape(-1, lda)[:, :M if ta else K]
        opb = B.a[b0:b0 + (N if tb else K) * ldb].reshape(-1, ldb)[:, :K if tb else N]
        opa, opb = (opa.T if ta else opa), (opb.T if tb else opb)
        want = opa.astype(np.float64) @ opb + beta * before[c0:c0 + M * ldc].reshape(M, ldc)[:, :N]
        got = C.a[c0:c0 + M * ldc].reshape(M, ldc)
        np.testing.assert_allclose(got[:, :N], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got[:, N:], before[c0:c0 + M * ldc].reshape(M, ldc)[:, N:])  # padding kept


def test_a_failing_status_is_raised(fake):
    fake.status = 13  # CUBLAS_STATUS_EXECUTION_FAILED
    A, B, C = HostArray(np.ones(4)), HostArray(np.ones(4)), HostArray(np.zeros(4))
    with pytest.raises(RuntimeError, match="status 13"):
        blas.sgemm(False, False, 2, 2, 2, A, 2, B, 2, C, 2)()


def test_without_the_library_the_candidate_says_why(monkeypatch):
    monkeypatch.setattr(blas, "SIMULATOR", False)
    monkeypatch.setattr(blas, "_LIB", blas._Library())
    monkeypatch.delenv(blas.ENV, raising=False)

    def missing():
        raise OSError("no cuBLAS library found (test)")
    monkeypatch.setattr(blas, "_find", missing)
    ok, why = blas.available()
    assert not ok and "no cuBLAS library found" in why
    with pytest.raises(RuntimeError, match="cuBLAS is not available"):
        blas.sgemm(False, False, 1, 1, 1, None, 1, None, 1, None, 1)
