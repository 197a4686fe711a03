"""Describers: exemplar reports of one feature -> a short radiological description.

Every describer is one callable, `describer(corpus, features) -> [Description]`. `extractive` (default, offline,
deterministic) states the single statement of the training reports (one finding with its presence, or one
finding-free sentence) that the feature's exemplar reports state most MORE often than the whole corpus does
(enrichment, not frequency: a statement every report makes describes nothing), with a side only where the exemplars
agree on it, in the reports' own words (with nothing enriched, as `extractive-auroc` does); `extractive-auroc` the
statement that best predicts where the feature fires. `transformers:PATH` and `openai:URL[#model]`
(saerad.interpret.llm) ask an LLM, and every answer passes a guard or is replaced by the extractive description. What
every describer reads and returns (`Corpus`, `Feature`, `Description`) lives in saerad.interpret.corpus, which both
this module and the LLM describers import.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from ..errors import UserError
from ..labeler import SECTION_OF, label_mentions
from .corpus import Corpus, Description, Feature, enriched_description, extractive_description

# Whole words for the devices (a bare "port" would file "report", "support" and "portion" there); word starts else.
_KEYWORD_SECTIONS = [
    (r"\b(?:catheters?|tubes?|lines?|pacemakers?|pacers?|wires?|devices?|clips?|stents?|ports?|leads?)\b", "devices"),
    (r"\b(?:pleura|effusion|pneumothora|costophrenic)", "pleura"),
    (r"\b(?:heart|cardiac|cardio|mediastin|aort|hilar|hila)", "heart/mediastinum"),
    (r"\b(?:bone|rib|spine|spinal|osseous|vertebra|clavicle|fracture|degenerative|scoliosis|kyphosis|sternotomy)",
     "bones"),
    (r"\b(?:lung|pulmonary|airspace|opaci|nodule|granuloma|atelecta|consolidat|edema|inflat|emphysema|interstitial)",
     "lungs"),
]


def tag_description(description: str) -> tuple[list[dict], str]:
    """The labeler's findings of a description (one per observation, strongest status) and its anatomical section."""
    rank = {"negative": 0, "uncertain": 1, "positive": 2}
    best: dict = {}
    for m in label_mentions(description):
        if m["label"] not in best or rank[m["status"]] > rank[best[m["label"]]["status"]]:
            best[m["label"]] = m
    findings = [{k: m[k] for k in ("label", "status", "laterality", "severity")} for m in best.values()]
    sections = [SECTION_OF[f["label"]] for f in findings if f["label"] != "No Finding"]
    if sections:
        return findings, Counter(sections).most_common(1)[0][0]
    lowered = description.lower()
    section = next((s for pattern, s in _KEYWORD_SECTIONS if re.search(pattern, lowered)), "other")
    return findings, section


class ExtractiveDescriber:
    """The default describer: the report statement most enriched in the feature's exemplars, else the one that best
    predicts where the feature fires (`enrichment`); or always the latter (`auroc`)."""

    def __init__(self, rule: str = "enrichment"):
        self.rule = rule

    def __call__(self, corpus: Corpus, features: Sequence[Feature]) -> list[Description]:
        if self.rule == "auroc":
            return [Description(extractive_description(corpus, f.rows, firing=f.firing)) for f in features]
        # nothing enriched (a feature of normal images: absence is stated everywhere): the statement that predicts it
        return [Description(enriched_description(corpus, f.rows) or extractive_description(corpus, f.rows, f.firing))
                for f in features]


def make_describer(name: str, credentialed: bool = False):
    """`extractive`, `transformers:PATH` (a model folder, a GGUF file or a folder holding one, or `smollm2`) or
    `openai:URL[#model]` -> a describer, `describer(corpus, features) -> [Description]`."""
    if name in ("extractive", "extractive-auroc"):
        return ExtractiveDescriber("auroc" if name.endswith("auroc") else "enrichment")
    kind, _, rest = name.partition(":")
    if kind == "transformers" and rest:
        from .llm import TransformersDescriber

        return TransformersDescriber(rest)
    if kind == "openai" and rest:
        from .llm import OpenAIDescriber

        url, _, model = rest.partition("#")
        return OpenAIDescriber(url, model or None, credentialed=credentialed)
    raise UserError(f"describer {name!r} not understood; expected extractive, transformers:PATH or openai:URL[#model]")
