"""DP-SGD training: privacy-utility on Adult, DP step cost vs non-private, the MiniLM text task.

1. Adult (all 48,842 rows, every subject consenting to training; a third held out by subject):
   held-out accuracy of non-private and DP models (epsilon 0.5, 1, 3, 8 at delta 1e-5) for logistic
   regression and an MLP, through `session.train` (governed read, budget, card), mean and standard
   deviation over seeds (each its own split, initialisation and noise); a PNG in docs/.
2. Step time and peak memory of one training step, DP vs non-private, same model, same process
   (alternating steps): MLP 100-256-256-2 at batch 256 and a 2-layer transformer (d=128, seq 64,
   batch 32), Opacus hooks and ghost clipping; plus, for the MLP, a fused per-sample clipping step
   (per-sample norms of linear layers as ||a_i|| ||g_i|| from one backward pass, then one reweighted
   matmul per layer) checked against Opacus's clipped gradient.
3. The seed's text task: support messages de-identified, all-MiniLM-L6-v2 fine-tuned (last 2 layers)
   non-privately and at epsilon 3 and 8: accuracy and wall time.

Usage: python benchmarks/dp_training.py [--part adult|steps|text|plot|all] [--quick] [--seeds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results
from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.datasets.adult import adult_schema_path, load_adult
from complai.datasets.customer_service import support_frame, support_schema_path
from complai.vault.schema import load_schema

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench" / "dp_training.json"
PLOT = ROOT / "docs" / "dp_privacy_utility.png"
EPSILONS = [0.5, 1.0, 3.0, 8.0]
DELTA = 1e-5


def _all_consent(ids: pd.Series, purpose: str, now: Any) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject": ids,
            "purpose": purpose,
            "granted_at": (now - pd.Timedelta(days=30)).isoformat(),
            "withdrawn_at": None,
            "notice_version": "bench",
            "source": "bench",
        }
    )


# --- 1. Adult ---------------------------------------------------------------------------------------

ADULT_RECIPES = {
    "logreg": {"model": "logreg", "epochs": 10, "batch_size": 1024, "learning_rate": 0.05},
    "mlp": {"model": "mlp", "hidden": [64, 64], "epochs": 10, "batch_size": 1024, "learning_rate": 0.01},
}


def adult(quick: bool, seeds: int = 3, models: list[str] | None = None, rows: int | None = None) -> dict[str, Any]:
    """Held-out accuracy per (model, epsilon) over `seeds` runs; each seed draws its own split
    (keyed hash), initialisation, Poisson batches and noise."""
    tmp = Path(tempfile.mkdtemp(prefix="complai-bench-"))
    try:
        ws = Workspace.init(tmp / "ws")
        admin = ws.session(OWNER, "administration")
        admin.create_dataset(load_schema(adult_schema_path(), ws.taxonomy))
        df = load_adult().drop(columns=["split"], errors="ignore")
        if quick or rows:
            df = df.head(rows or 8000)
        t0 = time.perf_counter()
        admin.ingest("adult", df, _all_consent(df["subject_id"], "train_ai_system", ws.clock.now()))
        print(f"ingested {len(df):,} rows in {time.perf_counter() - t0:.1f}s", flush=True)
        admin.set_budget("adult", 10_000.0, 0.5)
        s = ws.session(OWNER, "train_ai_system")
        out: dict[str, Any] = {"seeds": seeds, "rows": len(df)}
        majority: list[float] = []
        for arch in models or list(ADULT_RECIPES):
            recipe, runs = ADULT_RECIPES[arch], []
            for eps in [None, *EPSILONS]:
                kw = {"private": False} if eps is None else {"target_epsilon": eps, "delta": DELTA}
                for seed in range(seeds):
                    t0 = time.perf_counter()
                    card = s.train("adult", label="income", test_fraction=1 / 3, seed=seed, **recipe, **kw)
                    u = card["utility"]
                    majority.append(u["majority_accuracy"])
                    runs.append(
                        {
                            "target": eps,
                            "seed": seed,
                            "epsilon": card["privacy"].get("epsilon"),
                            "accuracy": u["accuracy"],
                            "auc": u["auc"],
                            "majority_accuracy": u["majority_accuracy"],
                            "noise_multiplier": card["privacy"].get("noise_multiplier"),
                            "steps": card["privacy"]["steps"],
                            "seconds": round(time.perf_counter() - t0, 2),
                        }
                    )
                    r = runs[-1]
                    print(
                        f"adult {arch:6s} eps={'inf' if eps is None else eps:>4} seed {seed}: acc {r['accuracy']:.4f} "
                        f"AUC {r['auc']:.4f} ({r['seconds']:.1f}s, sigma {r['noise_multiplier']})",
                        flush=True,
                    )
            out[arch] = {"runs": runs, "summary": _summary(runs)}
        out["majority_accuracy"] = float(np.mean(majority))
        out["training_subjects"] = card["data"]["training_subjects"]
        out["test_subjects"] = card["data"]["test_subjects"]
        ws.close()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof 1) over seeds, per target epsilon (None: non-private)."""
    rows = []
    for eps in [None, *EPSILONS]:
        acc = np.array([r["accuracy"] for r in runs if r["target"] == eps])
        auc = np.array([r["auc"] for r in runs if r["target"] == eps])
        achieved = [r["epsilon"] for r in runs if r["target"] == eps]
        rows.append(
            {
                "target": eps,
                "epsilon_max": None if eps is None else max(achieved),
                "accuracy_mean": float(acc.mean()),
                "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "auc_mean": float(auc.mean()),
                "runs": len(acc),
            }
        )
    base = rows[0]["accuracy_mean"]
    for r in rows:
        r["points_below_non_private"] = round(100 * (base - r["accuracy_mean"]), 2)
    return rows


