import pytest

from saerad.labeler import OBSERVATIONS, label_report, label_sentence
from saerad.labeler.agreement import agreement, mesh_positives


def status(sentence, label):
    found = [m["status"] for m in label_sentence(sentence) if m["label"] == label]
    assert found, f"{label} not found in {sentence!r}"
    return found[0]


@pytest.mark.parametrize("sentence,label", [
    ("No pleural effusion.", "Pleural Effusion"),
    ("No pleural effusion, pneumothorax, or focal consolidation.", "Consolidation"),
    ("The lungs are without focal consolidation.", "Consolidation"),
    ("Lungs are free of focal airspace disease.", "Lung Opacity"),
    ("The left pneumothorax has resolved.", "Pneumothorax"),
    ("Resolved right lower lobe atelectasis.", "Atelectasis"),
    ("There is no evidence of pulmonary edema.", "Edema"),
    ("The heart is not enlarged.", "Cardiomegaly"),
    ("Heart size is within normal limits.", "Cardiomegaly"),
    ("Pneumothorax is not seen.", "Pneumothorax"),
])
def test_negation(sentence, label):
    assert status(sentence, label) == "negative"


@pytest.mark.parametrize("sentence,label", [
    ("The opacity may represent atelectasis.", "Atelectasis"),
    ("Cannot exclude a small left effusion.", "Pleural Effusion"),
    ("Pneumonia cannot be excluded.", "Pneumonia"),
    ("Possible right lower lobe pneumonia.", "Pneumonia"),
    ("Findings are suspicious for early edema.", "Edema"),
    ("Questionable small pneumothorax.", "Pneumothorax"),
])
def test_uncertainty(sentence, label):
    assert status(sentence, label) == "uncertain"


@pytest.mark.parametrize("sentence,label", [
    ("No increase in the right pleural effusion.", "Pleural Effusion"),
    ("No change in the mild cardiomegaly.", "Cardiomegaly"),
    ("No pneumothorax but there is a small left effusion.", "Pleural Effusion"),
    ("Stable cardiomegaly.", "Cardiomegaly"),
    ("Right internal jugular catheter terminates in the SVC.", "Support Devices"),
])
def test_positive_including_pseudo_negation_and_scope_termination(sentence, label):
    assert status(sentence, label) == "positive"


def test_laterality_and_severity():
    [m] = [m for m in label_sentence("There is a small left pleural effusion.") if m["label"] == "Pleural Effusion"]
    assert (m["laterality"], m["severity"]) == ("left", "small")
    [m] = label_sentence("Moderate right upper lobe consolidation.")
    assert (m["laterality"], m["severity"]) == ("right", "moderate")
    [m] = label_sentence("Bilateral pleural effusions, large.")
    assert m["laterality"] == "bilateral" and m["severity"] == "large"
    assert [m["severity"] for m in label_sentence("Mild cardiomegaly.")] == ["mild"]
    assert label_sentence("Cardiomegaly.")[0]["laterality"] is None


def test_aggregation_positive_beats_uncertain_beats_negative():
    assert label_report("No effusion. Possible small effusion.")["Pleural Effusion"] == "uncertain"
    assert label_report("Possible effusion. There is a right effusion. No effusion on the left.")[
        "Pleural Effusion"] == "positive"
    assert label_report("No effusion. The effusion has resolved.")["Pleural Effusion"] == "negative"


def test_no_finding_rule():
    assert label_report("The lungs are clear. No effusion. Heart size normal.")["No Finding"] == "positive"
    assert label_report("Sternotomy wires. No acute process.")["No Finding"] == "positive"  # devices do not count
    assert "No Finding" not in label_report("Possible pneumonia.")
    labels = label_report("Mild cardiomegaly. No effusion.")
    assert "No Finding" not in labels and labels["Cardiomegaly"] == "positive"
    assert set(label_report("Small left effusion.")) <= set(OBSERVATIONS)


def test_deid_tokens_and_case_do_not_matter():
    assert label_report("NO PLEURAL EFFUSION. XXXX opacity in the left base.") == label_report(
        "no pleural effusion. opacity in the left base.")


def test_mesh_agreement_on_made_up_reports():
    reports = [
        {"id": "5", "findings": "Small left pleural effusion.", "impression": None, "mesh": ["Pleural Effusion/left"]},
        {"id": "10", "findings": "No effusion.", "impression": None, "mesh": ["normal"]},
        {"id": "15", "findings": "Clear lungs.", "impression": None, "mesh": ["Pleural Effusion/right"]},
        {"id": "16", "findings": "Mild cardiomegaly.", "impression": None, "mesh": ["Cardiomegaly/mild"]},
    ]
    assert mesh_positives(["Pleural Effusion/left", "Costophrenic Angle/blunted"]) == {"Pleural Effusion"}
    held_out = agreement(reports)
    assert held_out["n_reports"] == 3
    effusion = held_out["observations"]["Pleural Effusion"]
    assert effusion["precision"] == 1.0 and effusion["recall"] == 0.5 and effusion["support"] == 2
    assert agreement(reports, held_out=False)["observations"]["Cardiomegaly"]["f1"] == 1.0


@pytest.mark.parametrize("sentence, label, status, side", [
    ("The lungs are hyperexpanded.", "Hyperinflation", "positive", None),
    ("Emphysematous changes.", "Hyperinflation", "positive", None),
    ("No evidence of hyperinflation.", "Hyperinflation", "negative", None),
    ("Lung volumes are low.", "Low Lung Volumes", "positive", None),
    ("Low lung volumes with bibasilar atelectasis.", "Low Lung Volumes", "positive", None),
    ("Elevated right hemidiaphragm.", "Elevated Hemidiaphragm", "positive", "right"),
    ("The thoracic aorta is tortuous.", "Tortuous Aorta", "positive", None),
    ("Atherosclerotic calcification of the aortic arch.", "Aortic Calcification", "positive", None),
    ("Small hiatal hernia.", "Hiatal Hernia", "positive", None),
    ("Degenerative changes of the thoracic spine.", "Degenerative Spine", "positive", None),
    ("Mild dextroscoliosis.", "Spinal Curvature", "positive", None),
    ("The bones are osteopenic.", "Osteopenia", "positive", None),
])
def test_observations_beyond_chexpert_are_mentioned_but_not_labelled(sentence, label, status, side):
    mentions = [m for m in label_sentence(sentence) if m["label"] == label]
    assert mentions and mentions[0]["status"] == status and mentions[0]["laterality"] == side
    labels = label_report(sentence)
    assert set(labels) <= set(OBSERVATIONS)
    if "atelectasis" not in sentence:
        assert labels.get("No Finding") == "positive"  # these do not make a report abnormal in CheXpert's terms
