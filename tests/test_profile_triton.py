"""synperf's Triton kernels vs torch references under TRITON_INTERPRET=1 (CPU),
and the torch moe_align_block_size.  Skipped without torch / triton."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

torch = pytest.importorskip("torch")


def test_moe_align_block_size():
    from synperf.profile.moe_align import moe_align_block_size

    torch.manual_seed(0)
    for T, K, E, bs in [(7, 2, 5, 4), (1, 1, 8, 16), (100, 8, 16, 16), (3, 2, 64, 64)]:
        ids = torch.stack([torch.randperm(E)[:K] for _ in range(T)]).to(torch.int32)
        s, e, n = moe_align_block_size(ids, bs, E)
        numel = T * K
        total = int(n.item())
        assert total % bs == 0
        flat = ids.flatten().tolist()
        valid = s[:total].tolist()
        assert sorted(x for x in valid if x < numel) == list(range(numel))  # every pair once
        assert all(x == numel for x in s[total:].tolist())
        for blk in range(total // bs):
            ex = int(e[blk])
            for x in valid[blk * bs : (blk + 1) * bs]:
                assert x == numel or flat[x] == ex
        counts = torch.bincount(ids.flatten().long(), minlength=E)
        assert total == int(((counts + bs - 1) // bs * bs).sum())


def _interp():
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET is not 1")
    from synperf.profile import triton_elementwise as te

    if type(te.synperf_rmsnorm_kernel).__name__ != "InterpretedFunction":
        pytest.skip("synperf Triton kernels were imported before TRITON_INTERPRET=1 was set")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_fused_moe_matches_reference(dtype):
    # bf16 tl.dot is broken in the Triton interpreter (checked on GPU instead)
    _interp()
    from synperf.profile import triton_moe as tm

    dt = getattr(torch, dtype)
    torch.manual_seed(1)
    T, H, I, E, K = 13, 64, 48, 6, 3
    x = torch.randn(T, H).to(dt)
    w13 = (torch.randn(E, 2 * I, H) / 8).to(dt)
    w2 = (torch.randn(E, H, I) / 8).to(dt)
    w, ids = tm.random_routing(T, E, K, "cpu")
    ref = tm.fused_moe_reference(x, w13, w2, w, ids)
    for cfg in (
        {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1},
        {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 16, "GROUP_SIZE_M": 2},
    ):
        out = tm.fused_moe(x, w13, w2, w, ids, cfg)
        tol = 1e-4 if dt == torch.float32 else 1e-2
        assert (out.float() - ref).abs().max().item() < tol * max(1.0, ref.abs().max().item())
        ws = tm.MoEWorkspace(x, w13, w2, w, ids, cfg)
        ws.w13_pass()
        ref13 = torch.einsum("th,enh->ten", x.float(), w13.float())
        got = ws.cache1.view(T, K, 2 * I).float()
        want = torch.stack([ref13[t, ids[t].long()] for t in range(T)])
        assert (got - want).abs().max().item() < tol * 10


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_elementwise_kernels(dtype):
    _interp()
    from synperf.profile import triton_elementwise as te

    dt = getattr(torch, dtype)
    tol = 1e-5 if dt == torch.float32 else 7e-2
    torch.manual_seed(2)
    x = torch.randn(5, 200).to(dt)
    w = torch.randn(200).to(dt)
    r = torch.randn(5, 200).to(dt)
    assert (te.rmsnorm_triton(x, w).float() - te.rmsnorm_torch(x, w).float()).abs().max() < tol
    y_ref, r_ref = te.rmsnorm_torch(x, w, residual=r)
    x2, r2 = x.clone(), r.clone()
    te.rmsnorm_triton(x2, w, residual=r2)
    assert (x2.float() - y_ref.float()).abs().max() < tol
    assert (r2.float() - r_ref.float()).abs().max() < tol
    a = torch.randn(6, 600).to(dt)
    assert (te.silu_and_mul_triton(a, block=128).float() - te.silu_and_mul_torch(a).float()).abs().max() < tol
    T, H, KH, D = 9, 6, 2, 96
    qkv = torch.randn(T, (H + 2 * KH) * D).to(dt)
    cache = te.make_cos_sin_cache(8192, D)
    pos = torch.randint(0, 8192, (T,))
    q, k = qkv[:, : H * D], qkv[:, H * D : (H + KH) * D]
    q0, k0 = q.clone(), k.clone()
    te.rope_torch(pos, q0, k0, cache, H, KH, D)
    te.rope_triton(pos, q, k, cache, H, KH, D)
    assert (q.float() - q0.float()).abs().max() < tol and (k.float() - k0.float()).abs().max() < tol
    assert (qkv[:, (H + KH) * D :].float() != 0).any()  # v untouched region still there


def test_rope_torch_formula():
    pytest.importorskip("triton")      # the module holds the Triton kernels too
    from synperf.profile import triton_elementwise as te
    import math

    D = 64
    cache = te.make_cos_sin_cache(128, D)
    pos = torch.tensor([5, 77])
    q = torch.randn(2, D, dtype=torch.float64).float()
    k = torch.randn(2, D).float()
    q1, k1 = q.clone(), k.clone()
    te.rope_torch(pos, q1, k1, cache, 1, 1, D)
    for t in range(2):
        for i in range(D // 2):
            f = 1.0 / (10000 ** (2 * i / D))
            c, s = math.cos(pos[t].item() * f), math.sin(pos[t].item() * f)
            assert abs(q1[t, i].item() - (q[t, i].item() * c - q[t, i + D // 2].item() * s)) < 1e-3
            assert abs(q1[t, i + D // 2].item() - (q[t, i + D // 2].item() * c + q[t, i].item() * s)) < 1e-3
