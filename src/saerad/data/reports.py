"""Free-text radiology reports: sections (MIMIC-CXR sectioner semantics), sentences, de-identification tokens."""

from __future__ import annotations

import re
from typing import Optional

from composition_saerad import normalize_deid, normalize_sentence, split_sentences  # noqa: F401  (one splitter)

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
