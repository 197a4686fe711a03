"""Free-text radiology reports: sections (MIMIC-CXR sectioner semantics), sentences, de-identification tokens."""

from __future__ import annotations

import re
from typing import Optional

# Header spellings -> canonical section. The last occurrence of a section wins, as in the MIT-LCP sectioner.
HEADERS = {
    "findings": "findings", "finding": "findings", "findings and impression": "impression",
    "impression and findings": "impression", "findings/impression": "impression",
    "impression": "impression", "impressions": "impression", "conclusion": "impression",
    "conclusions": "impression", "interpretation": "impression", "summary": "impression",
    "indication": "indication", "indications": "indication", "clinical indication": "indication",
    "reason for exam": "indication", "reason for examination": "indication", "reason for study": "indication",
    "clinical information": "indication",
    "history": "history", "clinical history": "history", "medical history": "history",
    "comparison": "comparison", "comparisons": "comparison", "prior studies": "comparison",
    "prior study": "comparison", "comparison study": "comparison",
    "technique": "technique", "examination": "technique", "exam": "technique", "procedure": "technique",
    "wet read": "wet_read", "final report": "final_report", "notification": "notification",
    "recommendation": "recommendations", "recommendations": "recommendations", "addendum": "addendum",
}
SECTION_KEYS = ("findings", "impression", "indication", "comparison")
_names = "|".join(sorted((re.escape(h) for h in HEADERS), key=len, reverse=True))
# At the start of a line any case counts; inside a line only an UPPERCASE header followed by a colon.
_LINE_HEADER = re.compile(rf"(?im)^[ \t]*({_names})[ \t]*:")
_INLINE_HEADER = re.compile(rf"(?<=[.;!?])[ \t]+({_names.upper()})[ \t]*:")
_FINAL_REPORT = re.compile(r"(?im)^[ \t]*FINAL REPORT[ \t]*$")

# De-identification tokens: MIMIC-CXR's "___" and IU X-ray's "XXXX".
_IU_XRAY = re.compile(r"\bx-XXXX\b", re.I)
_DEID = re.compile(r"_{2,}|\bX{2,}\b")
_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "vs", "approx", "e.g", "i.e", "fig", "cf", "al", "resp", "nos"}
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*\n")


def _clean(text: str) -> Optional[str]:
    text = " ".join(text.split())
    return text or None


def parse_sections(text: str) -> dict:
    """Split a report into `findings`, `impression`, `indication`, `comparison` (None when absent), plus `preamble`
    (text before the first header) and `technique`/`history` where present."""
    text = _FINAL_REPORT.sub("", text or "")
    found = (m for r in (_LINE_HEADER, _INLINE_HEADER) for m in r.finditer(text))
    marks = sorted({(m.start(1), m.end(), m.group(1)) for m in found})
    sections: dict = {key: None for key in SECTION_KEYS}
    sections["preamble"] = _clean(text[: marks[0][0]] if marks else text)
    for i, (start, body_start, header) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        body = _clean(text[body_start:end])
        sections[HEADERS[" ".join(header.lower().split())]] = body  # later occurrences overwrite earlier ones
    if sections.get("indication") is None and sections.get("history"):
        sections["indication"] = sections["history"]
    return sections


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


def split_sentences(text: str, deid: bool = True) -> list[str]:
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
