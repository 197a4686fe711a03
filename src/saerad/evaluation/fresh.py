"""Fresh phantom patients with known findings: what a model's reports say of them (scored in `truth`).

The patients' seeds come from a namespace of their own (`fresh-phantom:`), outside IU-phantom's splits (seeded by
report id) and the pretraining stream (seeded by run), so no image here was trained, validated or tested on. Cases
draw 0 to 3 findings, either from a list of every drawable finding (each lateralised one on both sides) or as the
training split's phantoms hold them (its rows with that many findings, drawn again on a new patient).
"""

from __future__ import annotations

import random

# The labeler's observation that states each drawn phantom finding.
OBSERVATION_OF = {
    "cardiomegaly": "Cardiomegaly", "pleural_effusion": "Pleural Effusion", "pneumothorax": "Pneumothorax",
    "opacity": "Lung Opacity", "consolidation": "Consolidation", "atelectasis": "Atelectasis",
    "nodule": "Lung Lesion", "mass": "Lung Lesion", "calcified_granuloma": "Lung Lesion", "edema": "Edema",
    "vascular_congestion": "Edema", "interstitial_markings": "Lung Opacity", "scarring": "Lung Opacity",
    "pleural_thickening": "Pleural Other", "hyperinflation": "Hyperinflation", "low_lung_volumes": "Low Lung Volumes",
    "elevated_hemidiaphragm": "Elevated Hemidiaphragm", "central_line": "Support Devices",
    "pacemaker": "Support Devices", "sternotomy_wires": "Support Devices", "endotracheal_tube": "Support Devices",
    "surgical_clips": "Support Devices", "rib_fracture": "Fracture", "degenerative_spine": "Degenerative Spine",
    "scoliosis": "Spinal Curvature", "tortuous_aorta": "Tortuous Aorta", "calcified_aorta": "Aortic Calcification",
    "hiatal_hernia": "Hiatal Hernia", "osteopenia": "Osteopenia",
}


def fresh_seed(case: str, index: int) -> int:
    """The patient of the `index`-th fresh phantom of a case."""
    from ..data.adapters import stable_hash

    return stable_hash(f"fresh-phantom:{case}:{index}")


def drawable_findings() -> list[dict]:
    """Every finding a phantom draws and the labeler names, each lateralised one on the left and on the right."""
    from ..data.phantom import LABELS

    return [{"label": label, "laterality": side} for label in sorted(OBSERVATION_OF)
            for side in (("left", "right") if LABELS[label] else (None,))]


_EXCLUSIVE = {"hyperinflation", "low_lung_volumes"}  # one chest is not both


def truth_cases(train_findings: list, n_single: int = 8, n_combo: int = 48, n_normal: int = 48,
                namespace: str = "truth") -> list[tuple[str, list, int]]:
    """(group, drawn findings, patient seed) of the benchmark: `n_normal` patients with none; each drawable finding
    alone on `n_single`; `n_combo` patients with 2 and with 3 distinct listed findings; and `n_combo` with 1, 2 and 3
    findings as rows of `train_findings` (one list of drawn findings per training row) hold them. `namespace` picks
    the patients (another namespace, other patients)."""
    rng = random.Random(f"{namespace}:cases")
    listed = drawable_findings()
    cases = [("normal", [], fresh_seed(f"{namespace}:normal", i)) for i in range(n_normal)]
    for f in listed:
        cases += [("listed, 1 finding", [f], fresh_seed(f"{namespace}:{f}", i)) for i in range(n_single)]
    labels = sorted({f["label"] for f in listed})
    for k in (2, 3):
        for i in range(n_combo):
            chosen = rng.sample(labels, k)
            while _EXCLUSIVE <= set(chosen):
                chosen = rng.sample(labels, k)
            drawn = [rng.choice([f for f in listed if f["label"] == label]) for label in chosen]
            cases.append((f"listed, {k} findings", drawn, fresh_seed(f"{namespace}:list{k}", i)))
    for k in (1, 2, 3):
        pool = [row for row in train_findings if len(row) == k and all(f["label"] in OBSERVATION_OF for f in row)]
        for i in range(n_combo if pool else 0):
            drawn = [dict(f) for f in rng.choice(pool)]
            cases.append((f"as in training, {k} finding{'s' * (k > 1)}", drawn, fresh_seed(f"{namespace}:train{k}", i)))
    return cases


def run_cases(model, processor, cases: list, size: int = 256, batch_size: int = 32,
              output_localization: bool = False) -> list[dict]:
    """Each case's phantom through the model: its group, drawn findings, FINDINGS and sentences (text, features and,
    with `output_localization`, the side their map reads and what the map-side check did)."""
    from ..data.phantom import render
    from ..generate import generate

    out = []
    for start in range(0, len(cases), batch_size):
        batch = cases[start : start + batch_size]
        images = [render(drawn, seed=seed, size=size) for _, drawn, seed in batch]
        results = generate(model, processor, images, batch_size=batch_size, output_localization=output_localization)
        for (group, drawn, seed), result in zip(batch, results):
            keep = ("text", "feature_ids", "side", "side_check", "stated_text")
            out.append({"group": group, "seed": seed, "drawn": drawn, "findings": result["findings"],
                        "sentences": [{k: s[k] for k in keep if k in s}
                                      for s in result["sentences"] if s["report_section"] == "findings"]})
    return out
