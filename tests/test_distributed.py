"""torch.distributed on CPU (gloo): LASP-2 sequence-parallel attention and TNL under dp x sp.

Several processes on this machine, forked from a clean server process that imports torch once
(multiprocessing's "forkserver"; no fork of the pytest process itself) and joined under a deadline;
every process group is created with a timeout, so a hang fails the test instead of CI.
To keep the file fast on two cores, each process set runs all its checks in one go (a
module-scoped fixture) and the tests read their part of the results:

    4 ranks: SP attention on 4 ranks and on two groups of 2 (dense / packed documents across
             rank boundaries, with and without decay, with initial_state; float64, float32,
             bfloat16), bad set-ups, and a TNL step on a 2 x 2 (dp x sp) mesh with DDP and FSDP2;
    2 ranks: a TNL step under sp = 2 and under dp = 2, each with DDP and FSDP2 (and packed
             documents under sp = 2).

Each result is compared with the single-process op / model on the same global data.
"""
import multiprocessing
import os
import queue as queue_module
import tempfile
import time
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

import lightning_attn as la
import lightning_attn.distributed
import lightning_attn.model

COLLECTIVE_TIMEOUT_S = 60   # every collective of the workers
JOIN_TIMEOUT_S = 150        # the whole process set

# ----------------------------------------------------------------------------- process harness


def _worker(rank, world, store_path, job, queue):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)  # as conftest: uninitialised memory is NaN
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        results = job(rank, world)
        dist.barrier()
        dist.destroy_process_group()
        queue.put((rank, results, None))
    except BaseException:  # report, never hang the parent
        queue.put((rank, None, traceback.format_exc()))


