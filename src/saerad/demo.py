"""`saerad demo`: the whole pipeline offline on IU-phantom (real IU report text, phantom images).

Stages, each reused when its output is already in the work folder: data -> embeddings -> sae -> interpret ->
model -> examples -> evaluation (results.json, results.md).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

from .errors import UserError

# A small ResNet that learnt from the train split's reports (docs/demo-backbone.md: the self-supervised backbones that
# train on 2 cores left the findings a small share of the embedding).
BACKBONE = Path(__file__).parent / "assets" / "phantom-resnet"
# The paper's gated SAE at L0 ~15-20, x2 rather than x64 (2.8k training images, not MIMIC-CXR's ~240k). Its gate
# trains at 100x the learning rate and its magnitudes at 1x: with the defaults it missed its target (L0 79 for 15) or,
# with a larger coefficient, kept 97 live features; TopK (k 15) fires 15 broad features on every image (37% of live
# features validated). Its decoder bias is fixed at the embeddings' mean: trained from the geometric median (a normal
# image) it left the normal images featureless, and 41% of test reports empty. docs/demo-backbone.md has every variant.
SAE_SETTINGS = {"architecture": "gated", "expansion_factor": 2, "target_l0": 17.0, "gate_lr_scale": 100.0,
                "magnitude_lr_scale": 1.0, "decoder_bias": "mean", "epochs": 120, "batch_size": 64, "lr": 1e-3,
                "seed": 0, "log_every": 0}
POOLING = "cls"
# Bumped when the default backbone or SAE changes, so that an earlier demo's work folder is kept, not refused or
# reused.
WORKDIR = "demo-v3"
N_EXAMPLES = 3
FEATURES_SHOWN = 3  # per example sentence, the most active


def _stage(name: str, done: bool) -> float:
    print(f"\n== {name} {'(cached)' if done else ''}", flush=True)
    return time.perf_counter()


def system_reports(predictions: Path, system: str = "sae-rad") -> dict:
    """{id: report} of one system in an evaluation's predictions.jsonl, in file order."""
    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    return {str(r["id"]): r.get(system) or "" for r in rows}


def report_summary(predictions: Path, system: str = "sae-rad", top: int = 3) -> str:
    """How many of the system's reports in an evaluation's predictions.jsonl are empty, and its most frequent ones."""
    from collections import Counter

    reports = list(system_reports(predictions, system).values())
    common = Counter(r for r in reports if r).most_common(top)
    listed = "; ".join(f'"{r}" ({n})' for r, n in common) or "none"
    return (f"{system} wrote nothing for {reports.count('')} of {len(reports)} test images; "
            f"its most frequent reports: {listed}.")


def pick_examples(reports: list, n: int = N_EXAMPLES) -> list:
    """Indices of `n` reports to show: the first non-empty ones with distinct text, then the first empty ones."""
    seen, chosen = set(), []
    for i, report in enumerate(reports):
        if report and report not in seen and len(chosen) < n:
            seen.add(report)
            chosen.append(i)
    chosen += [i for i, report in enumerate(reports) if not report][: n - len(chosen)]
    return chosen


def feature_line(feature: dict, activation: float, exemplars: int = 3) -> str:
    """One feature behind a sentence: id, activation, held-out detection AUROC and top training exemplars."""
    score = feature.get("score")
    ids = ", ".join(feature.get("exemplars", [])[:exemplars]) or "none"
    return (f"feature #{feature['id']}: activation {activation:.2f}, detection AUROC "
            f"{'n/a' if score is None else f'{score:.2f}'}, top training exemplars {ids}")


def backbone_statement(backbone: str) -> str:
    """What the demo's backbone learnt from, said plainly in the closing lines."""
    from .hub import backbone_pretraining

    made = backbone_pretraining(backbone)
    if not made:
        return f"The backbone is {backbone}."
    if made["report_supervised"]:
        return ("The backbone learnt from the train split's reports (" + made["objective"] + ": "
                + made["description"] + "), as most chest X-ray encoders do: the self-supervised backbones that "
                "train on 2 cores left the findings a small share of the embedding (docs/demo-backbone.md). The "
                "SAE, the describer and the composer remain unsupervised, and no validation or test report reached "
                "the backbone (validation only chose when to stop).")
    return "The backbone is self-supervised: it learnt from phantom images alone (" + made["description"] + ")."


