"""IU X-ray MeSH major tags ("Pleural Effusion/left/small") -> structured phantom findings.

A tag is a head followed by qualifiers. Qualifiers give the side (left / right / bilateral, the patient's), the
zone (base and lower lobe -> lower; upper lobe and apex -> upper; middle lobe, lingula, hilum -> middle) and the
severity. The head, sometimes with a qualifier, picks the phantom label(s) in `HEADS` below.
"""

from __future__ import annotations

from typing import Iterable, Optional

# Tags that say there is nothing to draw: a normal study, or no finding indexed.
NOTHING_TO_DRAW = {"normal", "no indexing", "technical quality of image unsatisfactory"}

_LATERALITY = {"left": "left", "right": "right", "bilateral": "bilateral"}
_ZONE = {"base": "lower", "lower lobe": "lower", "upper lobe": "upper", "apex": "upper", "middle lobe": "middle",
         "lingula": "middle", "hilum": "middle", "retrocardiac": "lower", "costophrenic angle": "lower"}
_SEVERITY = {"mild": "mild", "borderline": "mild", "small": "small", "moderate": "moderate", "large": "large",
             "severe": "severe", "multiple": "moderate"}
_SPINE = ("degenerative_spine",)

# head (lower case) -> labels, or a function of the qualifier set returning labels.
HEADS = {
    "cardiomegaly": ("cardiomegaly",),
    "cardiac shadow": ("cardiomegaly",),
    "heart": ("cardiomegaly",),
    "heart atria": ("cardiomegaly",),
    "heart ventricles": ("cardiomegaly",),
    "pericardial effusion": ("cardiomegaly",),
    "pleural effusion": ("pleural_effusion",),
    "costophrenic angle": ("pleural_effusion",),
    "hemothorax": ("pleural_effusion",),
    "pneumonectomy": ("pleural_effusion",),
    "pneumothorax": ("pneumothorax",),
    "hydropneumothorax": ("pleural_effusion", "pneumothorax"),
    "hemopneumothorax": ("pleural_effusion", "pneumothorax"),
    "opacity": lambda q: ("interstitial_markings",) if "interstitial" in q else ("opacity",),
    "density": ("opacity",),
    "infiltrate": ("opacity",),
    "airspace disease": ("opacity",),
    "consolidation": ("consolidation",),
    "pneumonia": ("consolidation",),
    "pulmonary atelectasis": ("atelectasis",),
    "atelectasis": ("atelectasis",),
    "volume loss": ("atelectasis",),
    "nodule": ("nodule",),
    "mass": ("mass",),
    "cavitation": ("mass",),
    "calcified granuloma": ("calcified_granuloma",),
    "granuloma": ("calcified_granuloma",),
    "granulomatous disease": ("calcified_granuloma",),
    "tuberculosis": ("calcified_granuloma",),
    "calcinosis": lambda q: ("calcified_aorta",) if q & {"aorta", "aorta, thoracic"} else ("calcified_granuloma",),
    "pulmonary edema": ("edema",),
    "heart failure": ("edema",),
    "pulmonary congestion": ("vascular_congestion",),
    "hypertension, pulmonary": ("vascular_congestion",),
    "pulmonary artery": ("vascular_congestion",),
    "markings": ("interstitial_markings",),
    "lung diseases, interstitial": ("interstitial_markings",),
    "pulmonary fibrosis": ("interstitial_markings",),
    "fibrosis": ("interstitial_markings",),
    "cystic fibrosis": ("interstitial_markings",),
    "bronchiectasis": ("interstitial_markings",),
    "sarcoidosis": ("interstitial_markings",),
    "cicatrix": ("scarring",),
    "thickening": ("pleural_thickening",),
    "pleura": ("pleural_thickening",),
    "emphysema": ("hyperinflation",),
    "pulmonary emphysema": ("hyperinflation",),
    "pulmonary disease, chronic obstructive": ("hyperinflation",),
    "bullous emphysema": ("hyperinflation",),
    "blister": ("hyperinflation",),
    "lung, hyperlucent": ("hyperinflation",),
    "lung": lambda q: ("low_lung_volumes",) if "hypoinflation" in q
    else ("hyperinflation",) if q & {"hyperdistention", "hyperlucent"} else ("opacity",),
    "diaphragm": lambda q: ("hyperinflation",) if "flattened" in q else ("elevated_hemidiaphragm",),
    "diaphragmatic eventration": ("elevated_hemidiaphragm",),
    "catheters, indwelling": ("central_line",),
    "implanted medical device": ("pacemaker",),
    "surgical instruments": lambda q: ("sternotomy_wires",) if q & {"mediastinum", "sternum"} else ("surgical_clips",),
    "sutures": lambda q: ("sternotomy_wires",) if q & {"mediastinum", "sternum"} else ("surgical_clips",),
    "tube, inserted": ("endotracheal_tube",),
    "medical device": ("surgical_clips",),
    "stents": ("surgical_clips",),
    "foreign bodies": ("surgical_clips",),
    "spinal fusion": ("surgical_clips",),
    "contrast media": ("surgical_clips",),
    "fractures, bone": ("rib_fracture",),
    "ribs": ("rib_fracture",),
    "deformity": lambda q: ("rib_fracture",) if "ribs" in q else _SPINE,
    "spine": _SPINE,
    "thoracic vertebrae": _SPINE,
    "lumbar vertebrae": _SPINE,
    "cervical vertebrae": _SPINE,
    "osteophyte": _SPINE,
    "spondylosis": _SPINE,
    "arthritis": _SPINE,
    "hyperostosis, diffuse idiopathic skeletal": _SPINE,
    "sclerosis": _SPINE,
    "scoliosis": ("scoliosis",),
    "aorta": lambda q: ("calcified_aorta",) if q & {"calcified", "atherosclerosis"} else ("tortuous_aorta",),
    "aorta, thoracic": lambda q: ("calcified_aorta",) if q & {"calcified", "atherosclerosis"} else ("tortuous_aorta",),
    "aortic aneurysm": ("tortuous_aorta",),
    "atherosclerosis": ("calcified_aorta",),
    "mediastinum": ("tortuous_aorta",),
    "hernia, hiatal": ("hiatal_hernia",),
    "hernia, diaphragmatic": ("hiatal_hernia",),
    "bone diseases, metabolic": ("osteopenia",),
    "osteoporosis": ("osteopenia",),
}


