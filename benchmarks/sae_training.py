"""saerad vs SAELens SAE training on the same embeddings, d_sae, batch size and steps (TopK, the April-2024 ReLU SAE
and the gated SAE, the last two with the same fixed L1 coefficient on both sides), side by side in one run:
throughput (embeddings/s) as a ratio saerad/SAELens and FVU at the L0 each side reaches.

SAELens lives in its own environment (its dependencies differ from saerad's):

    python -m venv /tmp/saelens && /tmp/saelens/bin/pip install torch==2.13.0 sae-lens
    python benchmarks/sae_training.py --saelens-python /tmp/saelens/bin/python

The saerad side runs in this interpreter, the SAELens side in `--saelens-python` on the same saved embeddings; each
side times only its training loop.

The paper's step (gated, d_in 768, x64 = 49,152 features, batch 4096) against the machine's GEMM, side by side:

    python benchmarks/sae_training.py --paper-step [--baseline COMMIT]

times one GEMM of the step's shape (4096 x 768 x 49,152) and whole training steps (`Trainer._train_step`: loss,
backward, clip, Adam) in alternation, and prints the step's efficiency: the GEMMs the step must do (7: three forward,
four backward) times the GEMM's time, over the step's time. With `--baseline COMMIT` instead, the gated SAE of that
commit (its `src/saerad/sae/architectures.py`, read with git) runs beside today's: step time at `--baseline-d-sae`
(batch 4096), and FVU, L0 and dead fraction after training both on one fixed small problem.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SAELENS_SIDE = r"""
import json, sys, time, numpy as np, torch
from sae_lens import (GatedTrainingSAE, GatedTrainingSAEConfig, SAETrainer, StandardTrainingSAE,
                      StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig)
from sae_lens.config import SAETrainerConfig
args = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(args["threads"])
x = torch.from_numpy(np.load(args["data"]))
n, d = x.shape
batch, steps = args["batch"], args["steps"]
if args["arch"] == "topk":
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=args["d_sae"], k=args["k"],
                                                normalize_activations="expected_average_only_in"))
elif args["arch"] == "gated":
    sae = GatedTrainingSAE(GatedTrainingSAEConfig(d_in=d, d_sae=args["d_sae"], l1_coefficient=args["l1"],
                                                  normalize_activations="expected_average_only_in",
                                                  l1_warm_up_steps=steps // 20))
else:
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d, d_sae=args["d_sae"], l1_coefficient=args["l1"],
                                                        normalize_activations="expected_average_only_in",
                                                        l1_warm_up_steps=steps // 20))
g = torch.Generator().manual_seed(0)
def batches():
    while True:
        order = torch.randperm(n, generator=g)
        for s in range(0, n - batch + 1, batch):
            yield x[order[s:s + batch]]
cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=args["lr"],
                       lr_end=0.0, lr_warm_up_steps=steps // 20, lr_decay_steps=steps // 5,
                       n_batches_for_norm_estimate=20)
trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batches())
start = time.perf_counter()
trainer.fit()
seconds = time.perf_counter() - start
scale = trainer.activation_scaler.scaling_factor or 1.0
with torch.no_grad():
    xs = x * scale
    f = sae.encode(xs)
    err = ((xs - sae.decode(f)) ** 2).sum()
    fvu = float(err / ((xs - xs.mean(0)) ** 2).sum())
    l0 = float((f > 0).float().sum(-1).mean())