def run_ranks(job, world):
    """Run ``job(rank, world) -> dict`` on ``world`` gloo processes; returns ``{rank: dict}``.

    Fails (never hangs) if a rank raises, dies, or the set runs past JOIN_TIMEOUT_S."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "lightning_attn.model", "lightning_attn.distributed"])
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_worker, args=(r, world, os.path.join(tmp, "store"), job, queue), daemon=True)
                 for r in range(world)]
        for p in procs:
            p.start()
        out, errors = {}, []
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        try:
            while len(out) < world:
                try:
                    rank, results, err = queue.get(timeout=1.0)
                except queue_module.Empty:
                    dead = [r for r, p in enumerate(procs) if p.exitcode is not None and r not in out]
                    if dead:
                        errors.append(f"rank(s) {dead} exited without a result (exit codes "
                                      f"{[procs[r].exitcode for r in dead]})")
                        break
                    if time.monotonic() > deadline:
                        errors.append(f"timed out after {JOIN_TIMEOUT_S}s waiting for the ranks (a hang?)")
                        break
                    continue
                out[rank] = results
                if err:
                    errors.append(f"rank {rank}:\n{err}")
        finally:
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
    if errors:
        pytest.fail("\n".join(errors))
    return out


def max_err(a, b):
    """max |a - b| relative to max |b| (or absolute where |b| < 1), in float64."""
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


# ----------------------------------------------------------------------------- SP attention checks

SLOPE = torch.tensor([0.35, 0.04, 0.0])  # H = 3: fast, slow and no decay in one tensor
T_LOCAL = 8
# GLOBAL document offsets over W * T_LOCAL tokens: documents crossing one and several rank
# boundaries, starting exactly at a boundary, empty ones (in the middle and at the very end)
PACKED = {
    2: [[0, 16], [0, 5, 16, 16], [0, 8, 16], [0, 0, 2, 8, 8, 9, 16]],
    4: [[0, 32], [0, 5, 32, 32], [0, 3, 3, 9, 12, 12, 14, 32], [0, 0, 3, 19, 20, 20, 29, 32], [0, 8, 16, 24, 32]],
}


def _sp_case(group, W, r, cu, slope, with_init, dtype, seed):
    """One SP attention case against the single-process op; returns (worst field, its error
    relative to the reference's max magnitude)."""
    g = torch.Generator().manual_seed(seed)
    B = 2 if cu is None else 1
    N = B if cu is None else len(cu) - 1
    H, Dk, Dv = 3, 5, 4
    q, k, v = (torch.randn(B, W * T_LOCAL, H, d, generator=g, dtype=dtype) for d in (Dk, Dk, Dv))
    h0 = torch.randn(N, H, Dk, Dv, generator=g, dtype=torch.float64).to(la.ops._state_dtype(q)) if with_init else None
    do = torch.randn(B, W * T_LOCAL, H, Dv, generator=g, dtype=dtype)
    dfin = torch.randn(N, H, Dk, Dv, generator=g, dtype=dtype)
    cut = torch.tensor(cu) if cu is not None else None

    ref = [x.clone().requires_grad_() for x in (q, k, v)] + ([h0.clone().requires_grad_()] if with_init else [])
    o_ref, f_ref = la.lightning_attn_func(*ref[:3], slope=slope, initial_state=ref[3] if with_init else None,
                                          output_final_state=True, cu_seqlens=cut)
    ((o_ref * do).sum() + (f_ref * dfin).sum()).backward()

    piece = slice(r * T_LOCAL, (r + 1) * T_LOCAL)
    loc = [x[:, piece].clone().requires_grad_() for x in (q, k, v)] + ([h0.clone().requires_grad_()] if with_init else [])
    o, f = la.distributed.sequence_parallel_attn(*loc[:3], slope=slope, group=group, cu_seqlens=cut,
                                                 initial_state=loc[3] if with_init else None,
                                                 output_final_state=True)
    ((o * do[:, piece]).sum() + (f * dfin).sum()).backward()
    f_all = f.detach().clone()
    dist.all_reduce(f_all, group=group)  # each row is held by the rank holding the sequence's last token
    errs = {"o": max_err(o, o_ref[:, piece]), "final_state": max_err(f_all, f_ref),
            "dq": max_err(loc[0].grad, ref[0].grad[:, piece]), "dk": max_err(loc[1].grad, ref[1].grad[:, piece]),
            "dv": max_err(loc[2].grad, ref[2].grad[:, piece])}
    if with_init:
        dh0 = loc[3].grad.clone()
        dist.all_reduce(dh0, group=group)  # each row on the rank where its sequence starts
        errs["d_initial_state"] = max_err(dh0, ref[3].grad)
    return max(errs.items(), key=lambda kv: kv[1])  # (worst field, its error)


def _sp_attention_checks(rank, world):
    """All cases on the whole world and, with 4 ranks, on two groups of 2. The state products
    run in slices of 3 tokens (8192 by default), so ragged slices are exercised too."""
    from lightning_attn.distributed import sequence_parallel as spm
    spm._CHUNK = 3
    groups = {world: None}
    if world == 4:
        pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        groups[2] = pairs[rank // 2]
    results = {}
    for W, group in groups.items():
        r = dist.get_rank(group)
        for cu in [None] + PACKED[W]:
            for decay in (False, True):
                for with_init in (False, True):
                    low = () if with_init else (torch.float32, torch.bfloat16)  # low precision: no init
                    for dtype in (torch.float64,) + (low if cu in (None, PACKED[W][1]) else ()):
                        key = (W, "dense" if cu is None else "cu=" + ",".join(map(str, cu)),
                               "decay" if decay else "no-decay", "init" if with_init else "no-init", str(dtype).replace("torch.", ""))
                        results[key] = _sp_case(group, W, r, cu, SLOPE if decay else None, with_init, dtype,
                                                seed=len(results))
    return results


def _bad_setup_checks(rank, world):
    """Each bad set-up must raise a clear error on every rank, and the group must stay usable."""
    from lightning_attn.distributed import parallel as par

    out = {}

    def expect(name, fn, exc=ValueError):
        try:
            fn()
            out[name] = "no error"
        except exc as e:
            out[name] = "raised: " + str(e)
        dist.barrier()  # the group still works afterwards (nobody is stuck in a collective)

    x = torch.randn(1, T_LOCAL + (rank == world - 1), 3, 4)  # the last rank holds one token more
    expect("unequal pieces", lambda: la.distributed.sequence_parallel_attn(x, x, x))
    y = torch.randn(1, T_LOCAL, 3, 4)
    expect("cu_seqlens not global", lambda: la.distributed.sequence_parallel_attn(
        y, y, y, cu_seqlens=torch.tensor([0, 3, T_LOCAL])))  # local offsets passed instead of global
    expect("sp does not divide world", lambda: par.build_mesh(sp=3))
    mesh = par.build_mesh(sp=2)
    expect("sequence not divisible by sp", lambda: par.shard_sequence(torch.zeros(2, 15), mesh))
    expect("batch not divisible by dp", lambda: par.shard_batch(torch.zeros(3, 16, dtype=torch.long), None, mesh))
    expect("no wrapper on several processes", lambda: par.parallelize_tnl(torch.nn.Linear(2, 2), mesh, "none"))
    return out


# ----------------------------------------------------------------------------- TNL training step

TNL_STEPS_4 = [(2, 2, "ddp"), (2, 2, "fsdp")]                                   # (dp, sp, wrapper)
TNL_STEPS_2 = [(1, 2, "ddp"), (1, 2, "fsdp"), (2, 1, "ddp"), (2, 1, "fsdp"), (1, 2, "ddp-packed")]
PACKED_DOCS = [0, 5, 13, 13, 27, 32]  # one packed row of 32 tokens; documents cross the sp boundary at 16
LR = 0.5


def _tnl_config():
    return la.model.TNLConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=2, glu_dim=64, max_seq_len=32)


def _tnl_batch(B=4, T=16, packed=False):
    if packed:
        B, T = 1, PACKED_DOCS[-1]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 96, (B, T + 1), generator=g)
    labels = ids[:, 1:].clone()
    labels[0, 3] = labels[-1, 11] = -100  # some ignored targets: the global mean must count them right
    return ids[:, :-1], labels


