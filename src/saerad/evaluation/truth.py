"""Reports scored against the findings drawn in phantoms: recall, precision, side, false findings, confusion.

A report's statements are the labeler's positive or uncertain mentions (No Finding aside), one per observation, with
the sides they name. A drawn finding is stated when the report states its observation (`OBSERVATION_OF`), or a parent
of it (Lung Opacity for a drawn consolidation, Enlarged Cardiomediastinum for cardiomegaly; Pneumonia for a drawn
consolidation too): the report is then not wrong, only less specific. A stated observation that no drawn finding
accepts is false. A lateralised finding stated with a side is on the right side when the sides it is stated with are
exactly the drawn one (both sides for a bilateral finding); stated without a side, it counts for neither.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Optional

from .fresh import OBSERVATION_OF

PARENT_OF = {"Edema": "Lung Opacity", "Consolidation": "Lung Opacity", "Pneumonia": "Lung Opacity",
             "Lung Lesion": "Lung Opacity", "Atelectasis": "Lung Opacity",
             "Cardiomegaly": "Enlarged Cardiomediastinum"}
ALSO_ACCEPTED = {"consolidation": ("Pneumonia",)}  # a phantom consolidation is what a report calls pneumonia


def accepted(label: str) -> set:
    """The observations that state a drawn phantom finding: its own, its parent, and synonyms."""
    own = OBSERVATION_OF[label]
    return {own, *ALSO_ACCEPTED.get(label, ())} | ({PARENT_OF[own]} if own in PARENT_OF else set())


def statements(report: str) -> dict:
    """{observation: set of sides named} of a report's positive or uncertain mentions (No Finding aside); a mention
    without a side adds None."""
    from ..labeler import label_mentions

    stated: dict = defaultdict(set)
    for m in label_mentions(report or ""):
        if m["label"] != "No Finding" and m["status"] != "negative":
            stated[m["label"]].add(m["laterality"])
    return dict(stated)


def _side_right(drawn_side: str, sides: set) -> Optional[bool]:
    named = {s for s in sides if s is not None}
    if not named:
        return None
    if named >= {"left", "right"}:
        named = (named - {"left", "right"}) | {"bilateral"}
    return named == {drawn_side}


def score_report(report: str, drawn: Iterable[dict]) -> dict:
    """One report against its drawn findings (`{"label", "laterality"}` each): per drawn finding whether it is stated
    (`hit`), stated by its own observation (`exact`) and on its side (`side_right`: None when unsided or unstated);
    the stated observations, and those no drawn finding accepts (`false`)."""
    drawn = list(drawn)
    stated = statements(report)
    rows = []
    for f in drawn:
        matched = accepted(f["label"]) & set(stated)
        side = f.get("laterality")
        sides = set().union(*(stated[o] for o in matched)) if matched else set()
        rows.append({"label": f["label"], "laterality": side, "hit": bool(matched),
                     "exact": OBSERVATION_OF[f["label"]] in stated,
                     "side_right": _side_right(side, sides) if matched and side else None})
    allowed = set().union(*(accepted(f["label"]) for f in drawn)) if drawn else set()
    false = sorted(o for o in stated if o not in allowed)
    return {"drawn": rows, "stated": sorted(stated), "false": false}


def _ratio(num: float, den: float) -> Optional[float]:
    return num / den if den else None


def summarize(scored: list[dict]) -> dict:
    """Overall numbers of scored reports (`score_report` outputs): recall, precision, side right, false findings per
    report, the share of normal patients (nothing drawn) with no stated finding."""
    drawn = [d for s in scored for d in s["drawn"]]
    n_stated = sum(len(s["stated"]) for s in scored)
    n_false = sum(len(s["false"]) for s in scored)
    sided = [d["side_right"] for d in drawn if d["side_right"] is not None]
    normals = [s for s in scored if not s["drawn"]]
    return {
        "reports": len(scored), "drawn": len(drawn), "stated": n_stated,
        "recall": _ratio(sum(d["hit"] for d in drawn), len(drawn)),
        "exact_recall": _ratio(sum(d["exact"] for d in drawn), len(drawn)),
        "precision": _ratio(n_stated - n_false, n_stated),
        "side_right": _ratio(sum(sided), len(sided)), "sided": len(sided),
        "false_per_report": _ratio(n_false, len(scored)),
        "normal_patients": len(normals),
        "normal_clean": _ratio(sum(not s["stated"] for s in normals), len(normals)),
    }


def finding_name(label: str, laterality: Optional[str]) -> str:
    """A drawn finding as the tables name it: `left pleural_effusion`, `cardiomegaly`."""
    return label if not laterality else f"{laterality} {label}"


def per_finding(scored: list[dict]) -> dict:
    """Per drawn finding (label and side): patients, recall, exact recall, side right, and recall among the patients
    where it was the only drawn finding (`alone`)."""
    groups: dict = defaultdict(list)
    for s in scored:
        for d in s["drawn"]:
            groups[finding_name(d["label"], d["laterality"])].append((d, len(s["drawn"]) == 1))
    out = {}
    for name, rows in sorted(groups.items()):
        alone = [d for d, single in rows if single]
        sided = [d["side_right"] for d, _ in rows if d["side_right"] is not None]
        out[name] = {"patients": len(rows), "recall": _ratio(sum(d["hit"] for d, _ in rows), len(rows)),
                     "exact_recall": _ratio(sum(d["exact"] for d, _ in rows), len(rows)),
                     "side_right": _ratio(sum(sided), len(sided)), "alone": len(alone),
                     "alone_recall": _ratio(sum(d["hit"] for d in alone), len(alone))}
    return out


def per_observation(scored: list[dict]) -> dict:
    """Per stated observation: how often reports state it, and the share of those statements a drawn finding
    accepts (its precision)."""
    stated, false = Counter(), Counter()
    for s in scored:
        stated.update(s["stated"])
        false.update(s["false"])
    return {o: {"stated": n, "precision": (n - false[o]) / n} for o, n in sorted(stated.items())}


def confusion(scored: list[dict]) -> dict:
    """Drawn -> stated: per drawn finding label (`normal` for a patient with none), how many patients and how many of
    their reports state each observation."""
    table: dict = defaultdict(Counter)
    for s in scored:
        for label in {d["label"] for d in s["drawn"]} or {"normal"}:
            table[label]["patients"] += 1
            table[label].update(s["stated"])
    return {label: dict(row) for label, row in sorted(table.items())}


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0%}"


def summary_markdown(summaries: dict) -> str:
    """One row per group of patients (`{name: summarize(...)}`)."""
    lines = ["| patients | reports | recall | precision | side right | false findings / report | "
             "normal patients with no finding |", "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        fpr = "–" if s["false_per_report"] is None else f"{s['false_per_report']:.2f}"
        lines.append(f"| {name} | {s['reports']} | {_pct(s['recall'])} | {_pct(s['precision'])} | "
                     f"{_pct(s['side_right'])} | {fpr} | {_pct(s['normal_clean'])} |")
    return "\n".join(lines) + "\n"


def findings_markdown(rows: dict, confused: dict, top: int = 2, names: Optional[Iterable[str]] = None) -> str:
    """One row per drawn finding (those in `names`, default all): recall alone and in any set, exact recall, side
    right, and what its reports state most often that is not it."""
    rows = rows if names is None else {n: rows[n] for n in names if n in rows}
    lines = ["| drawn finding | alone: stated | all patients: stated | by its own name | side right | "
             "also stated most |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        label = name.split(" ")[-1]
        row = confused.get(label, {})
        others = sorted(((n, o) for o, n in row.items() if o != "patients" and o not in accepted(label)),
                        reverse=True)[:top]
        also = ", ".join(f"{o} {n / row['patients']:.0%}" for n, o in others) or "–"
        lines.append(f"| {name} | {_pct(r['alone_recall'])} of {r['alone']} | {_pct(r['recall'])} of "
                     f"{r['patients']} | {_pct(r['exact_recall'])} | {_pct(r['side_right'])} | {also} |")
    return "\n".join(lines) + "\n"


def observations_markdown(observations: dict) -> str:
    """One row per stated observation: how many reports state it and its precision."""
    lines = ["| stated observation | reports | precision |", "|---|---|---|"]
    for o, r in sorted(observations.items(), key=lambda kv: -kv[1]["stated"]):
        lines.append(f"| {o} | {r['stated']} | {_pct(r['precision'])} |")
    return "\n".join(lines) + "\n"


def map_sides(results: list[dict]) -> dict:
    """Of the FINDINGS sentences that name one side (before the map-side check), how many their own map contradicted
    (and so lost the side), and, in patients with one drawn lateralised finding, how often the words and how often
    the map had the drawn side."""
    from localization_saerad import stated_side

    named = dropped = words_right = map_right = judged = 0
    for r in results:
        single = r["drawn"][0].get("laterality") if len(r["drawn"]) == 1 else None
        for s in r["sentences"]:
            said = stated_side(s.get("stated_text", s["text"]))
            if said not in ("left", "right"):
                continue
            named, dropped = named + 1, dropped + (s.get("side_check") == "dropped")
            if single in ("left", "right") and s.get("side") in ("left", "right"):
                judged, words_right, map_right = judged + 1, words_right + (said == single), map_right + (
                    s["side"] == single)
    return {"sentences_naming_a_side": named, "contradicted_by_their_map": dropped, "judged": judged,
            "words_on_drawn_side": _ratio(words_right, judged), "map_on_drawn_side": _ratio(map_right, judged)}