print(json.dumps({"seconds": seconds, "fvu": fvu, "l0": l0}))
"""


def saerad_side(x: torch.Tensor, arch: str, d_sae: int, k: int, l1: float, batch: int, steps: int, lr: float) -> dict:
    from saerad.sae import TrainConfig, Trainer

    n = len(x)
    epochs = max(1, round(steps * batch / n))
    # A fixed L1 coefficient as on the SAELens side, no L0 controller.
    config = TrainConfig(architecture=arch, d_sae=d_sae, k=k, sparsity_coef=None if arch == "topk" else l1,
                         epochs=epochs, batch_size=batch, lr=lr, max_steps=steps, log_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, x, tmp)
        trainer.total_steps = steps  # same schedule length as SAELens
        start = time.perf_counter()
        for step in range(steps):
            trainer._train_step(step)
        seconds = time.perf_counter() - start
        metrics, _ = trainer.measure()
    return {"seconds": seconds, "fvu": metrics["fvu"], "l0": metrics["l0"]}


def baseline_gated(commit: str):
    """The GatedSAE class of `src/saerad/sae/architectures.py` at `commit`, loaded beside today's."""
    import importlib.util

    source = subprocess.run(["git", "show", f"{commit}:src/saerad/sae/architectures.py"], capture_output=True,
                            text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    spec = importlib.util.spec_from_loader("saerad.sae._baseline_architectures", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "saerad.sae"
    exec(compile(source, f"{commit}:architectures.py", "exec"), module.__dict__)
    return module.GatedSAE


def step_seconds(trainer, repeats: int, gemm) -> tuple[float, float]:
    """Median seconds of a training step and of the GEMM, timed in alternation (contention hits both alike)."""
    steps, gemms = [], []
    trainer._train_step(0)  # warm-up: allocations, Adam state
    for step in range(1, repeats + 1):
        start = time.perf_counter()
        gemm()
        gemms.append(time.perf_counter() - start)
        start = time.perf_counter()
        trainer._train_step(step)
        steps.append(time.perf_counter() - start)
    return float(np.median(steps)), float(np.median(gemms))


def gemm_share(trainer, step: int) -> float:
    """The share of one profiled training step's time spent in its GEMMs (mm, addmm): measured inside the step, so
    contention from other processes slows both sides alike."""
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer._train_step(step)
    wall = time.perf_counter() - start
    gemm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm")) / 1e6
    return gemm / wall


def gated_trainer(x: torch.Tensor, d_sae: int, batch: int, tmp: str, cls=None, epochs: int = 1, coef=None):
    """A gated-SAE Trainer on `x` (with `cls`, another GatedSAE class in place of today's)."""
    from saerad.sae import TrainConfig, Trainer, trainer

    config = TrainConfig(architecture="gated", d_sae=d_sae, batch_size=batch, epochs=epochs, log_every=0,
                         sparsity_coef=coef)
    if cls is None:
        return Trainer(config, x, tmp)
    original = trainer.make_sae
    trainer.make_sae = lambda arch, d_in, d_sae, k: cls(d_in, d_sae, k)
    try:
        return Trainer(config, x, tmp)
    finally:
        trainer.make_sae = original


def fixed_problem() -> torch.Tensor:
    """40,000 rows of 12 of 2048 random atoms in R^192 (the SAELens comparison's synthetic embeddings)."""
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(2048, 192, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.randint(0, 2048, (40_000, 12), generator=g)
    return torch.einsum("nk,nkd->nd", torch.rand(40_000, 12, generator=g), atoms[idx]) + 0.3


def quality(cls=None) -> dict:
    """FVU, L0 and dead fraction of a gated SAE (d_sae 3072, batch 1024, 2 epochs) on the fixed problem."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = gated_trainer(fixed_problem(), 3072, 1024, tmp, cls, epochs=2, coef=4.0)
        for step in range(trainer.total_steps):
            trainer._train_step(step)
        metrics, _ = trainer.measure()
    return {k: metrics[k] for k in ("fvu", "l0", "dead_fraction")}


def paper_step(args) -> None:
    """The paper's training step against the GEMM of its shape; with --baseline, before vs after."""
    n, d_in, d_sae = 4096, 768, 768 * 64
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n, d_in, generator=g) + 1.0
    a, w = torch.randn(n, d_in, generator=g), torch.randn(d_in, d_sae, generator=g)
    if not args.baseline:
        print(f"{torch.get_num_threads()} threads; step: gated, d_in {d_in}, d_sae {d_sae}, batch {n}")
        with tempfile.TemporaryDirectory() as tmp:
            trainer = gated_trainer(x, d_sae, n, tmp)
            step, gemm = step_seconds(trainer, args.repeats, lambda: a @ w)
            share = gemm_share(trainer, args.repeats + 1)
        flops = 2 * n * d_in * d_sae
        print(f"GEMM {n}x{d_in}x{d_sae}: {gemm:.2f} s ({flops / gemm / 1e9:.0f} GFLOPS); step {step:.2f} s = "
              f"{step / gemm:.2f} GEMMs; efficiency (7 GEMMs / step) {7 * gemm / step:.0%}; share of a profiled "
              f"step's time in its GEMMs {share:.0%}")
        return
    old = baseline_gated(args.baseline)
    m = args.baseline_d_sae
    w = torch.randn(d_in, m, generator=g)
    print(f"{torch.get_num_threads()} threads; before ({args.baseline}) and after, d_sae {m}, batch {n}; steps "
          "alternate before/after, each after a GEMM; the fastest of each is kept")
    times: dict = {args.baseline: [], "today": [], "gemm": []}
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
        trainers = {args.baseline: gated_trainer(x, m, n, t1, old), "today": gated_trainer(x, m, n, t2)}
        for trainer in trainers.values():
            trainer._train_step(0)
        for step in range(1, args.repeats + 1):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                a @ w
                times["gemm"].append(time.perf_counter() - start)
                start = time.perf_counter()
                trainer._train_step(step)
                times[name].append(time.perf_counter() - start)
    gemm = min(times["gemm"])
    rows = [(name, min(times[name]), gemm, quality(cls)) for name, cls in ((args.baseline, old), ("today", None))]
    print(f"\n| gated SAE | step s (d_sae {m}) | GEMM s | step / GEMM | FVU | L0 | dead fraction |")
    print("|---|---|---|---|---|---|---|")
    for name, step, gemm, q in rows:
        print(f"| {name} | {step:.2f} | {gemm:.2f} | {step / gemm:.2f} | {q['fvu']:.4f} | {q['l0']:.2f} | "
              f"{q['dead_fraction']:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saelens-python", help="python of an environment with sae-lens")
    parser.add_argument("--paper-step", action="store_true", help="the paper's step against the GEMM (no SAELens)")
    parser.add_argument("--baseline", help="with --paper-step: a commit whose gated SAE runs beside today's")
    parser.add_argument("--baseline-d-sae", type=int, default=12288, help="d_sae of the before/after step timing")
    parser.add_argument("--repeats", type=int, default=3, help="with --paper-step: timed steps (and GEMMs)")
    parser.add_argument("--embeddings", help=".npy (n, d); default: synthetic sparse embeddings (n=40k, d=192)")
    parser.add_argument("--d-sae", type=int, default=3072)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--l1", type=float, default=2.0, help="L1 coefficient of the ReLU SAE (both sides)")
    parser.add_argument("--gated-l1", type=float, default=4.0, help="L1 coefficient of the gated SAE (both sides)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    if args.paper_step:
        return paper_step(args)
    if not args.saelens_python:
        parser.error("--saelens-python is required (or --paper-step)")
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        if args.embeddings:
            data = args.embeddings
            x = torch.from_numpy(np.load(data)).float()
        else:
            g = torch.Generator().manual_seed(0)
            atoms = torch.randn(2048, 192, generator=g)
            atoms /= atoms.norm(dim=1, keepdim=True)
            idx = torch.randint(0, 2048, (40_000, 12), generator=g)
            x = torch.einsum("nk,nkd->nd", torch.rand(40_000, 12, generator=g), atoms[idx]) + 0.3
            data = str(Path(tmp) / "x.npy")
            np.save(data, x.numpy())
        rows = []
        for arch in ("topk", "relu", "gated"):
            l1 = args.gated_l1 if arch == "gated" else args.l1
            spec = {"data": data, "arch": arch, "d_sae": args.d_sae, "k": args.k, "l1": l1, "batch": args.batch,
                    "steps": args.steps, "lr": args.lr, "threads": threads}
            run = subprocess.run([args.saelens_python, "-c", SAELENS_SIDE, json.dumps(spec)], capture_output=True,
                                 text=True)
            if run.returncode != 0:
                sys.exit(f"SAELens side failed:\n{run.stderr[-3000:]}")
            theirs = json.loads(run.stdout.strip().splitlines()[-1])
            ours = saerad_side(x, arch, args.d_sae, args.k, l1, args.batch, args.steps, args.lr)
            rows.append((arch, ours, theirs))
    n = args.steps * args.batch
    print(f"{n} embeddings ({args.steps} steps of {args.batch}), d_in={x.shape[1]}, d_sae={args.d_sae}, "
          f"{threads} threads\n")
    print("| architecture | saerad emb/s | SAELens emb/s | ratio | saerad FVU @ L0 | SAELens FVU @ L0 |")
    print("|---|---|---|---|---|---|")
    for arch, ours, theirs in rows:
        print(f"| {arch} | {n / ours['seconds']:.0f} | {n / theirs['seconds']:.0f} | "
              f"{theirs['seconds'] / ours['seconds']:.2f}x | {ours['fvu']:.3f} @ {ours['l0']:.1f} | "
              f"{theirs['fvu']:.3f} @ {theirs['l0']:.1f} |")


if __name__ == "__main__":
    main()
