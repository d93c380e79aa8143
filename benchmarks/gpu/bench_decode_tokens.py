"""decode_tokens (K tokens per sequence, one launch) against K decode launches, and the pool
path against the dense one: H = 16, Dk = Dv = 128, bf16, float32 states; CUDA-graph replays
timed with CUDA events (median of 5 x 50 replays). Outputs are compared before timing.
    python benchmarks/gpu/bench_decode_tokens.py --out results.json
"""
import argparse
import json

import torch

import lightning_attn as la
from lightning_attn.graphs import capture_graph, replay_ms

H, D = 16, 128


def graph_time_us(fn, reps=50, rounds=5):
    return 1e3 * replay_ms(capture_graph(fn)[0], reps, rounds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    torch.manual_seed(0)
    slope = la.tnl_slopes(H, 0, 12).cuda()
    for B in (1, 16, 64):
        for K in (1, 4, 8):
            q, k, v = ((torch.randn(B, K, H, D, device="cuda") * 0.1).bfloat16() for _ in range(3))
            state0 = torch.randn(B, H, D, D, device="cuda") * 0.1
            # correctness first: one launch == K launches, bit for bit
            s1, s2 = state0.clone(), state0.clone()
            o1, _ = la.lightning_attn_decode_tokens(q, k, v, s1, slope)
            o2 = torch.stack([la.lightning_attn_decode(q[:, t], k[:, t], v[:, t], s2, slope) for t in range(K)], 1)
            same = bool(torch.equal(o1, o2) and torch.equal(s1, s2))
            assert torch.isfinite(o1).all()
            st = state0.clone()
            t_one = graph_time_us(lambda: la.lightning_attn_decode_tokens(q, k, v, st, slope))
            t_k = graph_time_us(lambda: [la.lightning_attn_decode(q[:, t], k[:, t], v[:, t], st, slope) for t in range(K)])
            pool = torch.randn(4 * B, H, D, D, device="cuda") * 0.1
            ids = torch.randperm(4 * B, device="cuda")[:B].int()
            t_pool = graph_time_us(lambda: la.lightning_attn_decode_tokens(q, k, v, pool, slope, slot_ids=ids))
            t_verify = graph_time_us(lambda: la.lightning_attn_decode_tokens(q, k, v, st, slope, output_states=True))
            rows.append(dict(B=B, K=K, one_launch_us=t_one, k_launches_us=t_k, pool_us=t_pool,
                             verify_states_us=t_verify, state_read_write_bytes=2 * B * H * D * D * 4,
                             bit_identical=same))
    dev = torch.cuda.get_device_name()
    print(f"# {dev}: decode_tokens, H={H}, D={D}, bf16, graph replays (us)")
    print("| B | K | one launch | K launches | speed-up | pool (slot_ids) | verify (+K states) | bit-identical |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['B']} | {r['K']} | {r['one_launch_us']:.1f} | {r['k_launches_us']:.1f} | "
              f"{r['k_launches_us'] / r['one_launch_us']:.2f}x | {r['pool_us']:.1f} | {r['verify_states_us']:.1f} | {r['bit_identical']} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(device=dev, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
