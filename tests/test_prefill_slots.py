"""lightning_attn_func with slot_ids (op fwd_slots): a prefill from and into rows of a state pool.

Against the dense op on the gathered states (the same kernels, so the same bits on each device)
and against the float64 reference; the slots no sequence names stay bit-identical; -1 rows run
from zeros and write nothing. Shapes cover T = 1, odd T, T not a multiple of the chunk, small and
large heads (Dk = 256 in 128-wide pieces on Hopper), head_first, packed sequences, and on CUDA
lengths where the sequence split runs (segment states in the output rows, and in a workspace).
"""
import pytest
import torch

import lightning_attn as la
from conftest import DEVICES, replay_equals_eager
from reference import lightning_attn_chunked_ref, lightning_attn_ref, rel_err, tol_from_baseline
from test_lightning_attn import TOL  # the suite's bounds per device and dtype (float32 on CUDA: bf16 products)

ops = torch.ops.lightning_attn
NUM_SLOTS = 7

SHAPES = [(1, 1, 1, 1, 1), (3, 77, 2, 16, 16), (2, 130, 3, 64, 64), (2, 129, 2, 128, 128), (1, 70, 2, 256, 128),
          (2, 65, 2, 33, 100)]
# long enough for the CUDA split (B x H far below the SM count): states in o's rows at D = 128
# bf16, in a workspace at D = 64 and with packed sequences
CUDA_SHAPES = [(1, 16384, 2, 128, 128), (1, 9000, 3, 64, 64)]


def make(B, T, H, Dk, Dv, dtype, device):
    q = (torch.randn(B, T, H, Dk, device=device) * Dk ** -0.5).to(dtype)
    k = (torch.randn(B, T, H, Dk, device=device) * Dk ** -0.5).to(dtype)
    v = torch.randn(B, T, H, Dv, device=device).to(dtype)
    slope = torch.rand(H, device=device) * 0.2
    pool = torch.randn(NUM_SLOTS, H, Dk, Dv, device=device) * 0.3
    return q, k, v, slope, pool


def slot_ids(N, device):
    """Distinct slots in a shuffled order, the second sequence without a slot (-1) when N > 1."""
    ids = torch.randperm(NUM_SLOTS)[:N].to(torch.int32)
    if N > 1:
        ids[1] = -1
    return ids.to(device)


def gathered(pool, ids):
    """The dense initial states the slots name: pool rows, zeros for -1."""
    rows = ids.long().clamp_min(0)
    return torch.where((ids >= 0).view(-1, 1, 1, 1), pool[rows], torch.zeros_like(pool[rows]))


