"""Describe the demo's features with each describer and score them on the same held-out rows, side by side.

    python benchmarks/describer_swap.py                       # extractive vs SmolLM2-135M (GGUF), the demo's SAE
    python benchmarks/describer_swap.py --describers extractive,transformers:/models/llama-3-8b-instruct

Per describer: live features, the share of them at AUROC >= 0.75, median AUROC, how many distinct descriptions and
how many stating a finding (not "normal") the features got, how many LLM answers the guard rejected (replaced by the
extractive description), and seconds per described feature (the whole `interpret` run, model load included). The
same exemplars, the same held-out split (the demo's validation embeddings) and the same scorer serve every describer;
only the description changes. Run `make demo` first.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    from saerad.demo import WORKDIR
    from saerad.interpret import interpret
    from saerad.paths import cache_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(cache_dir(WORKDIR)), help="a demo workdir (default: the demo's)")
    parser.add_argument("--describers", default="extractive,transformers:smollm2", help="comma-separated")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    work = Path(args.workdir)
    if not (work / "sae" / "sae_config.json").exists():
        parser.error(f"{work}: no demo run; run `make demo` first")
    rows = []
    for describer in args.describers.split(","):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            metrics = interpret(str(work / "sae"), str(work / "embeddings" / "train"), str(work / "data"), out,
                                describer=describer, score_embeddings=str(work / "embeddings" / "validation"))
            seconds = time.perf_counter() - started
            features = json.loads((Path(out) / "feature_dictionary.json").read_text())["features"]
        described = [f for f in features if f["description"]]
        sources = [f["description_source"] for f in features if f["description_source"]]
        rows.append({"describer": describer, "live": metrics["n_live"],
                     "auroc_ge_0_75": metrics["frac_live_auroc_ge_0_75"], "median_auroc": metrics["median_auroc"],
                     "llm_answers": metrics["n_llm"] + metrics["n_llm_rejected"],
                     "rejected": metrics["n_llm_rejected"], "seconds_per_feature": seconds / max(1, len(sources)),
                     "distinct": len({f["description"] for f in described}),
                     "with_finding": sum(any(x["label"] != "No Finding" for x in f["findings"]) for f in described),
                     "reasons": _reasons(features)})
    print("| describer | live | AUROC >= 0.75 | median AUROC | distinct descriptions | stating a finding | "
          "LLM answers rejected | s / feature |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        rejected = f"{r['rejected']} of {r['llm_answers']}" if r["llm_answers"] else "-"
        print(f"| {r['describer']} | {r['live']} | {r['auroc_ge_0_75']:.1%} | {r['median_auroc']:.3f} | "
              f"{r['distinct']} | {r['with_finding']} | {rejected} | {r['seconds_per_feature']:.2f} |")
    for r in rows:
        if r["reasons"]:
            print(f"{r['describer']} rejections: " + ", ".join(f"{n} {why}" for why, n in r["reasons"]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def _reasons(features: list) -> list:
    """Why the guard rejected answers, most common first (the finding named in a reason folded away)."""
    from collections import Counter

    counts = Counter()
    for f in features:
        if "llm_rejected" in f:
            reason = f["llm_rejected"]["reason"]
            counts["states a finding no exemplar states" if reason.startswith("states ") else reason] += 1
    return counts.most_common()


if __name__ == "__main__":
    main()
