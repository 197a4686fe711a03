# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""SAE-Rad's report writer: the feature dictionary (read and validated), the sentence splitter, the composer that
writes a report from the descriptions of the active features, and the explanation table of those features."""

import json
import math
import os
import re
from typing import Any, Optional, Union

FEATURE_DICTIONARY_NAME = "feature_dictionary.json"
FEATURE_DICTIONARY_SCHEMA_VERSION = 1
# Anatomical sections in the order a FINDINGS paragraph reads them.
SECTIONS = ("devices", "lungs", "pleura", "heart/mediastinum", "bones", "other")
FINDING_STATUSES = ("positive", "negative", "uncertain")
COMPOSER_SETTINGS = ("min_activation", "max_report_features", "min_feature_score", "min_feature_precision",
                     "normal_impression")
# What a model repo may hand the composer: a dictionary file, a description and an exemplar id are bounded, so a
# stranger's repo cannot fill memory or a report (a real dictionary: ~2 KB a feature, sentences under 300 characters).
MAX_DICTIONARY_BYTES = 256 * 1024 * 1024
MAX_DESCRIPTION_CHARS = 2000
MAX_ID_CHARS = 256
MAX_JSON_DEPTH = 16
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A positive "No Finding" contradicts any positive or uncertain observation except these.
_COMPATIBLE_WITH_NO_FINDING = {"No Finding", "Support Devices"}


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:  # only containers are pushed: a 49,152-feature dictionary holds millions of leaves
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = list(item.values()) if isinstance(item, dict) else item
        if any(issubclass(kind, (dict, list)) for kind in set(map(type, children))):  # types read at C speed
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def read_feature_dictionary(path: Union[str, os.PathLike]) -> Any:
    """Parse a `feature_dictionary.json` from a model folder or repo: size-capped, UTF-8, JSON; errors name the file."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise ValueError(f"{source}: not a regular file")
    size = os.path.getsize(source)
    if size > MAX_DICTIONARY_BYTES:
        raise ValueError(f"{source}: {size} bytes is over the feature dictionary limit of {MAX_DICTIONARY_BYTES}")
    with open(source, "rb") as f:
        raw = f.read(MAX_DICTIONARY_BYTES + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{source}: not UTF-8 text (byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None


def validate_feature_dictionary(data: Any, d_sae: int, source: str = "feature dictionary") -> dict:
    """Check a feature dictionary against the schema and the bounds on what a repo may hand the composer (lengths,
    nesting, no control characters); return it with features sorted by id."""

    def fail(where: str, problem: str):
        raise ValueError(f"{source}: {where} {problem}")

    def text(where: str, value: Any, limit: int, nullable: bool = False) -> None:
        if value is None and nullable:
            return
        if not isinstance(value, str):
            fail(where, "must be a string" + (" or null" if nullable else ""))
        if len(value) > limit:
            fail(where, f"is {len(value)} characters; the limit is {limit}")
        if _CONTROL.search(value):
            fail(where, "holds control characters (plain text only)")

    if not isinstance(data, dict):
        fail("top level", f"must be a JSON object; got {type(data).__name__}")
    if _depth(data) > MAX_JSON_DEPTH:
        fail("top level", f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if data.get("schema_version") != FEATURE_DICTIONARY_SCHEMA_VERSION:
        fail("schema_version", f"must be {FEATURE_DICTIONARY_SCHEMA_VERSION}; got {data.get('schema_version')!r}")
    features = data.get("features")
    if not isinstance(features, list):
        fail("features", f"must be a list; got {type(features).__name__}")
    seen = set()
    for i, feature in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(feature, dict):
            fail(where, "must be an object")
        fid = feature.get("id")
        if not isinstance(fid, int) or isinstance(fid, bool) or not 0 <= fid < d_sae:
            fail(f"{where}.id", f"must be an integer in [0, d_sae={d_sae}); got {fid!r}")
        if fid in seen:
            fail(f"{where}.id", f"repeats feature {fid}")
        seen.add(fid)
        text(f"{where}.description", feature.get("description"), MAX_DESCRIPTION_CHARS)
        if feature.get("section") not in SECTIONS:
            fail(f"{where}.section", f"must be one of {SECTIONS}; got {feature.get('section')!r}")
        findings = feature.get("findings", [])
        if not isinstance(findings, list):
            fail(f"{where}.findings", "must be a list")
        for j, finding in enumerate(findings):
            if not isinstance(finding, dict):
                fail(f"{where}.findings[{j}]", "must be an object")
            text(f"{where}.findings[{j}].label", finding.get("label"), MAX_ID_CHARS)
            if finding.get("status") not in FINDING_STATUSES:
                got = finding.get("status")
                fail(f"{where}.findings[{j}].status", f"must be one of {FINDING_STATUSES}; got {got!r}")
            for key in ("laterality", "severity"):
                text(f"{where}.findings[{j}].{key}", finding.get(key), MAX_ID_CHARS, nullable=True)
        for key in ("score", "precision", "frequency", "min_activation"):
            value = feature.get(key)
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and (not is_number or math.isnan(value)):
                fail(f"{where}.{key}", f"must be a number or null; got {value!r}")
        exemplars = feature.get("exemplars", [])
        if not isinstance(exemplars, list):
            fail(f"{where}.exemplars", "must be a list of strings")
        if not (set(map(type, exemplars)) <= {str} and max(map(len, exemplars), default=0) <= MAX_ID_CHARS
                and not _CONTROL.search("".join(exemplars))):  # checked one by one only to name the bad one
            for j, exemplar in enumerate(exemplars):
                text(f"{where}.exemplars[{j}]", exemplar, MAX_ID_CHARS)
    return {**data, "features": sorted(features, key=lambda f: f["id"])}


# Report text: one sentence splitter and normaliser, for the composer here and for saerad's scorer and labeler.
# De-identification tokens: MIMIC-CXR's "___" and IU X-ray's "XXXX".
_IU_XRAY = re.compile(r"\bx-XXXX\b", re.I)
_DEID = re.compile(r"_{2,}|\bX{2,}\b")
_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "vs", "approx", "e.g", "i.e", "fig", "cf", "al", "resp", "nos"}
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*\n")


def normalize_deid(text: str, replacement: str = "") -> str:
    """Remove de-identification tokens (MIMIC `___`, IU `XXXX`) and tidy the spacing they leave."""
    text = _IU_XRAY.sub("x-ray", text)
    text = _DEID.sub(replacement, text)
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)
    text = re.sub(r"([.,;:])(?:[ \t]*[.,;:])+", r"\1", text)  # "Dr. ___ ." leaves "Dr.."
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _ends_sentence(before: str, after: str) -> bool:
    words = before.rstrip(".!?\"')] ").split()
    if not words:
        return False
    last = words[-1].lower().lstrip("([\"'")
    if len(words) == 1 and re.fullmatch(r"\(?\d{1,2}\)?", last):
        return False  # the "1." of a numbered item starts its sentence
    if last in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last):
        return False  # "Dr. Smith", "approx. 3 cm", initials
    return not after or not after[0].islower()


