"""Serving: continuous batching of a seeded request trace, TNL on a state pool against the
Transformer on a static KV cache with the same number of request slots.

The trace (seeded): requests arrive as a Poisson process (--rate requests/s), each with a
prompt of random tokens (length uniform in --prompt-lens) and a number of tokens to generate
(uniform in --output-lens); a sweep over the number of slots C (--slots) runs 2C + 8 requests
each, so every C sees a queue that fills its slots.

The engine, the same for both models: when a request has arrived and a slot is free, its
prompt is prefilled alone into that slot (the first token comes from the prefill); then one
decode step runs over all C slots at once (greedy), rows without a request masked:
    TNL          ``model.new_cache(num_slots=C)``: float32 states [C, H, Dk, Dv] per layer; the
                 step's decode op reads and updates the pool rows through ``slot_ids`` (-1 for
                 a free slot, skipped), the prefill writes its final state into its slot.
    Transformer  ``new_cache(C, max_len).make_static(per_row=True)``: keys/values
                 [C, H, max_len, D] per layer and one length per row; the prefill's keys are
                 copied into the row, the step writes at each row's length and attends to all
                 max_len positions with a mask (HF's StaticCache, one length per row).
With --shared-prefix P every prompt starts with the same P tokens (a system prompt); with
--prefix-cache both models reuse them and prefill the rest of each later prompt only: TNL keeps
the states after them from the first request's prefill (a checkpoint, ``cache.checkpoint_every``)
and seeds each later slot with them (``cache.load_states``, L x H x Dk x Dv floats whatever P);
the Transformer keeps the prefix's keys and values (L x 2 x P x C) and copies them into each
request's cache before its prefill.
The step (forward, cache update, argmax) is one CUDA graph on CUDA (--no-cuda-graphs: eager;
--compile: torch.compile before capture), captured once per C and replayed while requests
come and go. After every step the tokens are copied to the host, as a server streaming them
would, and timestamped. tokens/s = generated tokens / time from the first arrival to the last
token; per-token latency = time between a request's consecutive tokens (p50/p99); TTFT = first
token minus arrival. --check compares every request's tokens with greedy generation of that
prompt alone (model.generate with temperature 0) and fails on a difference, except a near-tie:
where the solo logits of the two tokens at the first differing position are within --tie-ulps
units in the last place of the logits' dtype at their magnitude (bf16 GEMMs over C rows and over
one row round differently; a float32 model gets a correspondingly strict check). Each
divergence's position, gap and gap in ulps go into serving.json.

GPU run (385M, bf16):
    python benchmarks/bench_serving.py --out benchmarks/results/h200
Prefix caching (GPU): ... --slots 16,64 --shared-prefix 1024 --prefix-cache --check
CPU smoke test:
    python benchmarks/bench_serving.py --device cpu --preset cpu-tiny --slots 1,4 \
        --prompt-lens 8,32 --output-lens 4,16 --check --out /tmp/serve
Writes serving.json and serving.png into --out.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generation import add_runtime_args, build, resolve_runtime  # noqa: E402
from bench_training_speed import env_info, sync  # noqa: E402
from lightning_attn.graphs import capture_graph  # noqa: E402


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="385M", help="TNL preset; the baseline matches it")
    p.add_argument("--n-layers", type=int, default=None, help="override the preset's depth")
    p.add_argument("--models", default="tnl,transformer")
    p.add_argument("--slots", default="1,4,16,64", help="numbers of concurrent request slots C")
    p.add_argument("--prompt-lens", default="64,1024", help="min,max prompt length")
    p.add_argument("--output-lens", default="64,256", help="min,max generated tokens per request")
    p.add_argument("--rate", type=float, default=200.0, help="mean arrivals per second")
    p.add_argument("--check", action="store_true",
                   help="tokens must equal greedy generation of each prompt alone, up to near-ties (--tie-ulps)")
    p.add_argument("--tie-ulps", type=float, default=4.0,
                   help="--check: a divergence where the solo logits of the two tokens differ by at most this many "
                        "ulps of the logits' dtype is a near-tie")
    p.add_argument("--max-seconds", type=float, default=240.0, help="wall-time budget; later runs are skipped")
    p.add_argument("--shared-prefix", type=int, default=0,
                   help="every prompt starts with the same P tokens (a system prompt) before its own --prompt-lens")
    p.add_argument("--prefix-cache", action="store_true",
                   help="keep the shared prefix's states (TNL: a checkpoint of the first prefill) or keys and "
                        "values (Transformer) and prefill only the rest of each later prompt from them")
    add_runtime_args(p, graphs_help="the decode step as one CUDA graph (default on CUDA)",
                     compile_help="torch.compile the decode step before capture")
    return resolve_runtime(p.parse_args(argv))


def make_trace(n, args, vocab):
    """n requests: arrival (s), prompt (LongTensor), tokens to generate; seeded."""
    g = np.random.default_rng(args.seed)
    lo_p, hi_p = (int(x) for x in args.prompt_lens.split(","))
    lo_o, hi_o = (int(x) for x in args.output_lens.split(","))
    arrivals = np.cumsum(g.exponential(1.0 / args.rate, n))
    arrivals -= arrivals[0]  # the first request arrives at 0
    gen = torch.Generator().manual_seed(args.seed)
    prefix = torch.randint(0, vocab, (args.shared_prefix,), generator=gen)
    return [{"id": i, "arrival": float(arrivals[i]),
             "prompt": torch.cat([prefix, torch.randint(0, vocab, (int(g.integers(lo_p, hi_p + 1)),), generator=gen)]),
             "out_len": int(g.integers(lo_o, hi_o + 1))} for i in range(n)]


class Engine:
    """C request slots of one model; ``admit`` prefills a prompt into a slot, ``step`` decodes
    one token for every slot (rows without a request masked), tokens in ``self.tok [C]``."""

    def __init__(self, model, kind, C, max_len, device, graph, compile_step, prefix_len=0, compile_mode=None):
        self.model, self.kind, self.C, self.device = model, kind, C, device
        # prefix caching: after the first prefill, the states (TNL) or keys and values (Transformer)
        # of its first prefix_len tokens
        self.prefix_len, self.prefix_states = prefix_len, None
        self.tok = torch.zeros(C, dtype=torch.long, device=device)
        self.rows = torch.full((C,), -1, dtype=torch.int32, device=device)  # slot of each row, -1: free
        self.one = torch.zeros(1, dtype=torch.int32, device=device)
        if kind == "tnl":
            self.cache = model.new_cache(num_slots=C)
        else:
            self.cache = model.new_cache(C, max_len).make_static(per_row=True)
        self.fwd = torch.compile(model, dynamic=False, mode=compile_mode) if compile_step else model
        self.graph = None
        self._warm_up(graph)

    def prefix_bytes(self):
        return sum(t.numel() * t.element_size() for t in self.prefix_states or [])

    def cache_bytes(self):
        c = self.cache
        ts = c.states if self.kind == "tnl" else c.k + c.v
        return sum(t.numel() * t.element_size() for t in ts)

    def _step(self):
        if self.kind == "tnl":
            self.cache.use_slots(self.rows)
        nxt = self.fwd(self.tok[:, None], cache=self.cache).logits[:, -1].argmax(dim=-1)
        self.tok.copy_(nxt)

    def _warm_up(self, graph):
        """Steps with every slot free (TNL: skipped; Transformer: lengths restored after), then
        the capture."""
        saved = None if self.kind == "tnl" else self.cache.length.clone()
        if graph:
            self.graph, _ = capture_graph(self._step)
        else:
            self._step()
        if saved is not None:
            self.cache.length.copy_(saved)
        self.tok.zero_()

    @torch.no_grad()
    def admit(self, slot, prompt):
        p = prompt.to(self.device)[None]  # [1, P]
        if self.kind == "tnl":
            self.one.fill_(slot)
            self.cache.reset_slots(self.one)
            self.cache.use_slots(self.one)
            P = self.prefix_len
            keep = P and self.prefix_states is None  # the first request: keep its state after the prefix
            if P and not keep:  # a cached prefix: prefill the rest only
                self.cache.load_states(self.one, self.prefix_states, P)
                p = p[:, P:]
            if keep:  # a checkpoint every P tokens; the first one is the prefix's
                self.cache.checkpoint_every = P
            logits = self.model(p, cache=self.cache, num_logits_to_keep=1).logits[:, -1]
            if keep:
                self.prefix_states = [c[:, 0].clone() for c in self.cache.checkpoints]
                self.cache.checkpoint_every, self.cache.checkpoints = None, [None] * self.cache.num_layers
        else:
            one = self.model.new_cache(1, p.shape[1])
            P = self.prefix_len
            if P and self.prefix_states is not None:  # a cached prefix: its keys and values, then the rest
                for dst, src in zip(one.k + one.v, self.prefix_states):
                    dst[:, :, :P] = src
                one.length = P
                logits = self.model(p[:, P:], cache=one, num_logits_to_keep=1).logits[:, -1]
            else:
                logits = self.model(p, cache=one, num_logits_to_keep=1).logits[:, -1]
                if P:
                    self.prefix_states = [t[:, :, :P].clone() for t in one.k + one.v]
            for dst, src in zip(self.cache.k + self.cache.v, one.k + one.v):
                dst[slot, :, : p.shape[1]] = src[0]
            self.cache.length[slot] = p.shape[1]
        self.tok[slot] = logits.argmax(dim=-1)[0]
        self.rows[slot] = slot

    def free(self, slot):
        self.rows[slot] = -1

    @torch.no_grad()
    def step(self):
        self.graph.replay() if self.graph is not None else self._step()


def serve(engine, trace, device):
    """Run the trace through the engine; returns per-request records (tokens, timestamps)."""
    pending = sorted(trace, key=lambda r: r["arrival"])
    reqs = {r["id"]: {"arrival": r["arrival"], "out_len": r["out_len"], "prompt_len": len(r["prompt"]),
                      "tokens": [], "times": []} for r in trace}
    free, active = list(range(engine.C))[::-1], {}
    sync(device)
    t0 = time.perf_counter()
    while pending or active:
        now = time.perf_counter() - t0
        admitted = []
        while pending and free and pending[0]["arrival"] <= now:
            r = pending.pop(0)
            slot = free.pop()
            engine.admit(slot, r["prompt"])
            active[slot] = r["id"]
            admitted.append(slot)
        if admitted:
            toks = engine.tok.cpu()  # the prefill's first tokens (a sync)
            t = time.perf_counter() - t0
            for slot in admitted:
                rec = reqs[active[slot]]
                rec["tokens"].append(int(toks[slot]))
                rec["times"].append(t)
            retire(engine, reqs, active, free)
        if not active:
            if pending:
                time.sleep(max(0.0, pending[0]["arrival"] - (time.perf_counter() - t0)))
            continue
        engine.step()
        toks = engine.tok.cpu()
        t = time.perf_counter() - t0
        for slot, rid in active.items():
            reqs[rid]["tokens"].append(int(toks[slot]))
            reqs[rid]["times"].append(t)
        retire(engine, reqs, active, free)
    return reqs


def retire(engine, reqs, active, free):
    for slot in [s for s, rid in active.items() if len(reqs[rid]["tokens"]) >= reqs[rid]["out_len"]]:
        engine.free(slot)
        free.append(slot)
        del active[slot]


def summarize(reqs):
    itl = np.concatenate([np.diff(r["times"]) for r in reqs.values() if len(r["times"]) > 1] or [np.zeros(0)])
    ttft = np.array([r["times"][0] - r["arrival"] for r in reqs.values()])
    n_tok = sum(len(r["tokens"]) for r in reqs.values())
    span = max(r["times"][-1] for r in reqs.values()) - min(r["arrival"] for r in reqs.values())
    pct = (lambda a, q: float(np.percentile(a, q)) * 1e3 if len(a) else None)
    return {"requests": len(reqs), "generated_tokens": n_tok, "seconds": span, "tokens_per_s": n_tok / span,
            "itl_p50_ms": pct(itl, 50), "itl_p99_ms": pct(itl, 99),
            "ttft_p50_ms": pct(ttft, 50), "ttft_p99_ms": pct(ttft, 99)}


def check_tokens(model, kind, trace, reqs, device, tie_ulps):
    """Every request's tokens against greedy generation of its prompt alone. Returns the
    divergences, each with its first differing position and the solo logits' gap there between
    the solo token and the served one (one teacher-forced forward over prompt + solo tokens). A
    gap of at most ``tie_ulps`` units in the last place of the logits' dtype (at the larger
    logit's magnitude) is a near-tie: a batch of C rows runs other GEMM tilings than one row, and
    a low-precision model's argmax may flip where two logits are that close."""
    from lightning_attn.generation import generate
    out = []
    for r in trace:
        p = r["prompt"].to(device)
        if kind == "tnl":
            ref = generate(model, [p.tolist()], max_new_tokens=r["out_len"], temperature=0)[0]
        else:
            ref = model.generate(p[None], r["out_len"], temperature=0)[0]
        ref = [int(x) for x in ref][: r["out_len"]]
        got = reqs[r["id"]]["tokens"]
        if ref == got:
            continue
        j = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
        d = {"id": r["id"], "position": j, "gap": None, "near_tie": False}
        if j < min(len(ref), len(got)):
            ids = torch.cat([p, torch.tensor(ref[:j], dtype=torch.long, device=device)])[None]
            with torch.no_grad():
                raw = model(ids, num_logits_to_keep=1).logits[0, -1]
            logits = raw.float()
            a, b = logits[ref[j]], logits[got[j]]
            ulp = torch.finfo(raw.dtype).eps * 2.0 ** torch.floor(torch.log2(torch.maximum(a.abs(), b.abs()).clamp(min=1e-30)))
            d["gap"] = float(a - b)
            d["gap_ulps"] = float((a - b).abs() / ulp)
            top2 = logits.topk(2).values
            d["top2_gap"] = float(top2[0] - top2[1])
            d["near_tie"] = d["gap_ulps"] <= tie_ulps
        out.append(d)
    return out


