"""Feature interpretation: mine exemplars, describe each feature, score the descriptions -> feature_dictionary.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError
from ..outputs import atomic_write
from .corpus import Corpus, Description, Feature
from .describe import make_describer, tag_description
from .mine import load_sae, mine
from .score import MIN_SUPPORT, ReportIndex, choose_floors, score_features

SCORE_THRESHOLD = 0.75
ULTRA_DENSE = 0.5  # features firing on more than half the images describe nothing in particular


def read_reports(source: str, ids: list[str], split: Optional[str] = None) -> list[str]:
    """Findings for each embedding id: from a JSONL (`id`, `findings`, `impression`) or a dataset spec's rows."""
    if source.endswith(".jsonl"):
        from ..files import id_field, read_jsonl, text_field

        by_id, order, first = {}, [], {}
        for n, record in read_jsonl(source, "reports"):
            where = f"{source}:{n}"
            rid = id_field(record, "id", where) if "id" in record else str(len(order))
            if rid in by_id:
                raise UserError(f"{where}: id {rid!r} was already given on line {first[rid]}; one report per id")
            text = text_field(record, "findings", where) or text_field(record, "impression", where)
            by_id[rid], first[rid] = text, n
            order.append(text)
        if ids == [str(i) for i in range(len(ids))] and len(order) == len(ids) and not set(ids) <= set(by_id):
            return order  # a bare array: line order is row order
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UserError(f"{source}: no report for {len(missing)} embedding ids, e.g. {missing[:3]}")
        return [by_id[i] for i in ids]
    from ..data.adapters import load_spec

    data = load_spec(source)
    splits = [split] if split in data else list(data)
    by_id = {str(r["id"]): r["findings"] or "" for s in splits for r in data[s].remove_columns("image")}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise UserError(f"{source}: no row for {len(missing)} embedding ids, e.g. {missing[:3]}")
    return [by_id[i] for i in ids]


def _holdout_mask(ids: list[str], fraction: float) -> np.ndarray:
    from ..data.adapters import stable_hash

    return np.array([stable_hash(f"holdout:{i}") / 0xFFFFFFFF < fraction for i in ids])


@torch.no_grad()
def _activations(sae, x: torch.Tensor, batch: int = 4096) -> np.ndarray:
    # dense (n, d_sae): the activation floors of the precision gate read every row's activation (docs/scale.md)
    return torch.cat([sae.encode(sae.normalize(x[s : s + batch].float())) for s in range(0, len(x), batch)]).numpy()


def _record(feature: dict, description: Description) -> None:
    """Write a description, its source and the labeler's reading of it into a dictionary entry."""
    feature["description"], feature["description_source"] = description.text, description.source
    if description.rejected:
        feature["llm_rejected"] = {"reason": description.rejected, "answer": description.answer}
    if description.text:
        feature["findings"], feature["section"] = tag_description(description.text)


def _metrics(features: list[dict]) -> dict:
    """How many features are live, described and scored, how well, and how the LLM's answers fared."""
    scores = [f["score"] for f in features if "dead" not in f["flags"] and f["score"] is not None]
    live = [f for f in features if "dead" not in f["flags"]]
    return {
        "n_features": len(features), "n_live": len(live), "n_described": sum(bool(f["description"]) for f in features),
        "n_scored": len(scores), "n_low_support": sum("low_support" in f["flags"] for f in live),
        "median_auroc": float(np.median(scores)) if scores else None,
        "frac_live_auroc_ge_0_75": (sum(s >= 0.75 for s in scores) / len(live)) if live else 0.0,
        "n_llm": sum(f["description_source"] == "llm" for f in features),
        "n_llm_rejected": sum(f["description_source"] == "extractive_fallback" for f in features),
    }