def plot(result: dict[str, Any]) -> None:
    """Accuracy against epsilon (log scale), mean and standard deviation over seeds; the non-private
    models and the majority class as horizontal references; the legend beside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.0), dpi=150)
    dodge = {"logreg": 0.96, "mlp": 1.04}  # side by side, so that the error bars do not cover each other
    for arch, marker in (("logreg", "o"), ("mlp", "s")):
        if arch not in result:
            continue
        rows = result[arch]["summary"]
        private = rows[1:]
        xs = [r["target"] * dodge[arch] for r in private]
        ys = [100 * r["accuracy_mean"] for r in private]
        err = [100 * r["accuracy_std"] for r in private]
        line = ax.errorbar(xs, ys, yerr=err, marker=marker, capsize=3, label=f"{arch}, DP-SGD (mean ± sd)")
        color = line.lines[0].get_color()
        base, sd = 100 * rows[0]["accuracy_mean"], 100 * rows[0]["accuracy_std"]
        ax.axhline(base, color=color, ls="--", lw=1, label=f"{arch}, non-private (mean)")
        ax.axhspan(base - sd, base + sd, color=color, alpha=0.12, lw=0)
    ax.axhline(100 * result["majority_accuracy"], color="grey", ls=":", lw=1.2, label="majority class")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(EPSILONS, [f"{e:g}" for e in EPSILONS])
    ax.set_xlim(EPSILONS[0] * 0.7, EPSILONS[-1] * 1.4)
    ax.set_xlabel("privacy budget ε per subject (log scale; δ = 1e-5, PRV accountant)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(
        f"Adult income > 50K, {result['rows']:,} subjects: privacy vs utility ({result['seeds']} seeds per point)"
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, bbox_inches="tight")


# --- 2. step cost -----------------------------------------------------------------------------------


def _mlp() -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(100, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))


class TinyTransformer(nn.Module):
    """A 2-layer transformer encoder classifier (d=128, 4 heads, sequence 64)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(1000, 128)
        self.pos = nn.Embedding(64, 128)
        layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1]).unsqueeze(0).expand_as(x).contiguous()
        return self.head(self.encoder(self.embed(x) + self.pos(pos)).mean(1))


def _transformer() -> Any:
    from opacus.validators import ModuleValidator

    return ModuleValidator.fix(TinyTransformer())


def _data(kind: str) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    if kind.startswith("mlp"):
        b = 1024 if kind == "mlp_b1024" else 256
        return torch.randn(b, 100, generator=g), torch.randint(0, 2, (b,), generator=g)
    return torch.randint(0, 1000, (32, 64), generator=g), torch.randint(0, 2, (32,), generator=g)


class FusedLinearClipper:
    """DP-SGD step for networks whose trainable layers are all nn.Linear on (batch, features) inputs:
    per-sample gradient norms from one backward pass (||g_i a_i^T|| = ||g_i|| ||a_i||, bias ||g_i||),
    then the clipped sum as one reweighted matmul per layer, then Gaussian noise. Autograd computes
    only the gradients with respect to activations (the parameters are taken out of the graph and the
    input made to require a gradient), so the weight-gradient matmul is done once, already clipped."""

    def __init__(self, model: Any, max_grad_norm: float, noise_multiplier: float) -> None:
        from torch import nn

        self.layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.c, self.sigma = max_grad_norm, noise_multiplier
        self.acts: dict[Any, Any] = {}
        self.grads: dict[Any, Any] = {}
        for m in self.layers:
            m.register_forward_hook(lambda mod, inp, out: self.acts.__setitem__(mod, inp[0].detach()))
            m.register_full_backward_hook(lambda mod, gin, gout: self.grads.__setitem__(mod, gout[0].detach()))
            for p in m.parameters():
                p.requires_grad_(False)

    def clipped_sum(self) -> dict[Any, tuple[Any, Any]]:
        sq = None
        for m in self.layers:
            a, g = self.acts[m], self.grads[m]
            part = (g * g).sum(1) * ((a * a).sum(1) + 1.0)  # weight and bias together
            sq = part if sq is None else sq + part
        scale = (self.c / (sq.sqrt() + 1e-6)).clamp(max=1.0)  # type: ignore[union-attr]
        out = {}
        for m in self.layers:
            g = self.grads[m] * scale[:, None]
            out[m] = (g.t() @ self.acts[m], g.sum(0))
        return out

    def step(self, optimizer: Any, batch_size: int) -> None:
        sums = self.clipped_sum()
        total = sum(m.weight.numel() + m.bias.numel() for m in self.layers)
        noise = torch.randn(total) * (self.sigma * self.c)  # one draw for every parameter
        at = 0
        for m, (gw, gb) in sums.items():
            for p, g in ((m.weight, gw), (m.bias, gb)):
                p.grad = (g + noise[at : at + g.numel()].view_as(g)) / batch_size
                at += g.numel()
        optimizer.step()


