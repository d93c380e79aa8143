"""Figures and the claim check for issue 6, from the JSON the three benchmarks write.

    python benchmarks/plot_paper_claims.py quality --runs OUT/tnl OUT/transformer --out OUT
        both models' training loss and validation loss in one PNG (quality_loss_curves.png),
        against training tokens (from each run's summary.json)
    python benchmarks/plot_paper_claims.py replot --dir DIR
        redraws training_speed.png / generation.png from training_speed.json / generation.json
    python benchmarks/plot_paper_claims.py check --dir DIR [--quality DIR/quality]
        prints the issue's targets beside the measured values (markdown), nothing invented:
        a value that a JSON lacks is printed as "not measured"
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def smooth(values, k):
    if k <= 1 or len(values) < k:
        return values
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_quality(runs, out_png, title=None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    names = {"tnl": "TNL", "transformer": "Transformer"}
    for i, run in enumerate(runs):
        s = json.loads((Path(run) / "summary.json").read_text())
        per_step = s["tokens_seen"] / max(1, s["steps"])
        steps = [a for a, _ in s["train_losses"]]
        losses = [b for _, b in s["train_losses"]]
        color = f"C{i}"
        name = names.get(s["arch"], s["arch"])
        k = max(1, len(losses) // 100)
        ax.plot([st * per_step / 1e6 for st in steps], smooth(losses, k), lw=0.9, alpha=0.6, color=color,
                label=f"{name} train (mean of {k} steps)")
        if s.get("val"):
            ax.plot([v["step"] * per_step / 1e6 for v in s["val"]], [v["loss"] for v in s["val"]], "o-", color=color,
                    ms=3, label=f"{name} valid ({s.get('eval_tokens')} tokens)")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats per GPT-2 token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "WikiText-103 (bundled train head), same data, tokens and seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=130)
    plt.close(fig)
    print(f"wrote {out_png}")


def replot(d):
    d = Path(d)
    if (d / "training_speed.json").exists():
        import bench_training_speed as bts
        doc = json.loads((d / "training_speed.json").read_text())
        models = [m.strip() for m in doc["args"]["models"].split(",")]
        bts.plot(doc["results"], models, d / "training_speed.png", f"{doc['args']['preset']}; {doc['env'].get('gpu')}")
        print(f"wrote {d / 'training_speed.png'}")
    if (d / "generation.json").exists():
        import bench_generation as bg
        doc = json.loads((d / "generation.json").read_text())
        models = [m.strip() for m in doc["args"]["models"].split(",")]
        bs = [int(b) for b in doc["args"]["batch_sizes"].split(",")]
        bg.plot(doc["results"], doc["memory_vs_length"], models, bs, d / "generation.png",
                f"{doc['args']['preset']}; {doc['env'].get('gpu')}")
        print(f"wrote {d / 'generation.png'}")


def _fmt(x, spec=".2f"):
    return "not measured" if x is None else format(x, spec)


def check(d, quality_dir=None):
    d = Path(d)
    rows = []
    sp = json.loads((d / "training_speed.json").read_text()) if (d / "training_speed.json").exists() else None
    if sp:
        by = {(r["model"], r["seq_len"]): r for r in sp["results"] if r.get("status") == "ok"}
        tps = lambda m, T: by[(m, T)]["tokens_per_s"] if (m, T) in by else None  # noqa: E731
        def note(*keys):  # which of the points ran with activation checkpointing (after an OOM)
            ck = [f"{m} T={T}" for m, T in keys if by.get((m, T), {}).get("grad_ckpt")]
            return f" (activation checkpointing: {', '.join(ck)})" if ck else ""

        a, b = tps("tnl", 131072), tps("tnl", 1024)
        r = a / b if a and b else None
        rows.append(("TNL tok/s at 128K / at 1K", ">= 0.90", _fmt(r, ".3f") + note(("tnl", 131072), ("tnl", 1024)),
                     None if r is None else r >= 0.9))
        for T, target in ((65536, 6.0), (1024, 1.1)):
            a, b = tps("tnl", T), tps("transformer", T)
            r = a / b if a and b else None
            rows.append((f"TNL / Transformer tok/s at T={T}", f">= {target}", _fmt(r) + note(("tnl", T), ("transformer", T)),
                         None if r is None else r >= target))
    q = None
    for cand in ([Path(quality_dir)] if quality_dir else []) + [d / "quality", d]:
        if (cand / "quality.json").exists():
            q = json.loads((cand / "quality.json").read_text())
            break
    if q:
        by = {r["arch"]: r for r in q["rows"]}
        if "tnl" in by and "transformer" in by:
            a, b = by["tnl"]["valid_ppl"], by["transformer"]["valid_ppl"]
            rows.append(("valid ppl TNL vs Transformer (BPE)", "TNL <= Transformer", f"{a:.2f} vs {b:.2f}", a <= b))
            rows.append(("test ppl TNL vs Transformer (BPE)", "(reported)",
                         f"{by['tnl']['test_ppl']:.2f} vs {by['transformer']['test_ppl']:.2f}", None))
            if by["tnl"]["tokens_seen"] != by["transformer"]["tokens_seen"]:
                rows.append(("equal training tokens", "equal", f"{by['tnl']['tokens_seen']} vs "
                             f"{by['transformer']['tokens_seen']}", False))
    ge = json.loads((d / "generation.json").read_text()) if (d / "generation.json").exists() else None
    if ge:
        for k, v in ge["checks"].items():
            if k.endswith("_B16"):
                rows.append((k.replace("_", " "), ">= 3", f"{v:.2f}", v >= 3))
        tnl = sorted((r for r in ge["memory_vs_length"] if r["model"] == "tnl" and r.get("status") == "ok"
                      and "peak_over_model_gb" in r and r["batch"] == 16), key=lambda r: r["new_tokens"])
        if len(tnl) >= 2:
            lo, hi = tnl[0]["peak_over_model_gb"], tnl[-1]["peak_over_model_gb"]
            rows.append((f"TNL peak memory above weights, B=16, {tnl[0]['new_tokens']} -> {tnl[-1]['new_tokens']} tokens",
                         "constant", f"{lo * 1024:.1f} -> {hi * 1024:.1f} MiB", abs(hi - lo) <= 0.02 * max(lo, 1e-9) + 2 / 1024))
    print("| claim | target | measured | met |")
    print("|---|---|---|---|")
    for name, target, val, ok in rows:
        print(f"| {name} | {target} | {val} | {'-' if ok is None else ('yes' if ok else 'NO')} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("quality")
    a.add_argument("--runs", nargs="+", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--title", default=None)
    b = sub.add_parser("replot")
    b.add_argument("--dir", required=True)
    c = sub.add_parser("check")
    c.add_argument("--dir", required=True)
    c.add_argument("--quality", default=None)
    args = p.parse_args()
    if args.cmd == "quality":
        Path(args.out).mkdir(parents=True, exist_ok=True)
        plot_quality(args.runs, Path(args.out) / "quality_loss_curves.png", args.title)
    elif args.cmd == "replot":
        replot(args.dir)
    else:
        check(args.dir, args.quality)


if __name__ == "__main__":
    main()
