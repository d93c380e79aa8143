"""decode_tokens: K tokens per sequence in one call (multi-token decode, speculative verify),
from the sequences' own states or from slots of a state pool; lightning_attn_decode's slot_ids.

Against the float64 reference (tests/reference.py) and against K single decode steps of the
same device; partial acceptance; pool calls against the dense op on gathered states, with the
slots no sequence names left bit-identical.
"""
import pytest
import torch

import lightning_attn as la
from conftest import DEVICES, replay_equals_eager
from reference import lightning_attn_ref, rel_err

ops = torch.ops.lightning_attn
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def make(B, K, H, Dk, Dv, dtype, device, rows=None):
    q = (torch.randn(B, K, H, Dk, device=device) * Dk ** -0.5).to(dtype)
    k = (torch.randn(B, K, H, Dk, device=device) * 0.5).to(dtype)
    v = torch.randn(B, K, H, Dv, device=device).to(dtype)
    state = torch.randn(rows or B, H, Dk, Dv, device=device) * 0.3
    slope = torch.rand(H, device=device) * 0.5
    return q, k, v, state, slope


def ref_states(q, k, v, state, slope, scale=1.0):
    """o [B, K, H, Dv] and the state after each token [B, K, H, Dk, Dv], float64."""
    o, _ = lightning_attn_ref(q, k, v, slope, scale, state)
    states = torch.stack([lightning_attn_ref(q[:, :t], k[:, :t], v[:, :t], slope, scale, state)[1]
                          for t in range(1, q.shape[1] + 1)], 1)
    return o, states


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("B,K,H,Dk,Dv", [(1, 1, 1, 1, 1), (3, 4, 2, 64, 64), (2, 5, 3, 33, 17), (2, 16, 2, 256, 256),
                                         (1, 3, 4, 128, 128), (4, 2, 1, 7, 100)])
def test_against_reference(device, dtype, B, K, H, Dk, Dv):
    q, k, v, state, slope = make(B, K, H, Dk, Dv, dtype, device)
    ro, rs = ref_states(q, k, v, state, slope, 0.7)
    s = state.clone()
    o, states = la.lightning_attn_decode_tokens(q, k, v, s, slope, 0.7, output_states=True)
    assert o.shape == (B, K, H, Dv) and o.dtype == dtype and states.dtype == torch.float32
    assert rel_err(o, ro) < TOL[dtype] and rel_err(states, rs) < 1e-5
    assert torch.equal(s, state), "output_states reads the state only"
    o2, none = la.lightning_attn_decode_tokens(q, k, v, s, slope, 0.7)
    assert none is None and torch.equal(o2, o)
    assert rel_err(s, rs[:, -1]) < 1e-5, "without output_states the state advances by K"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B", [1, 5, 17, 40, 80])
@pytest.mark.parametrize("K,Dk,Dv", [(1, 128, 128), (3, 128, 128), (1, 256, 100), (2, 64, 50)])
def test_every_column_slicing(device, B, K, Dk, Dv):
    """B x H from 4 to 320: on CUDA the decode kernel cuts each state into more, narrower column
    slices the further B x H is below twice the SM count, so this spans its slicings from many
    slices per head to one; Dv = 100 leaves a partial last slice, Dv = 50 takes the scalar (not
    float4) path. Outputs, advanced states (partial acceptance) and returned states
    against the float64 reference."""
    H = 4
    q, k, v, state, slope = make(B, K, H, Dk, Dv, torch.bfloat16, device)
    ro, rs = ref_states(q, k, v, state, slope, 0.7)
    o, states = la.lightning_attn_decode_tokens(q, k, v, state.clone(), slope, 0.7, output_states=True)
    assert rel_err(o, ro) < TOL[torch.bfloat16] and rel_err(states, rs) < 1e-5
    accepted = torch.arange(B, device=device, dtype=torch.int32) % (K + 1)
    s = state.clone()
    o2, _ = la.lightning_attn_decode_tokens(q, k, v, s, slope, 0.7, num_accepted=accepted)
    assert torch.equal(o2, o)
    want = torch.stack([state[b].double() if a == 0 else rs[b, a - 1] for b, a in enumerate(accepted.tolist())])
    assert rel_err(s, want) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_equals_k_decode_steps(device, dtype):
    q, k, v, state, slope = make(3, 6, 4, 64, 32, dtype, device)
    s_steps, outs = state.clone(), []
    for t in range(6):
        outs.append(la.lightning_attn_decode(q[:, t], k[:, t], v[:, t], s_steps, slope))
    s = state.clone()
    o, _ = la.lightning_attn_decode_tokens(q, k, v, s, slope)
    exact = device == "cuda"  # the same per-element arithmetic as the one-token kernel
    for t in range(6):
        if exact:
            assert torch.equal(o[:, t], outs[t]), t
        else:
            assert rel_err(o[:, t], outs[t]) < TOL[dtype], t
    assert torch.equal(s, s_steps) if exact else rel_err(s, s_steps) < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_partial_acceptance(device):
    B, K = 5, 4
    q, k, v, state, slope = make(B, K, 2, 32, 32, torch.bfloat16, device)
    _, states = la.lightning_attn_decode_tokens(q, k, v, state.clone(), slope, output_states=True)
    for dtype in (torch.int32, torch.int64):
        accepted = torch.tensor([0, 1, 4, 2, 3], dtype=dtype, device=device)
        s = state.clone()
        o, _ = la.lightning_attn_decode_tokens(q, k, v, s, slope, num_accepted=accepted)
        for b, a in enumerate(accepted.tolist()):
            assert torch.equal(s[b], state[b] if a == 0 else states[b, a - 1]), (b, a)
        o_all, _ = la.lightning_attn_decode_tokens(q, k, v, state.clone(), slope, output_states=True)
        assert torch.equal(o, o_all), "outputs for all K tokens, whatever is accepted"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["advance", "states", "accepted"])