def _prepare(kind: str, mode: str) -> tuple[Any, Any, Any, Any]:
    """(step function, model, optimizer, inputs) for one configuration."""
    import torch
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
    from torch import nn

    torch.manual_seed(0)
    model = _mlp() if kind.startswith("mlp") else _transformer()
    x, y = _data(kind)
    crit = nn.CrossEntropyLoss()
    if mode == "plain":
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            crit(model(x), y).backward()
            opt.step()

        return step, model, opt, x
    if mode == "fused":
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        clipper = FusedLinearClipper(model, 1.0, 1.0)
        xg = x.clone().requires_grad_(True)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            crit(model(xg), y).backward()
            clipper.step(opt, len(y))

        return step, model, opt, x
    if mode == "ghost":
        from opacus.grad_sample import GradSampleModuleFastGradientClipping

        gsm = GradSampleModuleFastGradientClipping(model, batch_first=True, loss_reduction="mean", max_grad_norm=1.0)
        from opacus.optimizers import DPOptimizerFastGradientClipping

        opt = DPOptimizerFastGradientClipping(
            torch.optim.SGD(gsm.parameters(), lr=0.01),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=len(y),
        )
        dcrit = DPLossFastGradientClipping(gsm, opt, nn.CrossEntropyLoss(reduction="mean"), "mean")

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            dcrit(gsm(x), y).backward()
            opt.step()

        return step, gsm, opt, x
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", force_functorch=False)
    opt = DPOptimizer(
        torch.optim.SGD(gsm.parameters(), lr=0.01), noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=len(y)
    )

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        crit(gsm(x), y).backward()
        opt.step()

    return step, gsm, opt, x


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_worker(kind: str, mode: str, q: Any) -> None:
    import threading

    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    step, *_ = _prepare(kind, mode)
    step()
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0002)

    t = threading.Thread(target=sample)
    t.start()
    for _ in range(5):
        step()
    done.set()
    t.join()
    q.put((base, peak[0]))


def _peak_rss(kind: str, mode: str) -> float:
    """Extra resident memory (MiB) a training step needs beyond the built model: the peak, sampled every
    0.2 ms over 5 steps in a fresh process, minus the resident size before them."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_rss_worker, args=(kind, mode, q))
    p.start()
    base, peak = q.get(timeout=600)
    p.join()
    return max(peak - base, 0) / 2**20


def check_fused() -> float:
    """Largest relative difference between the fused clipped sum and Opacus's (no noise)."""
    import torch
    from opacus import GradSampleModule
    from torch import nn

    torch.manual_seed(1)
    model = _mlp()
    x, y = _data("mlp")
    x = x * 5  # make clipping bite
    clipper = FusedLinearClipper(model, 1.0, 0.0)
    nn.CrossEntropyLoss(reduction="sum")(model(x.clone().requires_grad_(True)), y).backward()
    fused = clipper.clipped_sum()
    ref_model = _mlp()
    ref_model.load_state_dict(model.state_dict())
    gsm = GradSampleModule(ref_model, loss_reduction="sum")
    nn.CrossEntropyLoss(reduction="sum")(gsm(x), y).backward()
    layers = [m for m in ref_model.modules() if isinstance(m, nn.Linear)]
    norms = torch.cat([torch.cat([m.weight.grad_sample.flatten(1), m.bias.grad_sample], 1) for m in layers], 1).norm(
        dim=1
    )
    scale = (1.0 / (norms + 1e-6)).clamp(max=1.0)
    worst = 0.0
    for fm, rm in zip(clipper.layers, layers, strict=True):
        ref_w = torch.einsum("n,n...->...", scale, rm.weight.grad_sample)
        ref_b = torch.einsum("n,n...->...", scale, rm.bias.grad_sample)
        gw, gb = fused[fm]
        worst = max(worst, float((gw - ref_w).norm() / ref_w.norm()), float((gb - ref_b).norm() / ref_b.norm()))
    return worst


