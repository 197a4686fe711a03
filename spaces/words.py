"""How the Space says things to a reader of radiology reports: one format per number, sides as the patient's,
omission reasons and provenance in words. Plain functions of the model's outputs (no Gradio, no model)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Optional

HUB = "https://huggingface.co/"


def activation(value) -> str:
    """An activation, one decimal wherever it is shown."""
    return "n/a" if value is None else f"{float(value):.1f}"


def auroc(value) -> str:
    """A held-out AUROC, two decimals rounded down wherever it is shown: a score just below the model's bar (0.7496
    under 0.75) never reads as reaching it."""
    return "not scored" if value is None else f"{math.floor(float(value) * 100 + 1e-9) / 100:.2f}"


def frequency(value) -> str:
    """A training firing frequency as a percentage, one decimal."""
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


AUROC_MEANS = ("AUROC: how well the description tells held-out images on which the feature fires from those on which "
               "it stays silent (0.50 is chance, 1.00 perfect).")
ACTIVATION_MEANS = ("Activation: how strongly the feature fires on this image (0 is silent; “24.0 of 49.9” compares "
                    "it with the feature's strongest training image).")


def whole_sentences(text: Optional[str]) -> str:
    """A description as whole sentences: capitalised, a full stop at the end, and a stop where two report sentences
    were run together ("granuloma The lungs" reads "granuloma. The lungs")."""
    text = re.sub(r"\s+", " ", (text or "").strip())
    if not text:
        return "(no description)"
    text = re.sub(r"(?<=[a-z0-9)])\s+(?=(?:The|There|No|Normal|Heart|Lungs?|Mild|Stable|Unchanged|Interval|"
                  r"Bilateral|Left|Right|Cardiac|Mediastinal|Osseous|Visualized|Degenerative)\b)", ". ", text)
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


PATIENT_SIDE = {"left": "on the patient's left (the image's right)", "right": "on the patient's right (the "
                "image's left)", "bilateral": "on both of the patient's sides", "central": "in the middle (spine, "
                "heart and mediastinum)", None: "nowhere: the features have no gradient on this image"}


def stated_side(text: str) -> Optional[str]:
    """The side a sentence names: "left", "right", "bilateral" (both named, or bi-/both words), or None."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    both = bool(words & {"bilateral", "bilaterally", "both"}) or any(w.startswith("bi") and w[2:] in (
        "basilar", "apical", "lateral", "hilar") for w in words)
    left, right = bool(words & {"left", "sinistral"}), bool(words & {"right", "dextral"})
    return "bilateral" if both or (left and right) else "left" if left else "right" if right else None


def side_conflict(text: str, map_side: Optional[str]) -> Optional[str]:
    """Why a sentence's map contradicts the side it names, or None: the map lies on the other side, or on one side
    when the sentence says both."""
    said = stated_side(text)
    if said is None or map_side not in ("left", "right", "bilateral"):
        return None
    if said in ("left", "right") and map_side not in (said, "bilateral"):
        return f"the sentence says the patient's {said}, but its map lies {PATIENT_SIDE[map_side]}"
    if said == "bilateral" and map_side != "bilateral":
        return f"the sentence says both sides, but its map lies only {PATIENT_SIDE[map_side]}"
    return None


def map_sentence(map_side: Optional[str]) -> str:
    """Where a map lies, as a sentence."""
    return f"Its map lies {PATIENT_SIDE.get(map_side, map_side)}."


def omission(code: Optional[str], reason: Optional[str], written: bool, threshold: Optional[float],
             max_features: Optional[int], score: Optional[float] = None) -> str:
    """What the report did with a feature that fired, in words (never a setting's name)."""
    if written:
        return "Written in the report."
    if code == "low_score" or (reason or "").startswith("score"):
        if score is None:
            return "Not written: its description was never checked on held-out images."
        limit = f", below the {auroc(threshold)} the model requires" if threshold is not None else ""
        return f"Not written: its description was not confirmed on held-out images (AUROC {auroc(score)}{limit})."
    if code == "low_precision":
        return "Not written: on held-out images its description was too often untrue where the feature fires."
    if code == "no_description":
        return "Not written: it has no description."
    if code == "max_features":
        return f"Not written: the report already holds the {max_features or 'allowed number of'} strongest features."
    if code == "contradicted":
        rival = re.search(r"(\d+)", reason or "")
        return ("Not written: a stronger feature" + (f" (#{rival.group(1)})" if rival else "")
                + " states the opposite finding.")
    if reason:
        return "Not written: " + re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", "a model setting", reason) + "."
    return "Not written: it fired too weakly to write."


def finding_words(findings: list) -> str:
    """A feature's findings as a reader says them: "pleural effusion (left)", "no pneumothorax"."""
    out = []
    for f in findings or []:
        label = str(f.get("label", "")).lower()
        if not label:
            continue
        status = f.get("status")
        text = ("no " if status == "negative" else "possible " if status == "uncertain" else "") + label
        if f.get("laterality"):
            text += f" ({f['laterality']})"
        out.append(text)
    return ", ".join(out)


def model_info(model_id: str) -> dict:
    """The model as the page names it (repo id, or a local folder's name: never its path), what it learnt from, and
    where its card is (the Hub page, or None for a local folder, whose card the page shows itself)."""
    local = os.path.isdir(model_id)
    build, card = {}, ""
    try:
        folder = Path(model_id) if local else None
        if folder is None:
            from huggingface_hub import hf_hub_download

            build_path = Path(hf_hub_download(model_id, "saerad_build.json"))
            card_path = Path(hf_hub_download(model_id, "README.md"))
        else:
            build_path, card_path = folder / "saerad_build.json", folder / "README.md"
        build = json.loads(build_path.read_text()) if build_path.is_file() else {}
        card = card_path.read_text() if card_path.is_file() else ""
    except Exception:  # offline, or a repo without them: the page names the model only
        pass
    return {"name": Path(model_id).resolve().name if local else model_id, "local": local,
            "title": build.get("title"), "learnt": learnt_from(build), "card": card_body(card),
            "url": None if local else HUB + model_id}


def learnt_from(build: dict) -> str:
    """One line on what the model learnt from, read from its saerad_build.json."""
    if not build:
        return "What it learnt from is not recorded in the model folder (no saerad_build.json)."
    n = (build.get("training_metrics") or {}).get("n")
    data = build.get("dataset") or "an unnamed dataset"
    line = (f"Its sparse autoencoder ({build.get('d_sae', '?')} features) learnt from "
            + (f"{n:,} " if n else "") + f"training images of {data}")
    backbone = build.get("backbone")
    if backbone:
        line += f", embedded by the {backbone} backbone"
    pretraining = build.get("backbone_pretraining") or {}
    if pretraining.get("report_supervised"):
        line += f" (itself trained on {pretraining.get('dataset') or data}'s report labels)"
    describer = (build.get("interpret_metrics") or {}).get("describer")
    if describer:
        line += f"; each feature's description was drawn ({describer}) from the reports of its top training images"
    return line + "."


def card_body(card: str) -> str:
    """A model card without its YAML metadata block."""
    if card.startswith("---"):
        end = card.find("\n---", 3)
        if end != -1:
            return card[end + 4:].lstrip()
    return card
