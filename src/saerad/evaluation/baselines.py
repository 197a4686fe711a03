"""Baselines scored beside SAE-Rad on the same split: a fixed normal report, nearest-neighbour retrieval, and an
oracle that renders the reference's own labels through the report composer."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..errors import UserError
from ..labeler import OBSERVATIONS, SECTION_OF, label_mentions

NORMAL_REPORT = ("The heart size is normal. The mediastinal contours are normal. The lungs are clear. "
                 "No pleural effusion or pneumothorax. No acute osseous abnormality.")

# Sentence templates per observation and status; {side} and {severity} are filled from the mention.
TEMPLATES = {
    "Enlarged Cardiomediastinum": ("The cardiomediastinal silhouette is widened.",
                                   "The mediastinal contours are normal.", "The mediastinum may be widened."),
    "Cardiomegaly": ("The heart is {severity}enlarged.", "The heart size is normal.", "The heart may be enlarged."),
    "Lung Lesion": ("There is a {side}pulmonary nodule.", "No pulmonary nodule.",
                    "A {side}pulmonary nodule is possible."),
    "Lung Opacity": ("There is {severity}{side}airspace opacity.", "No focal airspace opacity.",
                     "Possible {side}airspace opacity."),
    "Edema": ("There is {severity}pulmonary edema.", "No pulmonary edema.", "Possible pulmonary edema."),
    "Consolidation": ("There is {side}consolidation.", "No focal consolidation.", "Possible {side}consolidation."),
    "Pneumonia": ("Findings are consistent with {side}pneumonia.", "No evidence of pneumonia.",
                  "Pneumonia is possible."),
    "Atelectasis": ("There is {severity}{side}atelectasis.", "No atelectasis.", "Possible {side}atelectasis."),
    "Pneumothorax": ("There is a {severity}{side}pneumothorax.", "No pneumothorax.",
                     "A pneumothorax cannot be excluded."),
    "Pleural Effusion": ("There is a {severity}{side}pleural effusion.", "No pleural effusion.",
                         "A {side}pleural effusion cannot be excluded."),
    "Pleural Other": ("There is {side}pleural thickening.", "No pleural thickening.", "Possible pleural thickening."),
    "Fracture": ("There is a {side}fracture.", "No acute fracture.", "A fracture is possible."),
    "Support Devices": ("Support devices are present.", "No support devices.", "A support device may be present."),
    "No Finding": ("No acute cardiopulmonary abnormality.", None, None),
}
_STATUS_INDEX = {"positive": 0, "negative": 1, "uncertain": 2}


def template_sentence(label: str, status: str, laterality: str = None, severity: str = None) -> str:
    """One report sentence stating `status` of `label` (with side and severity when given)."""
    template = TEMPLATES[label][_STATUS_INDEX[status]]
    if template is None:
        return ""
    return template.format(side=f"{laterality} " if laterality else "", severity=f"{severity} " if severity else "")


def oracle_report(reference: str) -> str:
    """The reference's labels rendered by template and composed by the SAE-Rad composer (an upper bound for a
    label-faithful composer)."""
    from composition_saerad import compose_report

    strongest: dict = {}
    rank = {"negative": 0, "uncertain": 1, "positive": 2}
    for m in label_mentions(reference):
        if m["label"] not in OBSERVATIONS:
            continue  # the oracle renders the CheXpert labels only
        if m["label"] not in strongest or rank[m["status"]] > rank[strongest[m["label"]]["status"]]:
            strongest[m["label"]] = m
    features, activations = {}, []
    for i, (label, m) in enumerate(sorted(strongest.items())):
        text = template_sentence(label, m["status"], m["laterality"], m["severity"])
        features[i] = {"id": i, "description": text, "section": SECTION_OF[label],
                       "findings": [{k: m[k] for k in ("label", "status", "laterality", "severity")}]}
        activations.append(1.0 + rank[m["status"]])  # positives outrank negatives when they conflict
    return compose_report(activations, features, normal_impression="")["findings"]


def retrieval_reports(query: torch.Tensor, bank: torch.Tensor, bank_texts: Sequence[str],
                      query_keys: Optional[Sequence[str]] = None, bank_keys: Optional[Sequence[str]] = None,
                      chunk: int = 1024) -> list[str]:
    """For each query embedding, the text of the bank embedding with the highest cosine similarity, skipping bank
    rows whose key (study) is the query's: leave-one-study-out when a split is scored against itself."""
    q = torch.nn.functional.normalize(query.float(), dim=-1)
    b = torch.nn.functional.normalize(bank.float(), dim=-1)
    keyed = query_keys is not None and bank_keys is not None
    rows_of: dict = {}
    for j, key in enumerate(bank_keys if keyed else []):
        rows_of.setdefault(key, []).append(j)
    nearest = []
    for start in range(0, len(q), chunk):  # queries in chunks: MIMIC's test x train similarities do not fit at once
        similarity = q[start : start + chunk] @ b.T
        for r, key in enumerate(query_keys[start : start + chunk] if keyed else []):
            similarity[r, rows_of.get(key, [])] = float("-inf")
        best = similarity.max(dim=-1)
        if bool(torch.isinf(best.values).any()):
            raise UserError("retrieval: a query has no bank row outside its own study")
        nearest += best.indices.tolist()
    return [bank_texts[i] for i in nearest]