def check_workdir(work: Path, backbone: str, pooling: str) -> None:
    """Refuse a work folder whose embeddings came from another backbone or pooling: every later stage is cached on
    them."""
    from .embed import backbone_fingerprint, read_manifest

    made = read_manifest(work / "embeddings" / "train")
    if not made:
        return
    wanted = backbone_fingerprint(backbone)
    same = (made.get("backbone_sha256") == wanted["backbone_sha256"] if wanted["backbone_sha256"]
            else made.get("backbone") == backbone)
    if not same or made.get("pooling") != pooling:
        raise UserError(f"{work} holds a demo run embedded with {made.get('backbone')} ({made.get('pooling')} "
                        f"pooling), not {backbone} ({pooling} pooling); choose another --workdir")


def run_demo(workdir: Optional[str] = None, baselines: tuple = ("normal", "retrieval", "oracle"),
             backbone: Optional[str] = None, pooling: str = POOLING) -> dict:
    """Run (or resume) the demo in `workdir` and print examples and the results table; `backbone` (default: the
    committed phantom backbone) and `pooling` choose the embedding."""
    from .evaluation.runner import markdown_table
    from .paths import cache_dir

    logging.getLogger("transformers").setLevel(logging.ERROR)
    work = Path(workdir) if workdir else cache_dir(WORKDIR)
    work.mkdir(parents=True, exist_ok=True)
    named = backbone or "the committed phantom backbone"
    backbone = backbone or str(BACKBONE)
    check_workdir(work, backbone, pooling)
    start = time.perf_counter()
    dataset = _data_stage(work)
    for split in ("train", "validation"):
        _embed_stage(work, backbone, named, split, pooling)
    _sae_stage(work)
    _interpret_stage(work)
    _model_stage(work, backbone)
    results = _evaluation_stage(work, baselines)
    _examples_stage(work, dataset["test"])
    print("\n== results: test split\n")
    print(markdown_table(results), end="")
    print("\n" + report_summary(work / "predictions.jsonl"))
    print("\nImages are phantoms drawn from each report's MeSH tags; text is real IU X-ray report text. "
          + backbone_statement(backbone) + f"\nEverything is in {work} ({time.perf_counter() - start:.0f} s).")
    return results


def _data_stage(work: Path):
    """IU-phantom saved in the workdir (built once)."""
    from datasets import load_from_disk

    from .data.adapters import load_iu_phantom, save_dataset

    data = work / "data"
    _stage("data: IU-phantom (real IU report text, phantom images)", (data / "dataset_dict.json").exists())
    if not (data / "dataset_dict.json").exists():
        save_dataset(load_iu_phantom(), str(data), report={"spec": "iu-phantom"})
    dataset = load_from_disk(str(data))
    print(", ".join(f"{k} {len(v)}" for k, v in dataset.items()))
    return dataset


def _embed_stage(work: Path, backbone: str, named: str, split: str, pooling: str) -> None:
    from .embed import embed

    out = work / "embeddings" / split
    _stage(f"embeddings: {split} with {named}, {pooling} pooling", (out / "manifest.json").exists())
    embed(backbone, str(work / "data"), split, str(out), pooling=pooling, num_workers=2)


def _sae_stage(work: Path) -> None:
    from .sae import TrainConfig, train

    sae = work / "sae"
    sae_name = (f"{SAE_SETTINGS['architecture']}, x{SAE_SETTINGS['expansion_factor']}, "
                f"target L0 {SAE_SETTINGS['target_l0']:g}")
    _stage(f"sae: {sae_name}", (sae / "training_metrics.json").exists())
    if not (sae / "training_metrics.json").exists():
        train(str(work / "embeddings" / "train"), str(sae), TrainConfig(**SAE_SETTINGS),
              resume=(sae / "checkpoint").exists())
    training = json.loads((sae / "training_metrics.json").read_text())
    print(f"L0 {training['l0']:.1f}  FVU {training['fvu']:.3f}  dead fraction {training['dead_fraction']:.3f}")