def plot(records, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in sorted({r["model"] for r in records}):
        rs = sorted((r for r in records if r["model"] == kind and r["status"] == "ok"), key=lambda r: r["slots"])
        a.plot([r["slots"] for r in rs], [r["tokens_per_s"] for r in rs], "o-", label=kind)
        b.plot([r["slots"] for r in rs], [r["itl_p50_ms"] for r in rs], "o-", label=f"{kind} p50")
        b.plot([r["slots"] for r in rs], [r["itl_p99_ms"] for r in rs], "x--", label=f"{kind} p99")
    for ax, yl in ((a, "generated tokens / s"), (b, "per-token latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests (slots)")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    args = get_args(argv)
    device = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = env_info(device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    slots = [int(c) for c in args.slots.split(",")]
    max_len = args.shared_prefix + int(args.prompt_lens.split(",")[1]) + int(args.output_lens.split(",")[1])
    print(f"# serving: {info.get('gpu') or 'cpu'}, preset {args.preset}, slots {slots}, prompts {args.prompt_lens}, "
          f"outputs {args.output_lens}, rate {args.rate}/s, {args.dtype}, graphs {args.cuda_graphs}, "
          f"compile {args.compile}, shared prefix {args.shared_prefix}{' (cached)' if args.prefix_cache else ''}", flush=True)
    t_start, records, failed = time.perf_counter(), [], False
    for kind in models:
        model = build(kind, args, device)
        for C in slots:
            rec = {"model": kind, "slots": C, "status": "ok"}
            if time.perf_counter() - t_start > args.max_seconds:
                rec["status"] = "skipped: time budget"
                records.append(rec)
                continue
            trace = make_trace(2 * C + 8, args, model.config.vocab_size)
            try:
                engine = Engine(model, kind, C, max_len, device, args.cuda_graphs, args.compile,
                                prefix_len=args.shared_prefix if args.prefix_cache else 0, compile_mode=args.compile_mode)
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                reqs = serve(engine, trace, device)
            except torch.OutOfMemoryError:
                rec["status"] = "out of memory"
                records.append(rec)
                torch.cuda.empty_cache()
                continue
            rec.update(summarize(reqs), cache_mb=engine.cache_bytes() / 2**20,
                       prefix_cache_mb=engine.prefix_bytes() / 2**20)
            if device.startswith("cuda"):
                rec["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
            if args.check:
                rec["divergences"] = check_tokens(model, kind, trace, reqs, device, args.tie_ulps)
                rec["mismatched_requests"] = [d["id"] for d in rec["divergences"] if not d["near_tie"]]
                rec["near_ties"] = [d["id"] for d in rec["divergences"] if d["near_tie"]]
                failed |= bool(rec["mismatched_requests"])
            records.append(rec)
            print(f"{kind:12s} C={C:4d} {rec['tokens_per_s']:9.1f} tok/s  itl p50 {rec['itl_p50_ms']:7.2f} "
                  f"p99 {rec['itl_p99_ms']:7.2f} ms  ttft p50 {rec['ttft_p50_ms']:8.1f} ms  cache "
                  f"{rec['cache_mb']:8.1f} MB" + (f"  mismatches {rec['mismatched_requests']} near-ties {rec['near_ties']}" if args.check else ""),
                  flush=True)
            del engine
        del model
    for C in slots:
        r = {x["model"]: x for x in records if x["slots"] == C and x["status"] == "ok"}
        if "tnl" in r and "transformer" in r:
            print(f"C={C:4d}: TNL / Transformer tokens/s = {r['tnl']['tokens_per_s'] / r['transformer']['tokens_per_s']:.2f}x")
    (out / "serving.json").write_text(json.dumps({"env": info, "args": vars(args), "records": records}, indent=1))
    plot(records, out / "serving.png")
    print(f"wrote {out / 'serving.json'} and serving.png")
    if failed:
        raise SystemExit("serving tokens differ from greedy generation of the prompts alone")


if __name__ == "__main__":
    main()