def split_sentences(text: str, deid: bool = True) -> list:
    """Split report text into sentences, keeping numbered items, abbreviations, decimals and measurements intact."""
    if deid:
        text = normalize_deid(text)
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        candidate = text[start : m.end()]
        if m.group().strip() == "" or _ends_sentence(candidate, text[m.end() : m.end() + 1]):
            sentences.append(candidate)
            start = m.end()
    sentences.append(text[start:])
    out = []
    for s in sentences:
        s = " ".join(s.split())
        if re.search(r"[A-Za-z0-9]", s):
            out.append(s)
    return out


def normalize_sentence(sentence: str) -> str:
    """Lower-case, drop list numbering, punctuation and extra spaces: the key for counting "the same" sentence."""
    sentence = re.sub(r"^\(?\d{1,2}[.)]\s+", "", sentence.strip())
    return " ".join(re.sub(r"[^a-z0-9.]+", " ", sentence.lower()).replace(" .", " ").strip(" .").split())


def _sides_overlap(a: Optional[str], b: Optional[str]) -> bool:
    return a is None or b is None or a == b or "bilateral" in (a, b)


def _present(finding: dict) -> bool:
    return finding["status"] in ("positive", "uncertain")


def _contradicts(new: list, kept: list) -> bool:
    """Do two findings lists state opposite things about one observation on overlapping sides?"""
    for a in new:
        for b in kept:
            if a["label"] == b["label"]:
                if _present(a) != _present(b) and _sides_overlap(a.get("laterality"), b.get("laterality")):
                    return True
            elif _present(a) and _present(b):
                pair = {a["label"], b["label"]}
                if "No Finding" in pair and not pair <= _COMPATIBLE_WITH_NO_FINDING:
                    return True
    return False


def _rounded(value: Any) -> Any:
    """A score as a reason states it: three decimals (a held-out AUROC is no more precise), None as "unscored"."""
    return "unscored" if value is None else f"{float(value):.3f}"


def _findings_key(findings: list) -> tuple:
    # null sorts as "": a dictionary may give one label null and "left" sides
    return tuple(sorted((f["label"], f["status"], f.get("laterality") or "", f.get("severity") or "")
                        for f in findings))


