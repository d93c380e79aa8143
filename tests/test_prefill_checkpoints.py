"""The one-pass checkpoint op (fwd_checkpoints), as lightning_attn_prefill calls it for N % 64 == 0.

o and the final state equal fwd's bit for bit (the same kernels and split plan); each checkpoint
equals the float64 state of its prefix; past a sequence's end the checkpoints hold its final state
bit for bit; the one-pass and two-pass paths of lightning_attn_prefill agree. Shapes: T = 1, odd T,
T a multiple of N, T not a multiple of the chunk, small and large heads (Dk = 256 in 128-wide
pieces on Hopper), packed sequences (empty, length 1, exact multiples, longer than num_checkpoints
covers) and, on CUDA, lengths where the sequence split runs. Outputs start as NaN (conftest).
"""
import pytest
import torch

import lightning_attn as la
from lightning_attn.graphs import capture_graph
from conftest import DEVICES
from reference import lightning_attn_ref, rel_err
from test_lightning_attn import TOL  # the suite's bounds per device and dtype (float32 on CUDA: bf16 products)

ops = torch.ops.lightning_attn

SHAPES = [(1, 1, 1, 16, 16), (2, 64, 2, 32, 32), (3, 77, 2, 16, 48), (2, 130, 3, 64, 64), (2, 257, 2, 128, 128),
          (1, 200, 2, 256, 128)]


def make(B, T, H, Dk, Dv, dtype, device):
    q = (torch.randn(B, T, H, Dk, device=device) * Dk ** -0.5).to(dtype)
    k = (torch.randn(B, T, H, Dk, device=device) * Dk ** -0.5).to(dtype)
    v = torch.randn(B, T, H, Dv, device=device).to(dtype)
    h0 = torch.randn(B, H, Dk, Dv, device=device) * 0.3
    return q, k, v, torch.rand(H, device=device) * 0.2, h0