def test_pool_equals_dense_on_gathered_states(device, mode):
    B, K, H, D, slots = 4, 3, 2, 64, 7
    q, k, v, pool, slope = make(B, K, H, D, D, torch.bfloat16, device, rows=slots)
    ids = torch.tensor([3, -1, 0, 5], dtype=torch.int32, device=device)
    live = ids >= 0
    kw = dict(output_states=mode == "states")
    if mode == "accepted":
        kw["num_accepted"] = torch.tensor([2, 1, 0, 3], device=device)
    dense = pool[ids[live].long()].clone()
    do, dstates = la.lightning_attn_decode_tokens(
        q[live], k[live], v[live], dense, slope,
        **{**kw, "num_accepted": kw["num_accepted"][live] if "num_accepted" in kw else None})
    before = pool.clone()
    o, states = la.lightning_attn_decode_tokens(q, k, v, pool, slope, slot_ids=ids, **kw)
    assert torch.equal(o[live], do)
    assert torch.equal(o[~live], torch.zeros_like(o[~live])), "a skipped sequence gives zeros"
    if mode == "states":
        assert torch.equal(states[live], dstates) and torch.equal(states[~live], torch.zeros_like(states[~live]))
    assert torch.equal(pool[ids[live].long()], dense)
    untouched = [i for i in range(slots) if i not in ids.tolist()]
    assert torch.equal(pool[untouched], before[untouched]), "slots no sequence names stay bit-identical"


@pytest.mark.parametrize("device", DEVICES)
def test_decode_with_slot_ids(device):
    q, k, v, pool, slope = make(3, 1, 2, 16, 8, torch.float32, device, rows=5)
    ids = torch.tensor([4, 1, -1], dtype=torch.int32, device=device)
    dense = pool[[4, 1]].clone()
    ref = la.lightning_attn_decode(q[:2, 0], k[:2, 0], v[:2, 0], dense, slope)
    before = pool.clone()
    o = la.lightning_attn_decode(q[:, 0], k[:, 0], v[:, 0], pool, slope, slot_ids=ids)
    assert o.shape == (3, 2, 8)
    assert rel_err(o[:2], ref) < 1e-6 and torch.equal(o[2], torch.zeros_like(o[2]))
    assert rel_err(pool[[4, 1]], dense) < 1e-6 and torch.equal(pool[[0, 2, 3]], before[[0, 2, 3]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_out_of_range_ids_skip_and_accepted_is_clamped():
    """Documented CUDA behaviour (no host sync to check values): ids outside [0, num_slots) skip
    their sequence like -1; num_accepted is clamped to [0, K]."""
    q, k, v, pool, slope = make(3, 2, 2, 16, 16, torch.float32, "cuda", rows=2)
    before = pool.clone()
    ids = torch.tensor([7, -5, 1], dtype=torch.int32, device="cuda")
    o, _ = la.lightning_attn_decode_tokens(q, k, v, pool, slope, slot_ids=ids,
                                           num_accepted=torch.tensor([1, 1, 9], device="cuda"))
    assert torch.equal(o[:2], torch.zeros_like(o[:2])) and torch.equal(pool[0], before[0])
    dense = before[1:2].clone()
    la.lightning_attn_decode_tokens(q[2:], k[2:], v[2:], dense, slope)
    assert torch.equal(pool[1], dense[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_with_pool():
    q, k, v, pool, slope = make(2, 3, 2, 64, 64, torch.bfloat16, "cuda", rows=4)
    ids = torch.tensor([2, 0], dtype=torch.int32, device="cuda")
    assert replay_equals_eager(lambda s: la.lightning_attn_decode_tokens(q, k, v, s, slope, slot_ids=ids)[0], pool)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_decode_tokens(device):
    q, k, v, pool, slope = make(2, 3, 2, 8, 4, torch.float32, device, rows=3)
    ids = torch.tensor([2, -1], dtype=torch.int32, device=device)
    torch.library.opcheck(ops.decode_tokens.default, (q, k, v, pool[:2].clone(), slope, 1.0, None, None, True))
    torch.library.opcheck(ops.decode_tokens.default, (q, k, v, pool, slope, 0.5, ids, None, False))
    torch.library.opcheck(ops.decode_tokens.default,
                          (q, k, v, pool, None, 1.0, ids, torch.tensor([1, 3], device=device), False))


def test_compiled_fullgraph():
    q, k, v, pool, slope = make(2, 3, 2, 8, 4, torch.float32, "cpu", rows=3)
    ids = torch.tensor([2, 0], dtype=torch.int32)
    eager_pool = pool.clone()
    eager, es = la.lightning_attn_decode_tokens(q, k, v, eager_pool, slope, slot_ids=ids, output_states=True)
    f = torch.compile(lambda *a: la.lightning_attn_decode_tokens(*a, slot_ids=ids, output_states=True),
                      fullgraph=True, backend="aot_eager")
    o, s = f(q, k, v, pool, slope)
    assert torch.equal(o, eager) and torch.equal(s, es)
