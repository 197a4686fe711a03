"""Where a report's unfaithful statements come from, stage by stage, on fresh phantoms whose findings are known.

    python benchmarks/faithfulness_stages.py [--workdir ~/.cache/saerad/demo-v3] [--model WORKDIR/model] [--n 24]

Fresh patients (`--n` per drawable finding and side, one finding each, and as many normal ones) through the model
folder's backbone and SAE.
- backbone: a linear probe per drawn finding (vs every other patient) and per side (left vs right among its patients),
  2-fold cross-validated on the fresh patients: can the embedding see it at all?
- SAE: per drawn finding (and side), the AUROC of its best single feature; how many features that fire on >= 5
  single-finding patients mix findings (their most frequent drawn finding is under half of those patients).
- describer: per described feature stating a finding, does the finding hold in its exemplar images (their drawn
  findings are known), or only in their reports? and, for a description with a side, do the exemplars' sides agree?
- composer: the features' validated precision (in the dictionary) and how many a threshold on it keeps.
"""

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from linear_probe import fit_probe

from saerad.data.phantom import render
from saerad.evaluation.fresh import OBSERVATION_OF, drawable_findings, fresh_seed
from saerad.evaluation.truth import accepted, statements
from saerad.generate import load_model
from saerad.interpret.score import auroc


def fresh_set(n: int) -> tuple[list, list]:
    """(images, drawn finding or None) for `n` patients per drawable finding and side, and `n` normal ones."""
    images, drawn = [], []
    for f in [None, *drawable_findings()]:
        for i in range(n):
            images.append(render([f] if f else [], seed=fresh_seed(f"stages:{f}", i)))
            drawn.append(f)
    return images, drawn