def _below(feature: dict, key: str, minimum: Optional[float]) -> Optional[str]:
    """Why a feature's validated `key` (score or precision) keeps it from writing under `minimum`, or None."""
    if minimum is None or (feature.get(key) is not None and feature[key] >= minimum):
        return None
    name = "score" if key == "score" else "held-out precision"
    return f"{name} {_rounded(feature.get(key))} below min_feature_{key} {_rounded(minimum)}"


def compose_report(
    activations: list,
    features: dict,
    min_activation: float = 0.0,
    max_report_features: int = 15,
    min_feature_score: Optional[float] = None,
    normal_impression: str = "No acute cardiopulmonary abnormality.",
    min_feature_precision: Optional[float] = None,
) -> dict:
    """Compose one report from feature activations and `{feature_id: feature}`; every sentence keeps its provenance.

    Features write strongest first (ties by id). A feature is omitted when it has no description, fires below its
    own `min_activation` (the floor under which its training images' reports stopped stating its description),
    scores below `min_feature_score`, has a held-out precision below `min_feature_precision`, contradicts a stronger
    feature's findings, or comes after `max_report_features` writers.
    Sentences with the same normalised text, or features with the same findings, are merged.
    """
    active = sorted(
        ((a, i) for i, a in enumerate(activations) if a > 0 and a >= min_activation), key=lambda t: (-t[0], t[1])
    )
    sentences, omitted, writers = [], [], []  # writers: (feature, activation, its sentences)
    by_text, by_findings = {}, {}
    for act, fid in active:
        feature = features.get(fid)
        code = reason = None
        if feature is None or not feature.get("description", "").strip():
            code, reason = "no_description", "no description"
        elif feature.get("min_activation") is not None and act < feature["min_activation"]:
            code, reason = "weak", f"activation {_rounded(act)} below its floor {_rounded(feature['min_activation'])}"
        elif _below(feature, "score", min_feature_score):
            code, reason = "low_score", _below(feature, "score", min_feature_score)
        elif _below(feature, "precision", min_feature_precision):
            code, reason = "low_precision", _below(feature, "precision", min_feature_precision)
        elif len(writers) >= max_report_features:
            code, reason = "max_features", f"beyond max_report_features={max_report_features}"
        else:
            findings = feature.get("findings", [])
            rival = next((w for w in writers if _contradicts(findings, w[0].get("findings", []))), None)
            if rival is not None:
                code, reason = "contradicted", f"contradicted by stronger feature {rival[0]['id']}"
        if code is not None:
            omitted.append({"feature_id": fid, "activation": act, "reason": reason, "code": code})
            continue
        key = _findings_key(feature.get("findings", []))
        own = []
        if key and key in by_findings:
            own = by_findings[key]
        else:
            for text in split_sentences(feature["description"], deid=False):
                norm = normalize_sentence(text)
                if norm not in by_text:
                    by_text[norm] = {"text": text, "report_section": "findings", "section": feature["section"],
                                     "feature_ids": [], "activations": []}
                    sentences.append(by_text[norm])
                own.append(by_text[norm])
            if key:
                by_findings[key] = own
        for sentence in own:
            if fid not in sentence["feature_ids"]:
                sentence["feature_ids"].append(fid)
                sentence["activations"].append(act)
        writers.append((feature, act, own))

    findings_sentences = [s for section in SECTIONS for s in sentences if s["section"] == section]
    impression_sentences = []
    for feature, act, own in writers:
        if any(_present(f) and f["label"] != "No Finding" for f in feature.get("findings", [])):
            for s in own:
                if all(s["text"] != t["text"] for t in impression_sentences):
                    impression_sentences.append({**s, "report_section": "impression",
                                                 "feature_ids": list(s["feature_ids"]),
                                                 "activations": list(s["activations"])})
    if not impression_sentences and writers and normal_impression:
        impression_sentences = [{"text": normal_impression, "report_section": "impression", "section": "other",
                                 "feature_ids": [w[0]["id"] for w in writers], "activations": [w[1] for w in writers]}]
    findings_text = " ".join(s["text"] for s in findings_sentences)
    impression_text = " ".join(s["text"] for s in impression_sentences)
    report = f"FINDINGS: {findings_text}\n\nIMPRESSION: {impression_text}" if findings_text else ""
    return {"report": report, "findings": findings_text, "impression": impression_text,
            "sentences": findings_sentences + impression_sentences, "omitted": omitted}


