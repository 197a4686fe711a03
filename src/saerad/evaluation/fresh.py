"""Fresh phantom patients with one drawn finding each: does a model's report state what was drawn, on its side?

The patients' seeds come from a namespace of their own (`fresh-phantom:`), outside IU-phantom's splits (seeded by
report id) and the pretraining stream (seeded by run), so no image here was trained, validated or tested on.
"""

from __future__ import annotations

from typing import Optional

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
# What the benchmark draws by default: the common findings, each lateralised one on both sides, and normal patients.
DEFAULT_CASES = (
    ("cardiomegaly", None), ("pleural_effusion", "left"), ("pleural_effusion", "right"), ("pneumothorax", "left"),
    ("pneumothorax", "right"), ("consolidation", "left"), ("consolidation", "right"), ("pacemaker", None),
    ("central_line", "right"), ("hyperinflation", None), ("low_lung_volumes", None), ("edema", None),
    ("opacity", "right"), ("calcified_granuloma", None), ("hiatal_hernia", None), ("normal", None),
)


def fresh_seed(case: str, index: int) -> int:
    """The patient of the `index`-th fresh phantom of a case."""
    from ..data.adapters import stable_hash

    return stable_hash(f"fresh-phantom:{case}:{index}")


def stated(report: str, label: str, side: Optional[str] = None) -> tuple[bool, bool]:
    """Whether `report` states the drawn finding (a positive or uncertain mention of its observation), and whether it
    states it on `side` (a mention with that laterality, or bilateral)."""
    from ..labeler import label_mentions

    observation = OBSERVATION_OF[label]
    hits = [m for m in label_mentions(report) if m["label"] == observation and m["status"] != "negative"]
    return bool(hits), any(m["laterality"] in (side, "bilateral") for m in hits)


def states_a_finding(report: str) -> bool:
    """Whether a report states any finding (a positive or uncertain mention other than No Finding)."""
    from ..labeler import label_mentions

    return any(m["label"] != "No Finding" and m["status"] != "negative" for m in label_mentions(report))


def fresh_phantom_rows(model, processor, n: int = 24, cases: tuple = DEFAULT_CASES, size: int = 256) -> list[dict]:
    """Per case (a phantom label and side, or `normal`): images, how many reports state the finding, how many on its
    side, and how many state some finding at all (for normal patients, the false alarms)."""
    from ..data.phantom import render
    from ..generate import generate

    rows = []
    for label, side in cases:
        name = label if side is None else f"{side} {label}"
        findings = [] if label == "normal" else [{"label": label, "laterality": side}]
        images = [render(findings, seed=fresh_seed(name, i), size=size) for i in range(n)]
        reports = [r["findings"] for r in generate(model, processor, images)]
        row = {"case": name, "images": n, "any_finding": sum(states_a_finding(r) for r in reports)}
        if label != "normal":
            hits = [stated(r, label, side) for r in reports]
            row["stated"] = sum(h[0] for h in hits)
            row["on_side"] = sum(h[1] for h in hits) if side else None
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """The table the README shows."""
    lines = ["| drawn finding | images | report states it | on the drawn side | report states any finding |",
             "|---|---|---|---|---|"]
    for r in rows:
        n = r["images"]
        pct = lambda k: "–" if r.get(k) is None else f"{r[k] / n:.0%}"  # noqa: E731
        lines.append(f"| {r['case']} | {n} | {pct('stated')} | {pct('on_side')} | {pct('any_finding')} |")
    return "\n".join(lines) + "\n"