def _tnl_reference(packed=False):
    """One SGD step of the single-process model on the global batch: (loss, updated parameters)."""
    torch.manual_seed(0)
    model = la.model.TransNormerLLM(_tnl_config())
    ids, labels = _tnl_batch(packed=packed)
    loss = model(ids, labels=labels, cu_seqlens=torch.tensor(PACKED_DOCS) if packed else None).loss
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= LR * p.grad
    return loss.item(), {n: p.detach().clone() for n, p in model.named_parameters()}


def _tnl_step_checks(rank, world, steps):
    from torch.distributed.tensor import DTensor

    from lightning_attn.distributed import parallel as par

    refs = {packed: _tnl_reference(packed) for packed in {s[2].endswith("-packed") for s in steps}}
    results = {}
    for dp, sp, layout in steps:
        wrapper, packed = layout.split("-")[0], layout.endswith("-packed")
        ref_loss, ref_params = refs[packed]
        torch.manual_seed(0)
        model = la.model.TransNormerLLM(_tnl_config())
        initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        mesh = par.build_mesh(sp=sp, dp=dp)
        train_model = par.parallelize_tnl(model, mesh, wrapper)
        opt = torch.optim.SGD(train_model.parameters(), lr=LR)
        ids, labels = _tnl_batch(packed=packed)
        batch = par.shard_batch(ids, labels, mesh, cu_seqlens=torch.tensor(PACKED_DOCS) if packed else None)
        out = train_model(batch.input_ids, position_offset=batch.position_offset, cu_seqlens=batch.cu_seqlens)
        loss, loss_value = par.lm_loss(out.logits, batch.labels, mesh)
        loss.backward()
        opt.step()
        param_err = param_change = 0.0
        for name, p in model.named_parameters():
            full = p.full_tensor() if isinstance(p, DTensor) else p
            param_err = max(param_err, max_err(full, ref_params[name]))
            param_change = max(param_change, max_err(full, initial[name]))
        results[(dp, sp, layout)] = {"loss_err": abs(loss_value.item() - ref_loss), "param_err": param_err,
                                      "param_change": param_change}
        model.set_sequence_parallel(None)
    return results


def _four_rank_job(rank, world):
    return {"sp": _sp_attention_checks(rank, world), "bad": _bad_setup_checks(rank, world),
            "tnl": _tnl_step_checks(rank, world, TNL_STEPS_4)}