def _interpret_stage(work: Path) -> None:
    from .interpret import interpret

    interp = work / "interpret"
    _stage("interpret: extractive descriptions, scored on validation", (interp / "interpret_metrics.json").exists())
    if not (interp / "interpret_metrics.json").exists():
        interpret(str(work / "sae"), str(work / "embeddings" / "train"), str(work / "data"), str(interp),
                  score_embeddings=str(work / "embeddings" / "validation"))
    metrics = json.loads((interp / "interpret_metrics.json").read_text())
    median = metrics["median_auroc"]  # None when no feature fired often enough on validation to be scored
    print(f"live features {metrics['n_live']}, median AUROC {'n/a' if median is None else f'{median:.3f}'}, "
          f"{metrics['frac_live_auroc_ge_0_75']:.0%} of live features at AUROC >= 0.75")


def _model_stage(work: Path, backbone: str) -> None:
    import modeling_saerad

    from .hub import build
    from .resources import REMOTE_CODE

    model_dir = work / "model"
    # a folder cached by an older saerad carries older remote code (the Space needs the current one): rebuilt
    installed = Path(modeling_saerad.__file__).parent
    record = model_dir / "saerad_build.json"  # and a folder built before familiarity calibration
    current = record.is_file() and "familiarity" in json.loads(record.read_text()) and all(
        (model_dir / name).is_file() and (model_dir / name).read_bytes() == (installed / name).read_bytes()
        for name in REMOTE_CODE)
    _stage("model: assembled folder with its card and familiarity calibration", current)
    if not current:
        build(backbone, str(work / "sae"), str(work / "interpret" / "feature_dictionary.json"), str(model_dir),
              title="SAE-Rad demo on IU-phantom (phantom images, not for real radiographs)", overwrite=True)
    familiarity = json.loads((model_dir / "saerad_build.json").read_text()).get("familiarity") or {}
    if familiarity.get("threshold") is not None:
        print(f"familiarity check: statistics of {familiarity['n_fit']} training images, threshold flagging "
              f"{familiarity['validation_flag_rate']:.1%} of {familiarity['n_validation']} validation images "
              "(docs/familiarity.md)")


def _evaluation_stage(work: Path, baselines: tuple) -> dict:
    from .evaluation.runner import run_evaluation
    from .hub import attach_results

    model_dir, predictions, results_path = work / "model", work / "predictions.jsonl", work / "results.json"
    cached = (results_path.exists() and predictions.exists()
              and results_path.stat().st_mtime > (model_dir / "config.json").stat().st_mtime)
    _stage("evaluation: test split, with baselines", cached)
    if cached:
        return json.loads(results_path.read_text())
    results = run_evaluation(str(work / "data"), "test", model=str(model_dir), baselines=baselines, out=str(work))
    attach_results(str(model_dir), str(results_path))
    return results


def _examples_stage(work: Path, test) -> None:
    """Print the chosen test reports beside the real ones, each sentence with its features; save their images."""
    from .generate import generate, load_model, why_empty

    _stage("examples: generated vs real on test images", False)
    written_by_id = system_reports(work / "predictions.jsonl")  # the evaluation wrote every test report
    reports = [written_by_id.get(str(i), "") for i in test["id"]]
    chosen = pick_examples(reports)
    written = sum(bool(r) for r in reports)
    shown = sum(bool(reports[i]) for i in chosen)
    print(f"SAE-Rad wrote a report for {written} of {len(test)} test images. Shown: the first {shown} with distinct "
          f"reports" + (f", then {len(chosen) - shown} empty" if len(chosen) > shown else "") + ".")
    model, processor = load_model(str(work / "model"))
    examples = work / "examples"  # the shown test images, for `saerad report`
    examples.mkdir(exist_ok=True)
    for i, result in zip(chosen, generate(model, processor, [test[i]["image"] for i in chosen])):
        row = test[i]
        row["image"].save(examples / f"{row['id']}.png")
        print(f"\n-- test report {row['id']} (phantom drawn from MeSH: {', '.join(row['mesh'])}; "
              f"examples/{row['id']}.png)")
        print(f"REAL:      {row['findings']}")
        print("GENERATED:" + ("" if result["sentences"] else "  " + why_empty(result)))
        for s in result["sentences"]:
            if s["report_section"] == "findings":
                print(f"  {s['text']}")
                pairs = sorted(zip(s["feature_ids"], s["activations"]), key=lambda p: -p[1])
                for f, a in pairs[:FEATURES_SHOWN]:
                    print("    " + feature_line(model.features.get(f, {"id": f}), a))
                if len(pairs) > FEATURES_SHOWN:
                    print(f"    ... and {len(pairs) - FEATURES_SHOWN} more features")
        if result["impression"]:
            print(f"IMPRESSION: {result['impression']}")
