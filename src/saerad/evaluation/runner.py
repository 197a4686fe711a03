"""`saerad evaluate`: SAE-Rad and baselines on one split, every metric with a bootstrap 95% CI -> results.json/.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError
from ..outputs import atomic_write
from .metrics import METRICS
from .stats import bootstrap_ci, paired_randomization

BASELINES = ("normal", "retrieval", "oracle")
TABLE_KEYS = ("micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5", "bleu_1", "bleu_4", "rouge_l", "meteor",
              "cider")


def _embed_and_generate(model, processor, images: Sequence, batch_size: int, desc: str, generate: bool):
    import torch
    from tqdm.auto import tqdm

    from ..data.images import to_grayscale

    embeds, findings, familiarity = [], [], []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        batch = [to_grayscale(im) for im in images[start : start + batch_size]]
        pixels = processor(images=batch, return_tensors="pt")["pixel_values"].to(model.device)
        with torch.no_grad():
            if generate:
                out = model.generate(pixels, return_dict_in_generate=True)
                findings.extend(out.findings)
                familiarity.extend(out.familiarity)
                embeds.append(out.image_embeds.cpu())
            else:
                embeds.append(model(pixels).image_embeds.cpu())
    return torch.cat(embeds), findings, familiarity


def familiarity_counts(rows: Sequence[dict]) -> dict:
    """How many of a system's images its familiarity check flagged (`available` False for an uncalibrated model)."""
    if not rows or not rows[0]["available"]:
        return {"available": False, "n": len(rows), "n_flagged": None, "rate": None}
    flagged = sum(bool(r["unfamiliar"]) for r in rows)
    return {"available": True, "n": len(rows), "n_flagged": flagged, "rate": flagged / len(rows),
            "threshold": rows[0]["threshold"]}