def interpret(sae_dir: str, embeddings: str, reports: str, out: str, describer: str = "extractive",
              top_k: int = 32, score_embeddings: Optional[str] = None, holdout: Optional[float] = None,
              score_threshold: float = SCORE_THRESHOLD, min_score_support: int = MIN_SUPPORT,
              precision_threshold: Optional[float] = None) -> dict:
    """Mine, describe and score every feature; write `feature_dictionary.json` and `interpret_metrics.json`. A
    feature writes when its held-out AUROC reaches `score_threshold` and its held-out precision reaches
    `precision_threshold`; with None, each feature also gets an activation floor fitted on the training rows and the
    two thresholds are chosen on the held-out rows (`choose_floors`)."""
    from tqdm.auto import tqdm

    from ..embed import load_embeddings, read_manifest

    sae, sae_config = load_sae(sae_dir)
    x, ids = load_embeddings(embeddings)
    manifest = read_manifest(embeddings) or {}
    describe = make_describer(describer, credentialed=str(manifest.get("dataset", "")).startswith("mimic-cxr"))
    texts = read_reports(reports, ids, manifest.get("split"))
    if score_embeddings:
        hx, hids = load_embeddings(score_embeddings)
        held_texts = read_reports(reports, hids, (read_manifest(score_embeddings) or {}).get("split"))
        train_x, train_texts, train_ids = x, texts, ids
    else:
        mask = _holdout_mask(ids, holdout if holdout is not None else 0.1)
        if mask.all() or not mask.any():
            raise UserError("the held-out fraction leaves no rows on one side; pass --score-embeddings or --holdout")
        train_x, train_texts = x[torch.from_numpy(~mask)], [t for t, m in zip(texts, mask) if not m]
        train_ids = [i for i, m in zip(ids, mask) if not m]
        hx, held_texts = x[torch.from_numpy(mask)], [t for t, m in zip(texts, mask) if m]
    mined = mine(sae, train_x, k=top_k, keep_firing=True)
    corpus, firing = Corpus(train_texts), mined.firing_rows()
    features, described = [], []
    for fid in range(sae.W_enc.shape[1]):
        exemplars = mined.exemplars(fid)
        frequency = float(mined.frequency[fid])
        flags = ["dead"] if not exemplars else ["ultra_dense"] if frequency > ULTRA_DENSE else []
        features.append({
            "id": fid, "description": "", "description_source": None, "section": "other", "findings": [],
            "score": None, "frequency": frequency, "mean_activation": float(mined.mean_activation[fid]),
            "max_activation": float(mined.max_activation[fid]),
            "exemplars": [train_ids[r] for r, _ in exemplars],
            "exemplar_activations": [a for _, a in exemplars], "flags": flags,
        })
        if not flags:
            described.append(Feature(fid, [r for r, _ in exemplars], firing[fid]))
    chunk = max(1, getattr(describe, "batch_size", 64))
    with tqdm(total=len(described), desc=f"describing ({describer})", unit="feature") as bar:
        for start in range(0, len(described), chunk):
            batch = described[start : start + chunk]
            for f, d in zip(batch, describe(corpus, batch)):
                _record(features[f.id], d)
            bar.update(len(batch))
    held_acts, index = _activations(sae, hx), ReportIndex(held_texts)
    score_features(features, held_acts, index, min_support=min_score_support)
    fbeta, floor_target = None, None
    if precision_threshold is None:
        train = (_activations(sae, train_x), ReportIndex(train_texts))
        (floor_target, precision_threshold), fbeta = choose_floors(features, train, (held_acts, index), score_threshold)
    for feature in features:
        if feature["description"] and feature["score"] is None:
            feature["flags"].append("low_support")
        elif feature["description"] and feature["score"] < score_threshold:
            feature["flags"].append("low_score")
        elif feature["description"] and (feature["precision"] is None or feature["precision"] < precision_threshold):
            feature["flags"].append("low_precision")
    metrics = {**_metrics(features), "min_score_support": min_score_support, "score_threshold": score_threshold,
               "precision_threshold": precision_threshold, "floor_target": floor_target,
               "heldout_fbeta": {f"{t}/{q}": v for (t, q), v in fbeta.items()} if fbeta else None,
               "n_low_precision": sum("low_precision" in f["flags"] for f in features),
               "describer": describer, "n_train": len(train_texts), "n_heldout": len(held_texts)}
    dictionary = {"schema_version": 1, "describer": describer, "score_threshold": score_threshold,
                  "precision_threshold": precision_threshold,
                  "sae": {k: sae_config.get(k) for k in ("architecture", "d_in", "d_sae", "k")}, "features": features}
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in (("feature_dictionary.json", dictionary), ("interpret_metrics.json", metrics)):
        atomic_write(folder / name, json.dumps(payload, indent=1))
    return metrics