@torch.no_grad()
def encode(model, processor, images: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone embeddings and SAE activations of the images."""
    embeds, acts = [], []
    for s in range(0, len(images), 64):
        out = model(processor(images=images[s : s + 64], return_tensors="pt")["pixel_values"])
        embeds.append(out.image_embeds)
        acts.append(out.feature_activations)
    return torch.cat(embeds), torch.cat(acts)


def cv_probe(x: torch.Tensor, y: list) -> float:
    """2-fold (even/odd patients) cross-validated AUROC of a linear probe."""
    y_t, scores = torch.tensor(y, dtype=torch.float32), np.zeros(len(y))
    fold = np.arange(len(y)) % 2 == 0
    for train in (fold, ~fold):
        xt = x[torch.from_numpy(train)]
        mean, std = xt.mean(0), xt.std(0) + 1e-6
        fn = fit_probe((xt - mean) / std, y_t[torch.from_numpy(train)], 300)
        scores[~train] = fn((x[torch.from_numpy(~train)] - mean) / std)
    return auroc(scores, y)


def backbone_and_sae(x: torch.Tensor, acts: np.ndarray, drawn: list) -> dict:
    """Per drawn label: probe AUROC, best feature AUROC; for lateralised ones also left vs right."""
    out = {}
    for label in sorted({f["label"] for f in drawn if f}):
        y = [bool(f) and f["label"] == label for f in drawn]
        row = {"probe": cv_probe(x, y), "best_feature": max(auroc(acts[:, j], y) or 0 for j in range(acts.shape[1]))}
        idx = [i for i, f in enumerate(drawn) if f and f["label"] == label and f["laterality"]]
        if idx:
            ys = [drawn[i]["laterality"] == "left" for i in idx]
            row["side_probe"] = cv_probe(x[idx], ys)
            row["side_best_feature"] = max(max(auroc(acts[idx, j], ys) or 0, 1 - (auroc(acts[idx, j], ys) or 1))
                                           for j in range(acts.shape[1]))
        out[label] = row
    return out


def mixing(acts: np.ndarray, drawn: list, min_patients: int = 5) -> dict:
    """Features firing on >= `min_patients` single-finding patients, and those whose top drawn label is < half."""
    single = [i for i, f in enumerate(drawn) if f]
    n, mixed = 0, 0
    for j in range(acts.shape[1]):
        labels = Counter(drawn[i]["label"] for i in single if acts[i, j] > 0)
        if sum(labels.values()) >= min_patients:
            n += 1
            mixed += labels.most_common(1)[0][1] < 0.5 * sum(labels.values())
    return {"features": n, "mixed": mixed}


def describer(dictionary: dict, data: str) -> dict:
    """Per described feature stating a finding: the share of its exemplars whose image holds it and whose report
    states it; and for a sided description, whether most exemplars holding it have it on that side."""
    from datasets import load_from_disk

    train = load_from_disk(data)["train"].remove_columns("image")
    drawn_of = dict(zip(train["id"], train["phantom_findings"]))
    report_of = dict(zip(train["id"], train["findings"]))
    rows = []
    for f in dictionary["features"]:
        stated = [g for g in f.get("findings", []) if g["status"] != "negative" and g["label"] != "No Finding"]
        if not stated or not f["exemplars"] or "dead" in f["flags"]:
            continue
        obs, side = stated[0]["label"], stated[0].get("laterality")
        holders = [[d for d in drawn_of[e] if d["label"] in OBSERVATION_OF and obs in accepted(d["label"])]
                   for e in f["exemplars"]]
        row = {"id": f["id"], "observation": obs, "side": side,
               "image_holds": sum(bool(h) for h in holders) / len(holders),
               "report_states": sum(obs in statements(report_of[e]) for e in f["exemplars"]) / len(holders)}
        if side in ("left", "right"):
            sides = [d["laterality"] for h in holders for d in h[:1] if d["laterality"] in ("left", "right")]
            row["side_agrees"] = (sum(s == side for s in sides) / len(sides)) if sides else None
        rows.append(row)
    return {"features": rows, "n": len(rows),
            "image_majority": sum(r["image_holds"] >= 0.5 for r in rows),
            "report_majority": sum(r["report_states"] >= 0.5 for r in rows),
            "median_image_holds": float(np.median([r["image_holds"] for r in rows])) if rows else None,
            "median_report_states": float(np.median([r["report_states"] for r in rows])) if rows else None,
            "sided": sum("side_agrees" in r for r in rows),
            "side_majority": sum((r.get("side_agrees") or 0) > 0.5 for r in rows)}


def composer(dictionary: dict, thresholds=(0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)) -> dict:
    """How many features with a validated score a threshold on their validated precision keeps."""
    feats = [f for f in dictionary["features"] if f.get("description") and f.get("score") is not None
             and f["score"] >= (dictionary.get("score_threshold") or 0)]
    return {str(t): sum((f.get("precision") or 0) >= t for f in feats) for t in thresholds} | {"scored": len(feats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(Path.home() / ".cache/saerad/demo-v3"))
    parser.add_argument("--model", help="model folder (default: WORKDIR/model)")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    model, processor = load_model(args.model or f"{args.workdir}/model")
    images, drawn = fresh_set(args.n)
    x, acts = encode(model, processor, images)
    dictionary = json.loads(Path(args.model or f"{args.workdir}/model", "feature_dictionary.json").read_text())
    result = {"backbone_and_sae": backbone_and_sae(x, acts.numpy(), drawn), "mixing": mixing(acts.numpy(), drawn),
              "describer": describer(dictionary, f"{args.workdir}/data"), "composer": composer(dictionary)}
    print("| drawn finding | probe AUROC | best SAE feature AUROC | side probe AUROC | side best feature AUROC |")
    print("|---|---|---|---|---|")
    for label, r in result["backbone_and_sae"].items():
        cells = [r.get(k) for k in ("probe", "best_feature", "side_probe", "side_best_feature")]
        print(f"| {label} | " + " | ".join("–" if c is None else f"{c:.2f}" for c in cells) + " |")
    print("\nSAE mixing:", result["mixing"])
    print("describer:", {k: v for k, v in result["describer"].items() if k != "features"})
    print("composer (features kept per precision threshold):", result["composer"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