def _generate_from_embeddings(model, embeddings: str, ids: Sequence[str], batch_size: int = 256):
    """SAE-Rad's findings from an embedding cache of the split (no backbone forward): the model's SAE and composer
    on the cached pooled embeddings of `ids`, in their order."""
    import torch

    from composition_saerad import COMPOSER_SETTINGS, compose_report

    from ..embed import load_embeddings

    x, cached = load_embeddings(embeddings)
    position = {i: k for k, i in enumerate(cached)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise UserError(f"{embeddings}: no embedding for {len(missing)} ids of the split, e.g. {missing[:3]}; embed "
                        "the split that is scored")
    x = x[torch.tensor([position[i] for i in ids], dtype=torch.long)]
    features, settings = model.features, {name: getattr(model.config, name) for name in COMPOSER_SETTINGS}
    findings = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            acts = model.sae.encode(model.sae.normalize(x[start : start + batch_size].to(model.sae.W_enc)))
            findings.extend(compose_report(row, features, **settings)["findings"] for row in acts.cpu().tolist())
    return x, findings


def score_systems(systems: dict, references: Sequence[str], n_resamples: int = 1000, seed: int = 0,
                  uncertain_as_positive: bool = True) -> tuple[dict, dict, dict]:
    """Every metric of every system with its CI; paired tests of the first system against the others."""
    from .wordnet import MISSING, wordnet_available

    skipped = {} if wordnet_available() else {"meteor": MISSING}
    scores, all_stats = {}, {}
    for name, predictions in systems.items():
        scores[name], all_stats[name] = {}, {}
        for metric_name, metric in METRICS.items():
            if metric_name in skipped:
                continue
            if metric_name == "chexpert_f1":
                stats = metric.stats(predictions, references, uncertain_as_positive=uncertain_as_positive)
            else:
                stats = metric.stats(predictions, references)
            all_stats[name][metric_name] = stats
            values, cis = metric.aggregate(stats), bootstrap_ci(metric, stats, n_resamples, seed)
            scores[name].update({k: {"value": values[k], "ci": cis[k]} for k in values})
    comparisons = {}
    names = list(systems)
    for other in names[1:]:
        test = paired_randomization(METRICS["chexpert_f1"], all_stats[names[0]]["chexpert_f1"],
                                    all_stats[other]["chexpert_f1"], "micro_f1_14", n_resamples, seed)
        comparisons[f"{names[0]} vs {other}"] = {"micro_f1_14": test}
    return scores, comparisons, skipped


def _fingerprint(ids: Sequence[str], references: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for rid, ref in zip(ids, references):
        digest.update(f"{rid}\t{ref}\n".encode())
    return digest.hexdigest()[:16]


def markdown_table(results: dict) -> str:
    """One table: systems as rows, the headline metrics as columns (value and 95% CI)."""
    keys = [k for k in TABLE_KEYS if any(k in s for s in results["systems"].values())]
    lines = ["| system | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, metrics in results["systems"].items():
        cells = [f"{metrics[k]['value']:.3f} [{metrics[k]['ci'][0]:.3f}, {metrics[k]['ci'][1]:.3f}]" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, counts in results.get("familiarity", {}).items():
        lines.append("")
        lines.append(f"{name}: {counts['n_flagged']} of {counts['n']} {results['split']} images flagged as unlike its "
                     "training images" if counts["available"] else
                     f"{name}: no familiarity calibration, so no image was checked")
    return "\n".join(lines) + "\n"


def read_predictions(path: str) -> dict:
    """`{"id": ..., "report" or "findings": ...}` per line -> {id: text}; an id given twice is refused."""
    from ..files import id_field, read_jsonl, text_field

    out, first = {}, {}
    for n, record in read_jsonl(path, "predictions"):
        where = f"{path}:{n}"
        if "id" not in record or not ({"report", "findings"} & set(record)):
            raise UserError(f"{where}: expected a JSON object with 'id' and 'report' or 'findings'")
        key = id_field(record, "id", where)
        if key in out:
            raise UserError(f"{where}: id {key!r} was already given on line {first[key]}; one prediction per id")
        out[key] = text_field(record, "findings", where) or text_field(record, "report", where)
        first[key] = n
    return out


def _study_keys(rows) -> list:
    """Each row's study id, or its own id where the dataset has none."""
    studies = rows["study_id"] if "study_id" in rows.column_names else [None] * len(rows)
    return [str(s) if s not in (None, "") else f"id:{i}" for s, i in zip(studies, rows["id"])]


def _check_systems(model: Optional[str], predictions: Optional[str], baselines: Sequence[str],
                   embeddings: Optional[str]) -> None:
    """Refuse a combination of systems and inputs that cannot be scored."""
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise UserError(f"unknown baselines {unknown}; choose from {list(BASELINES)}")
    if model is None and predictions is None:
        raise UserError("give --model or --predictions (or both)")
    if "retrieval" in baselines and model is None:
        raise UserError("the retrieval baseline needs --model (it searches the model's embedding space)")
    if embeddings is not None and (model is None or "retrieval" in baselines):
        raise UserError("--embeddings needs --model, and serves SAE-Rad only: drop retrieval from --baselines "
                        "(it embeds the train images)")


def run_evaluation(dataset: str, split: str = "test", model: Optional[str] = None, predictions: Optional[str] = None,
                   baselines: Sequence[str] = ("normal", "retrieval", "oracle"), out: Optional[str] = None,
                   limit: Optional[int] = None, n_resamples: int = 1000, seed: int = 0, batch_size: int = 16,
                   uncertain_as_positive: bool = True, device: str = "cpu", embeddings: Optional[str] = None) -> dict:
    """Score SAE-Rad (or a predictions file) and baselines against the split's FINDINGS; with `embeddings` (the
    split's embedding cache), the model reads those instead of running its backbone on the images."""
    from ..data.adapters import load_spec

    _check_systems(model, predictions, baselines, embeddings)
    data = load_spec(dataset)
    if split not in data:
        raise UserError(f"{dataset}: no split {split!r}; it has {sorted(data)}")
    rows = data[split].filter(lambda r: bool(r["findings"] and r["findings"].strip()))
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    ids, references = [str(i) for i in rows["id"]], list(rows["findings"])
    systems: dict = {}
    model_obj = None
    if model is not None:
        from ..generate import load_model

        model_obj, processor = load_model(model, device=device)
        if embeddings is not None:
            test_embeds, generated = _generate_from_embeddings(model_obj, embeddings, ids)
            familiar = []
        else:
            test_embeds, generated, familiar = _embed_and_generate(model_obj, processor, rows["image"], batch_size,
                                                                   f"sae-rad on {split}", generate=True)
        systems["sae-rad"] = generated
    if predictions is not None:
        given = read_predictions(predictions)
        missing = [i for i in ids if i not in given]
        if missing:
            raise UserError(f"{predictions}: no prediction for {len(missing)} ids, e.g. {missing[:3]}")
        systems[Path(predictions).stem] = [given[i] for i in ids]
    if "normal" in baselines:
        from .baselines import NORMAL_REPORT

        systems["normal"] = [NORMAL_REPORT] * len(ids)
    if "retrieval" in baselines:
        from .baselines import retrieval_reports

        if "train" not in data:
            raise UserError(f"{dataset}: the retrieval baseline needs a train split")
        train = data["train"].filter(lambda r: bool(r["findings"] and r["findings"].strip()))
        bank, _, _ = _embed_and_generate(model_obj, processor, train["image"], batch_size, "embedding train",
                                      generate=False)
        # Keyed by study so that a split scored against itself (or a study's other view) is never its own answer.
        systems["retrieval"] = retrieval_reports(test_embeds, bank, train["findings"], _study_keys(rows),
                                                 _study_keys(train))
    if "oracle" in baselines:
        from .baselines import oracle_report

        systems["oracle"] = [oracle_report(r) for r in references]
    scores, comparisons, skipped = score_systems(systems, references, n_resamples, seed, uncertain_as_positive)
    results = {
        "dataset": dataset, "split": split, "n": len(ids), "model": model, "embeddings": embeddings,
        "reference_section": "findings",
        "labeler": "saerad rule-based CheXpert-style labeler, uncertain as "
                   + ("positive" if uncertain_as_positive else "negative"),
        "dataset_fingerprint": _fingerprint(ids, references), "bootstrap": {"n_resamples": n_resamples, "seed": seed},
        "systems": scores, "comparisons": comparisons, "skipped_metrics": skipped,
        # per system with a model: the images its familiarity check flagged (baselines have none; nor has a run from
        # cached embeddings, since the check reads the images)
        "familiarity": {"sae-rad": familiarity_counts(familiar)} if model is not None and embeddings is None else {},
    }
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "results.json", json.dumps(results, indent=2))
        atomic_write(folder / "results.md", markdown_table(results))
        examples = [{"id": i, "reference": r, **{name: systems[name][k] for name in systems}}
                    for k, (i, r) in enumerate(zip(ids, references))]
        atomic_write(folder / "predictions.jsonl", "".join(json.dumps(e) + "\n" for e in examples))
    return results