def check(q, k, v, slope, h0, every, J, cu=None, scale=0.7):
    """fwd_checkpoints against fwd (bits) and against the float64 state of each prefix."""
    o, final, ckpt = ops.fwd_checkpoints(q, k, v, slope, scale, h0, cu, False, every, J)
    o_ref, final_ref = la.lightning_attn_func(q, k, v, slope, scale, h0, True, cu)
    assert torch.equal(o, o_ref) and torch.equal(final, final_ref), "o and final state equal fwd's"
    N = final.shape[0]
    assert ckpt.shape == (N, J, *final.shape[1:]) and ckpt.dtype == torch.float32
    offs = cu.tolist() if cu is not None else None
    tol = TOL[q.device.type, q.dtype]
    for n in range(N):
        b, s, L = (0, offs[n], offs[n + 1] - offs[n]) if cu is not None else (n, 0, q.shape[1])
        for j in range(J):
            t = (j + 1) * every
            if t > L:  # the sequence ended before this checkpoint: its final state, exactly
                assert torch.equal(ckpt[n, j], final[n]), (n, j)
                continue
            x = [y[b:b + 1, s:s + t] for y in (q, k, v)]
            _, want = lightning_attn_ref(*x, slope, scale, h0[n:n + 1])
            assert rel_err(ckpt[n, j], want[0]) < tol, (n, j, rel_err(ckpt[n, j], want[0]))
    return ckpt


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("B,T,H,Dk,Dv", SHAPES)
@pytest.mark.parametrize("every", [64, 128])
def test_equals_fwd_and_prefix_states(device, dtype, B, T, H, Dk, Dv, every):
    q, k, v, slope, h0 = make(B, T, H, Dk, Dv, dtype, device)
    check(q, k, v, slope, h0, every, -(-T // every) + 1)  # one more than T covers: the tail


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("J", [0, 2, 5])
def test_packed_sequences(device, J):
    """Empty, length 1, an exact multiple of N, and sequences longer than J checkpoints cover."""
    lens = [130, 0, 1, 128, 300, 64]
    q, k, v, slope, _ = make(1, sum(lens), 2, 64, 64, torch.bfloat16, device)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    h0 = torch.randn(len(lens), 2, 64, 64, device=device) * 0.3
    check(q, k, v, slope, h0, 64, J, cu=cu)


@pytest.mark.parametrize("device", DEVICES)
def test_no_decay_no_initial_state(device):
    q, k, v, _, _ = make(2, 150, 2, 32, 32, torch.float32, device)
    o, final, ckpt = ops.fwd_checkpoints(q, k, v, None, 1.0, None, None, False, 64, 3)
    _, s64 = lightning_attn_ref(q[:, :64], k[:, :64], v[:, :64])
    assert rel_err(ckpt[:, 0], s64) < TOL[device, torch.float32]
    assert torch.equal(ckpt[:, 2], final)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("packed", [False, True])
def test_prefill_one_pass_equals_two_passes(device, packed):
    """lightning_attn_prefill: N = 128 takes the op, gradients take the two fwd passes; with
    max_seqlen no lengths are read on the host."""
    q, k, v, slope, h0 = make(2, 300, 2, 32, 32, torch.float32, device)
    cu = None
    if packed:
        q, k, v = (x.reshape(1, 600, 2, 32) for x in (q, k, v))
        cu = torch.tensor([0, 250, 600], dtype=torch.int32, device=device)
    one = la.lightning_attn_prefill(q, k, v, 128, slope, 0.5, h0, cu_seqlens=cu, max_seqlen=350 if packed else None)
    two = la.lightning_attn_prefill(q.clone().requires_grad_(), k, v, 128, slope, 0.5, h0, cu_seqlens=cu)
    assert one[2].shape == two[2].shape == (2, 3, 2, 32, 32)
    for a, b in zip(one, two):
        assert rel_err(a, b.detach()) < TOL[device, torch.float32]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the sequence split runs on CUDA only")
@pytest.mark.parametrize("T,H,D", [(16384, 2, 128), (9000, 3, 64)])
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_split(T, H, D, packed):
    """Lengths where the split runs (states in o's rows at D = 128, else a workspace): checkpoints in
    every segment of pass 2, against the two-pass path (float64 prefixes would take minutes)."""
    q, k, v, slope, _ = make(1, T, H, D, D, torch.bfloat16, "cuda")
    cu = torch.tensor([0, T // 3, T], dtype=torch.int32, device="cuda") if packed else None
    N = 1 if cu is None else 2
    h0 = torch.randn(N, H, D, D, device="cuda") * 0.3
    o, final, ckpt = la.lightning_attn_prefill(q, k, v, 1024, slope, 1.0, h0, cu_seqlens=cu)
    o_ref, final_ref = la.lightning_attn_func(q, k, v, slope, 1.0, h0, True, cu)
    assert torch.equal(o, o_ref) and torch.equal(final, final_ref)
    with torch.enable_grad():
        two = la.lightning_attn_prefill(q.clone().requires_grad_(), k, v, 1024, slope, 1.0, h0, cu_seqlens=cu)
    assert ckpt.shape == two[2].shape
    assert rel_err(ckpt, two[2].detach()) < TOL["cuda", torch.bfloat16]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
def test_cuda_graph_capture():
    q, k, v, slope, h0 = make(2, 1000, 2, 128, 128, torch.bfloat16, "cuda")
    eager = ops.fwd_checkpoints(q, k, v, slope, 1.0, h0, None, False, 256, 4)
    g, out = capture_graph(lambda: ops.fwd_checkpoints(q, k, v, slope, 1.0, h0, None, False, 256, 4), warmup=1)
    for x in out:
        x.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(out, eager))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    q, k, v, slope, h0 = make(2, 130, 2, 16, 8, torch.float32, device)
    torch.library.opcheck(ops.fwd_checkpoints, (q, k, v, slope, 0.5, h0, None, False, 64, 3))


def test_compiled_fullgraph():
    q, k, v, slope, h0 = make(2, 200, 2, 16, 16, torch.float32, "cpu")
    expect = la.lightning_attn_prefill(q, k, v, 64, slope, 1.0, h0)
    torch._dynamo.reset()
    fn = torch.compile(lambda *a: la.lightning_attn_prefill(*a, 64, slope, 1.0, h0), fullgraph=True)
    assert all(torch.equal(a, b) for a, b in zip(fn(q, k, v), expect))