def check_against_dense(q, k, v, slope, pool, ids, cu=None, head_first=False, scale=0.7):
    """fwd_slots == fwd on the gathered states, bit for bit; the pool rows hold the final states;
    slots no sequence names and -1 rows leave the pool untouched. Returns o."""
    before = pool.clone()
    o_dense, final = la.lightning_attn_func(q, k, v, slope, scale, gathered(pool, ids), True, cu, head_first)
    o, none = la.lightning_attn_func(q, k, v, slope, scale, initial_state=pool, cu_seqlens=cu,
                                     head_first=head_first, slot_ids=ids)
    assert none is None and o.shape == o_dense.shape and o.dtype == q.dtype
    assert torch.equal(o, o_dense), rel_err(o, o_dense)
    used = (ids >= 0).nonzero().squeeze(1)
    rows = ids[used].long()
    assert torch.equal(pool[rows], final[used]), "each named slot holds its sequence's final state"
    untouched = torch.ones(NUM_SLOTS, dtype=torch.bool, device=pool.device)
    untouched[rows] = False
    assert torch.equal(pool[untouched], before[untouched]), "slots no sequence names are bit-identical"
    return o


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("B,T,H,Dk,Dv", SHAPES)
def test_equals_dense_and_reference(device, dtype, B, T, H, Dk, Dv):
    q, k, v, slope, pool = make(B, T, H, Dk, Dv, dtype, device)
    ids = slot_ids(B, device)
    init = gathered(pool, ids)
    o = check_against_dense(q, k, v, slope, pool, ids)
    ro, rs = lightning_attn_ref(q, k, v, slope, 0.7, init)
    rows, named = ids.long(), ids >= 0
    if device == "cpu":  # FlashAttention's rule against a plain-PyTorch baseline in the same dtype
        bo, bs = lightning_attn_chunked_ref(q, k, v, slope, 0.7, init, chunk=64, dtype=dtype)
        assert rel_err(o, ro) <= tol_from_baseline(ro, bo), (rel_err(o, ro), rel_err(bo, ro))
        assert rel_err(pool[rows[named]], rs[named]) <= tol_from_baseline(rs[named], bs[named])
    else:
        assert rel_err(o, ro) < TOL[device, dtype] and rel_err(pool[rows[named]], rs[named]) < TOL[device, dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_head_first(device):
    q, k, v, slope, pool = make(2, 100, 3, 64, 32, torch.bfloat16, device)
    check_against_dense(*(x.transpose(1, 2).contiguous() for x in (q, k, v)), slope, pool, slot_ids(2, device),
                        head_first=True)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_sequences(device):
    """Packed sequences, one of them empty and one of length 1."""
    q, k, v, slope, pool = make(1, 300, 2, 64, 64, torch.bfloat16, device)
    cu = torch.tensor([0, 120, 120, 121, 300], dtype=torch.int32, device=device)
    check_against_dense(q, k, v, slope, pool, slot_ids(4, device), cu=cu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the sequence split runs on CUDA only")
@pytest.mark.parametrize("B,T,H,Dk,Dv", CUDA_SHAPES)
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_split(B, T, H, Dk, Dv, packed):
    q, k, v, slope, pool = make(B, T, H, Dk, Dv, torch.bfloat16, "cuda")
    cu = torch.tensor([0, T // 3, T], dtype=torch.int32, device="cuda") if packed else None
    check_against_dense(q, k, v, slope, pool, slot_ids(2 if packed else B, "cuda"), cu=cu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: the CPU raises on these ids")
def test_cuda_ids_outside_the_pool_act_as_minus_one():
    """No host synchronisation on CUDA, so ids are not checked there: outside [0, num_slots) a
    sequence runs from zeros and touches no slot."""
    q, k, v, slope, pool = make(3, 100, 2, 64, 64, torch.bfloat16, "cuda")
    ids = torch.tensor([2, NUM_SLOTS, -5], dtype=torch.int32, device="cuda")
    before = pool.clone()
    o, _ = la.lightning_attn_func(q, k, v, slope, initial_state=pool, slot_ids=ids)
    as_minus_one = torch.tensor([2, -1, -1], dtype=torch.int32, device="cuda")
    o_dense, final = la.lightning_attn_func(q, k, v, slope, 1.0, gathered(before, as_minus_one), True)
    assert torch.equal(o, o_dense)
    assert torch.equal(pool[2], final[0])
    keep = [i for i in range(NUM_SLOTS) if i != 2]
    assert torch.equal(pool[keep], before[keep])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
def test_cuda_graph_capture():
    q, k, v, slope, pool = make(2, 300, 2, 128, 128, torch.bfloat16, "cuda")
    ids = slot_ids(2, "cuda")
    assert replay_equals_eager(lambda s: la.lightning_attn_func(q, k, v, slope, initial_state=s, slot_ids=ids)[0], pool)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    q, k, v, slope, pool = make(2, 33, 2, 16, 8, torch.float32, device)
    torch.library.opcheck(ops.fwd_slots, (q, k, v, slope, 0.5, pool, slot_ids(2, device), None, False))


def test_compiled_fullgraph():
    q, k, v, slope, pool = make(2, 40, 2, 16, 16, torch.float32, "cpu")
    ids = slot_ids(2, "cpu")
    expect_pool = pool.clone()
    expect, _ = la.lightning_attn_func(q, k, v, slope, initial_state=expect_pool, slot_ids=ids)
    torch._dynamo.reset()
    fn = torch.compile(lambda *a: la.lightning_attn_func(*a, initial_state=pool, slot_ids=ids)[0], fullgraph=True)
    o = fn(q, k, v, slope)
    assert torch.equal(o, expect) and torch.equal(pool, expect_pool)


def test_refuses_gradients():
    q, k, v, slope, pool = make(1, 8, 1, 4, 4, torch.float32, "cpu")
    ids = torch.tensor([0], dtype=torch.int32)
    with pytest.raises(ValueError, match="computes no gradients"):
        la.lightning_attn_func(q.requires_grad_(), k, v, slope, initial_state=pool, slot_ids=ids)
    with torch.no_grad():
        la.lightning_attn_func(q, k, v, slope, initial_state=pool, slot_ids=ids)