def steps(quick: bool) -> dict[str, Any]:
    import torch

    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    out: dict[str, Any] = {"fused_vs_opacus_max_relative_error": check_fused()}
    reps = 10 if quick else 40
    configs = (
        ("mlp", ["plain", "hooks", "ghost", "fused"]),
        ("mlp_b1024", ["plain", "ghost", "fused"]),
        ("transformer", ["plain", "hooks", "ghost"]),
    )
    for kind, modes in configs:
        fns = {m: _prepare(kind, m)[0] for m in modes}
        for fn in fns.values():
            fn()  # warm up
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(reps):  # alternate so that drift hits every mode alike
            for m, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[m].append(time.perf_counter() - t0)
        med = {m: float(np.median(v)) for m, v in times.items()}
        mem = {m: _peak_rss(kind, m) for m in modes}
        out[kind] = {
            m: {
                "step_ms": round(1000 * med[m], 3),
                "ratio_vs_plain": round(med[m] / med["plain"], 2),
                "step_memory_mib": round(mem[m], 1),
                "memory_ratio_vs_plain": round(mem[m] / max(mem["plain"], 0.1), 2),
            }
            for m in modes
        }
        for m in modes:
            r = out[kind][m]
            print(
                f"{kind:11s} {m:6s}: {r['step_ms']:8.2f} ms/step ({r['ratio_vs_plain']:.2f}x), "
                f"step memory {r['step_memory_mib']:.1f} MiB ({r['memory_ratio_vs_plain']:.2f}x)",
                flush=True,
            )
    out["profile_hooks_mlp"] = profile_hooks()
    return out


def profile_hooks() -> list[dict[str, Any]]:
    """Where a hooks-mode DP step of the MLP spends its time (top operators)."""
    from torch.profiler import ProfilerActivity, profile

    step, *_ = _prepare("mlp", "hooks")
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:6]:
        rows.append({"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1000 / 5, 3)})
    return rows


# --- 3. MiniLM text task ----------------------------------------------------------------------------


def text(quick: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="complai-bench-"))
    n = 600 if quick else 2000
    try:
        ws = Workspace.init(tmp / "ws")
        admin = ws.session(OWNER, "administration")
        admin.create_dataset(load_schema(support_schema_path(), ws.taxonomy))
        admin.ingest("support_messages", support_frame(n, seed=11, label_noise=0.1))
        admin.set_budget("support_messages", 100.0, 0.5)
        s = ws.session(OWNER, "train_ai_system")
        rows = []
        for eps in [None, 3.0, 8.0]:
            kw = {"private": False} if eps is None else {"target_epsilon": eps, "delta": 1e-5}
            t0 = time.perf_counter()
            card = s.train(
                "support_messages",
                label="intent",
                text="message",
                model="bert",
                encoder="minilm",
                trainable_layers=2,
                epochs=3,
                batch_size=32,
                learning_rate=1e-3,
                test_fraction=0.25,
                **kw,
            )
            rows.append(
                {
                    "epsilon": card["privacy"].get("epsilon"),
                    "accuracy": card["utility"]["accuracy"],
                    "majority_accuracy": card["utility"]["majority_accuracy"],
                    "wall_s": round(time.perf_counter() - t0, 1),
                    "training_s": card["training"]["seconds"],
                }
            )
            r = rows[-1]
            print(
                f"MiniLM eps={'inf' if eps is None else eps}: acc {r['accuracy']:.4f} "
                f"(wall {r['wall_s']}s, training {r['training_s']}s)",
                flush=True,
            )
        ws.close()
        return {"messages": n, "label_noise": 0.1, "runs": rows}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["adult", "steps", "text", "plot", "all"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3, help="runs per point of the Adult privacy-utility curve")
    ap.add_argument("--models", default="logreg,mlp", help="models of the Adult curve (comma-separated)")
    ap.add_argument("--rows", type=int, default=None, help="the first ROWS of Adult only (default: all 48,842)")
    args = ap.parse_args()
    result: dict[str, Any] = {}
    if OUT.exists():
        import json

        result = json.loads(OUT.read_text())
        result.pop("machine", None)
    if args.part in ("adult", "all"):
        result["adult"] = adult(args.quick, args.seeds, args.models.split(","), args.rows)
        write_results(OUT, result)  # kept even if the plot fails; `--part plot` redraws it from the file
    if args.part in ("steps", "all"):
        result["steps"] = steps(args.quick)
    if args.part in ("text", "all"):
        result["text"] = text(args.quick)
    write_results(OUT, result)
    if args.part in ("adult", "all", "plot"):
        plot(result["adult"])
    print(f"results: {OUT}")


if __name__ == "__main__":
    main()