def why_empty(result: dict) -> str:
    """Why a generated report is empty: withheld as unlike the training images (`result["familiarity"]`), or from the
    features that fired and were left out (`result["omitted"]`)."""
    familiarity = result.get("familiarity") or {}
    if familiarity.get("withheld"):
        return ("(no report: withheld, the image is unlike the images this model learnt from; familiarity score "
                f"{familiarity['score'] / familiarity['threshold']:.1f}x the threshold)")
    omitted = result.get("omitted") or []
    if not omitted:
        return "(no report: no feature fired on this image)"
    unscored = sum(o["code"] in ("low_score", "low_precision") for o in omitted)
    bare = sum(o["code"] == "no_description" for o in omitted)
    parts = ([f"{unscored} whose description was not validated on held-out images"]
             if unscored else []) + ([f"{bare} without a description"] if bare else [])
    fired = f"{len(omitted)} feature{'s' if len(omitted) != 1 else ''} fired"
    return f"(no report: {fired}, " + " and ".join(parts) + ")" if parts else f"(no report: {fired})"


def load_feature_dictionary(data_or_path: Union[dict, str, os.PathLike], d_sae: int) -> dict:
    """A feature dictionary (a dict, or the path of a `feature_dictionary.json`) read and validated."""
    if isinstance(data_or_path, dict):
        return validate_feature_dictionary(data_or_path, d_sae)
    return validate_feature_dictionary(read_feature_dictionary(data_or_path), d_sae, str(data_or_path))


def check_generate_arguments(config: Any, features: dict, settings: dict, feature_overrides: dict) -> tuple:
    """The composer's settings for one `generate` call (the config's, replaced by `settings`: only
    `COMPOSER_SETTINGS`) and the checked `feature_overrides`; a TypeError or ValueError says what is wrong."""
    unknown = sorted(set(settings) - set(COMPOSER_SETTINGS))
    if unknown:
        raise TypeError(f"generate() got unknown settings {unknown}; allowed: {list(COMPOSER_SETTINGS)}")
    chosen = {name: settings.get(name, getattr(config, name)) for name in COMPOSER_SETTINGS}
    return chosen, check_feature_overrides(feature_overrides, features, config.d_sae)


def check_feature_overrides(feature_overrides: dict, features: dict, d_sae: int) -> dict:
    """`{feature_id: value}` checked (ids in range, values >= 0, only described features switched on), values as
    floats; a ValueError says which entry is wrong."""
    checked = {}
    for fid, value in feature_overrides.items():
        if isinstance(fid, bool) or not isinstance(fid, int) or not 0 <= fid < d_sae:
            raise ValueError(f"feature_overrides: feature id {fid!r} is not in [0, d_sae={d_sae})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"feature_overrides: feature {fid} must be set to a number >= 0; got {value!r}")
        if value > 0 and not (features.get(fid) or {}).get("description", "").strip():
            raise ValueError(f"feature_overrides: feature {fid} has no description, so switching it on would "
                             "write nothing")
        checked[fid] = float(value)
    return checked


def compose_reports(rows: list, features: dict, overridden: dict, **settings) -> list:
    """`compose_report` per row of activations; each sentence that an overridden feature wrote lists it under
    `overridden`."""
    composed = [compose_report(row, features, **settings) for row in rows]
    for c in composed:
        for sentence in c["sentences"]:
            touched = [f for f in sentence["feature_ids"] if f in overridden]
            if touched:
                sentence["overridden"] = touched
    return composed


def explain_rows(activations: list, sentences: list, omitted: list, features: dict) -> list:
    """Per image, its active features strongest first: id, activation, description, held-out score, section,
    training firing frequency, exemplar ids, and whether the report wrote it (or why not)."""
    rows = []
    for acts, written_sentences, left_out in zip(activations, sentences, omitted):
        active = sorted((f for f, a in enumerate(acts) if a != 0), key=lambda f: (-float(acts[f]), f))
        written = {f for s in written_sentences for f in s["feature_ids"]}
        reasons = {o["feature_id"]: o["reason"] for o in left_out}
        table = []
        for fid in active:
            feature = features.get(fid, {})
            table.append({"feature_id": fid, "activation": float(acts[fid]),
                          "description": feature.get("description", ""), "score": feature.get("score"),
                          "section": feature.get("section"), "frequency": feature.get("frequency"),
                          "exemplars": list(feature.get("exemplars", [])),
                          "written": fid in written, "omitted_reason": reasons.get(fid)})
        rows.append(table)
    return rows


__all__ = [
    "COMPOSER_SETTINGS",
    "FEATURE_DICTIONARY_NAME",
    "check_feature_overrides",
    "check_generate_arguments",
    "compose_report",
    "compose_reports",
    "explain_rows",
    "load_feature_dictionary",
    "normalize_deid",
    "normalize_sentence",
    "read_feature_dictionary",
    "split_sentences",
    "validate_feature_dictionary",
    "why_empty",
]