def parse_tag(tag: str) -> tuple[str, set]:
    """"Opacity/lung/base/left" -> ("opacity", {"lung", "base", "left"})."""
    parts = [p.strip().lower() for p in tag.split("/") if p.strip()]
    return (parts[0] if parts else ""), set(parts[1:])


def labels_for_tag(tag: str) -> Optional[tuple]:
    """Phantom labels for one tag: () when it says there is nothing to draw, None when unmapped."""
    head, qualifiers = parse_tag(tag)
    if head in NOTHING_TO_DRAW:
        return ()
    rule = HEADS.get(head)
    if rule is None:
        return None
    return rule(qualifiers) if callable(rule) else rule


def findings_from_mesh(tags: Iterable[str]) -> list[dict]:
    """Structured findings (`label`, `laterality`, `zone`, `severity`) for a report's MeSH major tags."""
    findings, seen = [], set()
    for tag in tags:
        labels = labels_for_tag(tag) or ()
        _, qualifiers = parse_tag(tag)
        side = next((_LATERALITY[q] for q in ("bilateral", "left", "right") if q in qualifiers), None)
        zone = next((_ZONE[q] for q in sorted(qualifiers) if q in _ZONE), None)
        severity = next((_SEVERITY[q] for q in sorted(qualifiers) if q in _SEVERITY), None)
        for label in labels:
            finding = {"label": label, "laterality": side, "zone": zone, "severity": severity}
            key = tuple(finding.values())
            if key not in seen:
                seen.add(key)
                findings.append(finding)
    return findings


def unmapped_tags(tags: Iterable[str]) -> list[str]:
    """The tags that `findings_from_mesh` cannot map."""
    return [t for t in tags if labels_for_tag(t) is None]
