"""SAE-Rad at the paper's shapes on one machine, through the real commands, on a planted sparse dictionary.

    python benchmarks/paper_scale.py --work /work/scratch/paper         # 240,000 x 768, x64 = 49,152 features
    python benchmarks/paper_scale.py --work /tmp/small --train 6000 --val 600 --test 400 --d-in 64 --concepts 60 \
        --expansion 8 --active 5 --batch 512 --epochs 6 --backbone-layers 1

Embeddings are sums of `--active` of `--concepts` random unit directions (random weights, plus noise and a common
offset), written as the embedding cache `saerad embed` writes (shards + manifest) for train, validation and test;
each row's report states its active concepts, one made-up sentence each. Then `saerad train` (gated, target L0 =
`--active`), `saerad interpret` (scored on the validation rows), `saerad build` (a randomly initialised backbone of
RAD-DINO's config, `--backbone-layers` of its 12) and `saerad evaluate` on the test rows from their cached
embeddings. Each command runs in its own process; per stage the table gives wall time, the process's peak RSS and
the disk it wrote, and at the end the share of planted concepts recovered (a decoder column at cosine >= 0.9) and
described by their own sentence. `--json` writes the numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

SYLLABLES = "ba be bi bo bu da de di do du ka ke ki ko ku ma me mi mo mu na ne ni no nu ra re ri ro ru".split()
SPLITS = ("train", "validation", "test")


def concept_name(c: int) -> str:
    """A made-up word per concept (three or more syllables), so no labeler rule reads a finding in its sentence."""
    parts = []
    for _ in range(3):
        c, r = divmod(c, len(SYLLABLES))
        parts.append(SYLLABLES[r])
    while c:
        c, r = divmod(c - 1, len(SYLLABLES))
        parts.append(SYLLABLES[r])
    return "".join(parts)


def concept_sentence(c: int) -> str:
    return f"Planted sign {concept_name(c)} is seen."


def dictionary_atoms(concepts: int, d_in: int, seed: int) -> torch.Tensor:
    """(concepts, d_in) random unit directions."""
    atoms = torch.randn(concepts, d_in, generator=torch.Generator().manual_seed(seed))
    return atoms / atoms.norm(dim=1, keepdim=True)


def synthetic_rows(atoms: torch.Tensor, n: int, active: int, seed: int,
                   noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` embeddings (each `active` concepts at weights in [0.5, 1.5], plus noise and an offset) and their concepts."""
    g = torch.Generator().manual_seed(seed)
    concepts, d_in = atoms.shape
    chosen = torch.rand(n, concepts, generator=g).topk(active, dim=1).indices  # (n, active), distinct per row
    weights = torch.zeros(n, concepts).scatter_(1, chosen, 0.5 + torch.rand(n, active, generator=g))
    offset = torch.full((d_in,), 2.0 / d_in**0.5)
    return weights @ atoms + offset + noise * torch.randn(n, d_in, generator=g), chosen


