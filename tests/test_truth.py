"""Scoring reports against drawn phantom findings: cases whose right answer is known."""

from saerad.evaluation.fresh import drawable_findings, truth_cases
from saerad.evaluation.truth import confusion, per_finding, score_report, summarize

LEFT_EFFUSION = {"label": "pleural_effusion", "laterality": "left"}


def test_a_drawn_finding_stated_on_its_side_is_a_hit_with_the_side_right():
    s = score_report("There is a small left pleural effusion.", [LEFT_EFFUSION])
    assert s["drawn"][0]["hit"] and s["drawn"][0]["side_right"] is True and s["false"] == []


def test_the_wrong_side_is_a_hit_with_the_side_wrong():
    s = score_report("There is a small right pleural effusion.", [LEFT_EFFUSION])
    assert s["drawn"][0]["hit"] and s["drawn"][0]["side_right"] is False


def test_both_sides_for_a_one_sided_finding_is_the_side_wrong():
    s = score_report("Left pleural effusion. Right pleural effusion.", [LEFT_EFFUSION])
    assert s["drawn"][0]["side_right"] is False


def test_a_finding_stated_without_a_side_counts_for_no_side():
    s = score_report("Pleural effusion.", [LEFT_EFFUSION])
    assert s["drawn"][0]["hit"] and s["drawn"][0]["side_right"] is None


def test_a_stated_finding_that_was_not_drawn_is_false():
    s = score_report("Mild cardiomegaly. Left pleural effusion.", [LEFT_EFFUSION])
    assert s["false"] == ["Cardiomegaly"]


def test_a_stated_parent_counts_for_a_drawn_child_but_not_as_its_own_name():
    s = score_report("Left basilar opacity.", [{"label": "consolidation", "laterality": "left"}])
    assert s["drawn"][0]["hit"] and not s["drawn"][0]["exact"] and s["false"] == []


def test_a_negated_finding_is_not_stated():
    s = score_report("No pleural effusion. No pneumothorax.", [LEFT_EFFUSION])
    assert not s["drawn"][0]["hit"] and s["stated"] == []


def test_summary_counts_precision_recall_and_normal_patients():
    scored = [score_report("Left pleural effusion. Cardiomegaly.", [LEFT_EFFUSION]),
              score_report("", [{"label": "pneumothorax", "laterality": "right"}]),
              score_report("The lungs are clear.", []), score_report("Cardiomegaly.", [])]
    s = summarize(scored)
    assert (s["recall"], s["precision"], s["false_per_report"], s["normal_clean"]) == (0.5, 1 / 3, 0.5, 0.5)
    assert s["side_right"] == 1.0 and s["sided"] == 1


def test_per_finding_and_confusion_keep_single_finding_patients_apart():
    scored = [score_report("Left pleural effusion.", [LEFT_EFFUSION]),
              score_report("Cardiomegaly.", [LEFT_EFFUSION, {"label": "cardiomegaly", "laterality": None}])]
    rows = per_finding(scored)
    assert rows["left pleural_effusion"]["alone"] == 1 and rows["left pleural_effusion"]["alone_recall"] == 1.0
    assert rows["left pleural_effusion"]["recall"] == 0.5
    assert confusion(scored)["pleural_effusion"] == {"patients": 2, "Pleural Effusion": 1, "Cardiomegaly": 1}


def test_cases_cover_every_drawable_finding_on_both_sides_and_new_namespaces_draw_new_patients():
    train = [[LEFT_EFFUSION], [LEFT_EFFUSION, {"label": "cardiomegaly"}], []]
    cases = truth_cases(train, n_single=2, n_combo=3, n_normal=2)
    singles = [c for c in cases if c[0] == "listed, 1 finding"]
    assert len(singles) == 2 * len(drawable_findings())
    assert {"label": "pneumothorax", "laterality": "left"} in drawable_findings()
    assert {"label": "pneumothorax", "laterality": "right"} in drawable_findings()
    assert {len(d) for g, d, _ in cases if g.startswith("as in training")} == {1, 2}
    other = truth_cases(train, n_single=2, n_combo=3, n_normal=2, namespace="unseen")
    assert not {s for *_, s in cases} & {s for *_, s in other}
