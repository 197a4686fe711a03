"""Agreement of the labeler with an independent reference: the curated MeSH major tags of the IU X-ray reports.

Tuning used only reports whose numeric id is not divisible by 5; the held-out figures are those with id % 5 == 0.
"""

from __future__ import annotations

from typing import Iterable, Optional

from ..data.mesh import parse_tag
from . import label_report

# MeSH head (lower case), optionally with a required qualifier -> CheXpert observation.
MESH_TO_CHEXPERT = {
    "cardiomegaly": "Cardiomegaly",
    "cardiac shadow": ("enlarged", "Cardiomegaly"),
    "heart": ("enlarged", "Cardiomegaly"),
    "mediastinum": ("enlarged", "Enlarged Cardiomediastinum"),
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "calcified granuloma": "Lung Lesion",
    "granuloma": "Lung Lesion",
    "granulomatous disease": "Lung Lesion",
    "opacity": "Lung Opacity",
    "density": "Lung Opacity",
    "infiltrate": "Lung Opacity",
    "airspace disease": "Lung Opacity",
    "cicatrix": "Lung Opacity",
    "lung diseases, interstitial": "Lung Opacity",
    "pulmonary fibrosis": "Lung Opacity",
    "pulmonary edema": "Edema",
    "pulmonary congestion": "Edema",
    "heart failure": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "pulmonary atelectasis": "Atelectasis",
    "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "hydropneumothorax": "Pneumothorax",
    "pleural effusion": "Pleural Effusion",
    "costophrenic angle": ("blunted", "Pleural Effusion"),
    "thickening": ("pleura", "Pleural Other"),
    "fractures, bone": "Fracture",
    "catheters, indwelling": "Support Devices",
    "implanted medical device": "Support Devices",
    "surgical instruments": "Support Devices",
    "tube, inserted": "Support Devices",
    "medical device": "Support Devices",
    "stents": "Support Devices",
}
EVALUATED = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema", "Consolidation",
             "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
             "Support Devices")


def mesh_positives(tags: Iterable[str]) -> set[str]:
    """CheXpert observations that a report's MeSH major tags state as present."""
    out = set()
    for tag in tags:
        head, qualifiers = parse_tag(tag)
        rule = MESH_TO_CHEXPERT.get(head)
        if isinstance(rule, tuple):
            if rule[0] in qualifiers:
                out.add(rule[1])
        elif rule:
            out.add(rule)
        if head == "hydropneumothorax":
            out.add("Pleural Effusion")
    return out


def agreement(reports: list[dict], held_out: Optional[bool] = True) -> dict:
    """Per-observation precision/recall/F1 of labeler positives vs MeSH positives on the held-out (id % 5 == 0),
    tuning (`held_out=False`) or all (`None`) reports."""
    counts = {obs: [0, 0, 0] for obs in EVALUATED}  # tp, fp, fn
    n = 0
    for r in reports:
        if held_out is not None and (int(r["id"]) % 5 == 0) != held_out:
            continue
        n += 1
        text = " ".join(x for x in (r["findings"], r["impression"]) if x)
        predicted = {obs for obs, s in label_report(text).items() if s == "positive"}
        truth = mesh_positives(r["mesh"])
        for obs in EVALUATED:
            counts[obs][0] += obs in predicted and obs in truth
            counts[obs][1] += obs in predicted and obs not in truth
            counts[obs][2] += obs not in predicted and obs in truth
    table = {}
    for obs, (tp, fp, fn) in counts.items():
        p = tp / (tp + fp) if tp + fp else 0.0
        rc = tp / (tp + fn) if tp + fn else 0.0
        table[obs] = {"precision": p, "recall": rc, "f1": 2 * p * rc / (p + rc) if p + rc else 0.0,
                      "support": tp + fn}
    return {"n_reports": n, "observations": table}