def write_cache(folder: Path, x: torch.Tensor, ids: list, split: str, dataset: str, shard_size: int = 2048) -> None:
    """The embedding cache `saerad embed` writes: safetensors shards with their settings key, then the manifest."""
    from saerad.embed import FORMAT_VERSION, _shard_name, _write_manifest
    from saerad.outputs import atomic_save_tensors

    folder.mkdir(parents=True, exist_ok=True)
    settings = {"format_version": FORMAT_VERSION, "backbone": "synthetic-planted-dictionary", "backbone_revision": None,
                "backbone_sha256": None, "pooling": "cls", "dtype": "float32", "dataset": dataset, "split": split,
                "n": len(ids), "shard_size": shard_size, "processor": {},
                "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    n_shards = max(1, -(-len(ids) // shard_size))
    for index in range(n_shards):
        start, end = index * shard_size, min(len(ids), (index + 1) * shard_size)
        atomic_save_tensors({"embeddings": x[start:end].contiguous()}, folder / _shard_name(index),
                            metadata={"saerad": json.dumps({"settings_key": key, "rows": [start, end]})})
    _write_manifest(folder, {**settings, "settings_key": key}, ids, n_shards)


def make_data(args, work: Path) -> dict:
    """Embedding caches, reports JSONL and the test split as a dataset folder; returns the planted atoms' path."""
    from datasets import Dataset, DatasetDict

    atoms = dictionary_atoms(args.concepts, args.d_in, args.seed)
    sentences = [concept_sentence(c) for c in range(args.concepts)]
    dataset = str(work / "dataset")
    test_rows = {"id": [], "findings": [], "impression": []}
    with open(work / "reports.jsonl", "w") as reports:
        for k, (split, n) in enumerate(zip(SPLITS, (args.train, args.val, args.test))):
            parts, ids = [], []
            for start in range(0, n, 8192):  # chunks keep the (rows, concepts) weight matrix small
                m = min(8192, n - start)
                x, chosen = synthetic_rows(atoms, m, args.active, args.seed * 1000 + k * 100 + start // 8192 + 1,
                                           args.noise)
                parts.append(x)
                for i, row in enumerate(chosen.sort(dim=1).values.tolist()):
                    rid = f"{split}-{start + i}"
                    text = " ".join(sentences[c] for c in row)
                    ids.append(rid)
                    reports.write(json.dumps({"id": rid, "findings": text}) + "\n")
                    if split == "test":
                        test_rows["id"].append(rid)
                        test_rows["findings"].append(text)
                        test_rows["impression"].append("")
            write_cache(work / "embeddings" / split, torch.cat(parts), ids, split, dataset)
    DatasetDict({"test": Dataset.from_dict(test_rows)}).save_to_disk(dataset)
    torch.save(atoms, work / "atoms.pt")
    return {"atoms": str(work / "atoms.pt")}


def make_backbone(folder: Path, layers: int, width: int = 768) -> None:
    """A randomly initialised DINOv2 of RAD-DINO's config (ViT-B/14 at 518 px; `layers` of its 12, `width` for a
    small run), never downloaded, with its image processor."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=12 if width % 12 == 0 else 4,
                          intermediate_size=4 * width, patch_size=14, image_size=518, layerscale_value=1e-5)
    torch.manual_seed(0)
    Dinov2Model(config).save_pretrained(folder, safe_serialization=True)
    BitImageProcessor(size={"shortest_edge": 518}, crop_size={"height": 518, "width": 518}, do_center_crop=True,
                      image_mean=[0.5307] * 3, image_std=[0.2583] * 3).save_pretrained(folder)


def run_stage(name: str, argv: list, out: Path, log: Path) -> dict:
    """One `saerad` command in its own process: wall time, its peak RSS (wait4) and the disk of what it wrote."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    with open(log, "a") as sink:
        sink.write(f"$ saerad {' '.join(argv)}\n")
        sink.flush()
        proc = subprocess.Popen([sys.executable, "-m", "saerad", *argv], stdout=sink, stderr=subprocess.STDOUT,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"stage {name} failed (status {status}); see {log}")
    return {"stage": name, "seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 2**20, "disk_gb": disk(out)}


def disk(path: Path) -> float:
    files = [path] if path.is_file() else path.rglob("*")
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**30


def recovery(work: Path) -> dict:
    """Planted concepts with a decoder column at cosine >= 0.9, and those whose such feature states their sentence."""
    from safetensors.torch import load_file

    from saerad.data.reports import normalize_sentence

    atoms = torch.load(work / "atoms.pt")
    W_dec = load_file(str(work / "sae" / "sae.safetensors"))["W_dec"]
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best_cos, best_feature = torch.full((len(atoms),), -1.0), torch.zeros(len(atoms), dtype=torch.long)
    for start in range(0, len(W_dec), 8192):  # (concepts, chunk) cosines, never (concepts, d_sae)
        cos = atoms @ W_dec[start : start + 8192].T
        value, index = cos.max(dim=1)
        better = value > best_cos
        best_cos[better], best_feature[better] = value[better], index[better] + start
    features = json.loads((work / "interpret" / "feature_dictionary.json").read_text())["features"]
    description = {f["id"]: normalize_sentence(f["description"] or "") for f in features}
    recovered = best_cos >= 0.9
    described = [bool(r) and description.get(int(f)) == normalize_sentence(concept_sentence(c))
                 for c, (r, f) in enumerate(zip(recovered.tolist(), best_feature.tolist()))]
    return {"concepts": len(atoms), "recovered": float(recovered.float().mean()),
            "recovered_and_described": sum(described) / len(atoms), "median_best_cosine": float(best_cos.median())}


def stages(args, work: Path) -> list:
    """The pipeline's commands: (name, argv, output path)."""
    emb = work / "embeddings"
    return [
        ("train", ["train", "--embeddings", str(emb / "train"), "--out", str(work / "sae"), "--architecture", "gated",
                   "--expansion-factor", str(args.expansion), "--target-l0", str(args.active), "--batch-size",
                   str(args.batch), "--epochs", str(args.epochs), "--lr", str(args.lr), "--log-every", "10"],
         work / "sae"),
        ("interpret", ["interpret", "--sae", str(work / "sae"), "--embeddings", str(emb / "train"), "--reports",
                       str(work / "reports.jsonl"), "--score-embeddings", str(emb / "validation"), "--out",
                       str(work / "interpret")], work / "interpret"),
        ("build", ["build", "--backbone", str(work / "backbone"), "--sae", str(work / "sae"), "--dictionary",
                   str(work / "interpret" / "feature_dictionary.json"), "--out", str(work / "model")], work / "model"),
        ("evaluate", ["evaluate", "--model", str(work / "model"), "--dataset", str(work / "dataset"), "--split", "test",
                      "--embeddings", str(emb / "test"), "--baselines", "normal,oracle", "--n-resamples",
                      str(args.n_resamples), "--out", str(work / "evaluation")], work / "evaluation"),
    ]


def run(args) -> dict:
    """Make the data, run every stage, measure recovery; the numbers as a dict."""
    import resource

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    start = time.perf_counter()
    make_data(args, work)
    make_backbone(work / "backbone", args.backbone_layers, args.d_in)
    rows = [{"stage": "data", "seconds": time.perf_counter() - start,
             "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
             "disk_gb": disk(work / "embeddings") + disk(work / "reports.jsonl") + disk(work / "dataset")}]
    for name, argv, out in stages(args, work):
        rows.append(run_stage(name, argv, out, log))
        print(f"{name}: {rows[-1]['seconds']:.1f} s, {rows[-1]['peak_rss_gb']:.2f} GB peak RSS", flush=True)
    training = json.loads((work / "sae" / "training_metrics.json").read_text())
    interp = json.loads((work / "interpret" / "interpret_metrics.json").read_text())
    results = json.loads((work / "evaluation" / "results.json").read_text())
    return {"shape": {"train": args.train, "validation": args.val, "test": args.test, "d_in": args.d_in,
                      "d_sae": args.d_in * args.expansion, "concepts": args.concepts, "active": args.active,
                      "epochs": args.epochs, "batch": args.batch, "threads": torch.get_num_threads()},
            "stages": rows, "recovery": recovery(work),
            "training": {k: training[k] for k in ("fvu", "l0", "dead_fraction", "steps")},
            "interpret": {k: interp.get(k) for k in ("n_live", "n_described", "n_scored", "median_auroc")},
            "evaluation": {name: {k: m[k]["value"] for k in ("micro_f1_14", "bleu_4") if k in m}
                           for name, m in results["systems"].items()}}


def table(result: dict) -> str:
    lines = ["| stage | wall s | peak RSS GB | disk GB |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | {r['disk_gb']:.3f} |"
              for r in result["stages"]]
    rec = result["recovery"]
    lines.append(f"\nplanted concepts: {rec['concepts']}; recovered (cosine >= 0.9) {rec['recovered']:.1%}; recovered "
                 f"and described by their own sentence {rec['recovered_and_described']:.1%}; median best cosine "
                 f"{rec['median_best_cosine']:.3f}")
    lines.append(f"training: {json.dumps(result['training'])}\ninterpret: {json.dumps(result['interpret'])}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="scratch folder for everything the run writes")
    p.add_argument("--train", type=int, default=240_000, help="training rows")
    p.add_argument("--val", type=int, default=2_000, help="validation rows (interpretation scores on them)")
    p.add_argument("--test", type=int, default=3_800, help="test rows (evaluated from their embeddings)")
    p.add_argument("--d-in", type=int, default=768, help="embedding width (RAD-DINO's CLS token: 768)")
    p.add_argument("--expansion", type=int, default=64, help="d_sae = d_in x this")
    p.add_argument("--concepts", type=int, default=3000, help="planted directions")
    p.add_argument("--active", type=int, default=15, help="concepts per row (also the target L0)")
    p.add_argument("--noise", type=float, default=0.01, help="per-coordinate noise std")
    p.add_argument("--batch", type=int, default=4096, help="SAE batch size")
    p.add_argument("--epochs", type=int, default=2, help="SAE training epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="SAE learning rate")
    p.add_argument("--backbone-layers", type=int, default=12, help="layers of the random RAD-DINO-shaped backbone")
    p.add_argument("--n-resamples", type=int, default=200, help="bootstrap resamples in evaluate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the numbers here")
    return p


def main() -> None:
    args = parser().parse_args()
    result = run(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