def _two_rank_job(rank, world):
    return {"tnl": _tnl_step_checks(rank, world, TNL_STEPS_2)}


@pytest.fixture(scope="module")
def four_ranks():
    return run_ranks(_four_rank_job, 4)


@pytest.fixture(scope="module")
def two_ranks():
    return run_ranks(_two_rank_job, 2)


# ----------------------------------------------------------------------------- tests


def _tol(dtype_name):
    """Of the error relative to max |reference|: float64 exact up to rounding; float32 tight;
    bfloat16 a few bf16 ulps (the SP output adds the carried part to an already-rounded local output)."""
    return {"float64": 1e-12, "float32": 1e-5, "bfloat16": 2e-2}[dtype_name]


@pytest.mark.parametrize("W", [2, 4])
def test_sp_attention_equals_single_process_op(four_ranks, W):
    """Outputs, final states and gradients of q, k, v (and initial_state) on every rank, every case."""
    failures, n = [], 0
    for rank, res in four_ranks.items():
        for key, (field, err) in res["sp"].items():
            if key[0] != W:
                continue
            n += 1
            if not err <= _tol(key[-1]):
                failures.append(f"rank {rank} {key}: {field} off by {err:.3g}")
    assert n >= 4 * 20, n
    assert not failures, "\n".join(failures)


def test_sp_attention_covers_varlen_decay_and_initial_state(four_ranks):
    keys = set(four_ranks[0]["sp"])
    for W in (2, 4):
        assert any(k[0] == W and k[1].startswith("cu=") and k[2] == "decay" and k[3] == "init" for k in keys)
        assert any(k[0] == W and k[1] == "dense" and k[4] == "float32" for k in keys)


@pytest.mark.parametrize("name,needle", [
    ("unequal pieces", "same length"),
    ("cu_seqlens not global", "GLOBAL offsets"),
    ("sp does not divide world", "must divide the number of processes"),
    ("sequence not divisible by sp", "not divisible by 2"),
    ("batch not divisible by dp", "not divisible by 2"),
    ("no wrapper on several processes", "choose 'ddp' or 'fsdp'"),
])
def test_bad_setups_raise_on_every_rank(four_ranks, name, needle):
    for rank, res in four_ranks.items():
        msg = res["bad"][name]
        assert msg.startswith("raised:") and needle in msg, f"rank {rank}: {name}: {msg}"


def test_check_parallel_sizes():
    from lightning_attn.distributed.parallel import check_parallel_sizes

    assert check_parallel_sizes(8, sp=4) == (2, 4)
    assert check_parallel_sizes(8, sp=2, dp=4) == (4, 2)
    for world, sp, dp in [(6, 4, None), (8, 2, 2), (4, 0, None)]:
        with pytest.raises(ValueError):
            check_parallel_sizes(world, sp, dp)


def test_sequence_parallel_attn_needs_init():
    if dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    x = torch.randn(1, 4, 2, 3)
    with pytest.raises(RuntimeError, match="init_process_group"):
        la.distributed.sequence_parallel_attn(x, x, x)


def _check_tnl(results, layout):
    for rank, res in results.items():
        r = res["tnl"][layout]
        assert r["loss_err"] < 1e-5, f"rank {rank} {layout}: loss off by {r['loss_err']:.3g}"
        assert r["param_err"] < 1e-5, f"rank {rank} {layout}: updated parameters off by {r['param_err']:.3g}"
        assert r["param_change"] > 1e-3, f"rank {rank} {layout}: the step did not move the parameters"


@pytest.mark.parametrize("layout", TNL_STEPS_2, ids=lambda l: f"dp{l[0]}-sp{l[1]}-{l[2]}")
def test_tnl_step_matches_single_process_2_ranks(two_ranks, layout):
    _check_tnl(two_ranks, layout)


@pytest.mark.parametrize("layout", TNL_STEPS_4, ids=lambda l: f"dp{l[0]}-sp{l[1]}-{l[2]}")
def test_tnl_step_matches_single_process_2x2_mesh(four_ranks, layout):
    _check_tnl(four_ranks, layout)
