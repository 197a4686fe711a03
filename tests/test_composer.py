import json

import pytest
import torch

from composition_saerad import compose_report, validate_feature_dictionary
from modeling_saerad import SAERadModel

from conftest import tiny_dictionary, tiny_model


def feature(fid, description, section="lungs", findings=(), score=0.9):
    return {"id": fid, "description": description, "section": section, "findings": list(findings),
            "score": score, "frequency": 0.1, "exemplars": []}


def finding(label, status="positive", laterality=None, severity=None):
    return {"label": label, "status": status, "laterality": laterality, "severity": severity}


FEATURES = {f["id"]: f for f in [
    feature(0, "The heart size is normal.", "heart/mediastinum", [finding("Cardiomegaly", "negative")]),
    feature(1, "Small left pleural effusion.", "pleura", [finding("Pleural Effusion", "positive", "left", "small")]),
    feature(2, "No pleural effusion.", "pleura", [finding("Pleural Effusion", "negative")]),
    feature(3, "The lungs are clear. No pneumothorax.", "lungs", [finding("Pneumothorax", "negative")]),
    feature(4, "Right internal jugular catheter tip in the SVC.", "devices", [finding("Support Devices")]),
    feature(5, "The lungs are clear."),
    feature(6, ""),
    feature(7, "Left pleural effusion is small.", "pleura",
            [finding("Pleural Effusion", "positive", "left", "small")]),
    feature(8, "Mild degenerative changes of the spine.", "bones"),
]}


def test_golden_report_is_deterministic_and_ordered_by_section():
    acts = [0.0] * 16
    acts[0], acts[1], acts[3], acts[4], acts[8] = 1.0, 3.0, 2.0, 0.5, 0.7
    out = compose_report(acts, FEATURES)
    assert out["report"] == (
        "FINDINGS: Right internal jugular catheter tip in the SVC. The lungs are clear. No pneumothorax. "
        "Small left pleural effusion. The heart size is normal. Mild degenerative changes of the spine.\n\n"
        "IMPRESSION: Small left pleural effusion. Right internal jugular catheter tip in the SVC."
    )
    assert compose_report(list(acts), dict(FEATURES)) == out
    impression = [s for s in out["sentences"] if s["report_section"] == "impression"]
    assert [s["feature_ids"] for s in impression] == [[1], [4]]


def test_every_sentence_traces_to_features_at_or_above_min_activation():
    acts = [0.0] * 16
    acts[0], acts[3], acts[5], acts[8] = 0.3, 0.6, 0.9, 0.45
    out = compose_report(acts, FEATURES, min_activation=0.45)
    assert out["sentences"]
    for sentence in out["sentences"]:
        assert sentence["feature_ids"]
        for fid, act in zip(sentence["feature_ids"], sentence["activations"]):
            assert act == acts[fid] and act >= 0.45
    assert "heart" not in out["report"]  # feature 0 fired below the threshold
    assert "degenerative" in out["report"]  # 0.45 is at the threshold: kept


def test_duplicate_sentences_merge_their_provenance():
    acts = [0.0] * 16
    acts[3], acts[5] = 2.0, 1.0
    out = compose_report(acts, FEATURES)
    clear = [s for s in out["sentences"] if s["text"] == "The lungs are clear."]
    assert len(clear) == 1 and clear[0]["feature_ids"] == [3, 5] and clear[0]["activations"] == [2.0, 1.0]
    assert out["findings"].count("lungs are clear") == 1


def test_features_with_the_same_findings_merge_into_the_stronger_sentence():
    acts = [0.0] * 16
    acts[1], acts[7] = 1.0, 2.0
    out = compose_report(acts, FEATURES)
    assert out["findings"] == "Left pleural effusion is small."
    assert out["sentences"][0]["feature_ids"] == [7, 1]


@pytest.mark.parametrize("effusion,no_effusion,kept", [(3.0, 1.0, 1), (1.0, 3.0, 2)])
def test_contradiction_keeps_the_stronger_feature(effusion, no_effusion, kept):
    acts = [0.0] * 16
    acts[1], acts[2], acts[0] = effusion, no_effusion, 0.5
    out = compose_report(acts, FEATURES)
    dropped = 2 if kept == 1 else 1
    assert FEATURES[kept]["description"] in out["report"]
    assert FEATURES[dropped]["description"] not in out["report"]
    assert out["omitted"] == [{"feature_id": dropped, "activation": acts[dropped],
                               "reason": f"contradicted by stronger feature {kept}", "code": "contradicted"}]


def test_opposite_sides_do_not_contradict():
    features = {0: feature(0, "Small left effusion.", "pleura", [finding("Pleural Effusion", "positive", "left")]),
                1: feature(1, "No right effusion.", "pleura", [finding("Pleural Effusion", "negative", "right")])}
    out = compose_report([1.0, 0.5], features)
    assert "Small left effusion." in out["findings"] and "No right effusion." in out["findings"]


def test_max_report_features_is_respected():
    features = {i: feature(i, f"Made-up finding number {i}.") for i in range(20)}
    acts = [float(i + 1) for i in range(20)]
    out = compose_report(acts, features, max_report_features=5)
    writers = {fid for s in out["sentences"] for fid in s["feature_ids"]}
    assert writers == {19, 18, 17, 16, 15}
    assert len([o for o in out["omitted"] if o["code"] == "max_features"]) == 15


def test_feature_without_description_writes_nothing_and_nothing_fired_gives_empty_report():
    acts = [0.0] * 16
    acts[6] = 5.0
    out = compose_report(acts, FEATURES)
    assert out["report"] == "" and out["sentences"] == []
    assert out["omitted"][0]["reason"] == "no description" and out["omitted"][0]["code"] == "no_description"


def test_min_feature_score_skips_low_scoring_features():
    features = {0: feature(0, "Trusted.", score=0.9), 1: feature(1, "Untrusted.", score=0.4)}
    out = compose_report([1.0, 2.0], features, min_feature_score=0.75)
    assert "Untrusted" not in out["report"] and "Trusted." in out["report"]
    assert [(o["feature_id"], o["code"]) for o in out["omitted"]] == [(1, "low_score")]


def test_normal_impression_cites_the_features_that_wrote_findings():
    acts = [0.0] * 16
    acts[0], acts[3] = 1.0, 2.0
    out = compose_report(acts, FEATURES)
    assert out["impression"] == "No acute cardiopulmonary abnormality."
    assert out["sentences"][-1]["feature_ids"] == [3, 0]


def test_generate_returns_reports_with_provenance(model):
    pixels = torch.randn(3, 3, 32, 32)
    reports = model.generate(pixels)
    out = model.generate(pixels, return_dict_in_generate=True)
    assert reports == out.reports and len(reports) == 3
    for i in range(3):
        acts = out.feature_activations[i]
        for sentence in out.sentences[i]:
            for fid, act in zip(sentence["feature_ids"], sentence["activations"]):
                assert act == acts[fid].item() and act > 0
    assert model.generate(pixels, max_report_features=1, return_dict_in_generate=True).findings[0].count(".") == 1


def test_generate_rejects_unknown_settings(model):
    with pytest.raises(TypeError, match="max_features"):
        model.generate(torch.randn(1, 3, 32, 32), max_features=3)


def test_model_without_dictionary_runs_forward_but_not_generate():
    model = tiny_model()
    model.feature_dictionary = None
    assert model(torch.randn(1, 3, 32, 32)).feature_activations.shape == (1, 64)
    with pytest.raises(ValueError, match="no feature dictionary"):
        model.generate(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d["features"][3].update(id=64), r"features\[3\]\.id"),
        (lambda d: d["features"][3].update(id=2), r"features\[3\]\.id"),
        (lambda d: d["features"][1].update(section="abdomen"), r"features\[1\]\.section"),
        (lambda d: d["features"][1].update(findings=[{"label": "Edema", "status": "maybe"}]),
         r"features\[1\]\.findings\[0\]\.status"),
        (lambda d: d["features"][0].update(description=None), r"features\[0\]\.description"),
        (lambda d: d["features"][0].update(score="high"), r"features\[0\]\.score"),
    ],
)
def test_broken_dictionary_names_the_field(tmp_path, mutate, field):
    data = tiny_dictionary()
    mutate(data)
    path = tmp_path / "feature_dictionary.json"
    path.write_text(json.dumps(data))
    model = tiny_model()
    with pytest.raises(ValueError, match=field):
        model.load_feature_dictionary(path)


def test_dictionary_file_that_is_not_json_is_a_value_error(tmp_path):
    path = tmp_path / "feature_dictionary.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        tiny_model().load_feature_dictionary(path)


def test_broken_dictionary_in_a_model_folder_fails_loading(model_dir):
    data = json.loads((model_dir / "feature_dictionary.json").read_text())
    data["features"][0]["section"] = "abdomen"
    (model_dir / "feature_dictionary.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"features\[0\]\.section"):
        SAERadModel.from_pretrained(model_dir)


def test_validate_sorts_features_by_id():
    data = tiny_dictionary(4)
    data["features"].reverse()
    assert [f["id"] for f in validate_feature_dictionary(data, 4)["features"]] == [0, 1, 2, 3]


def test_min_feature_precision_skips_features_whose_held_out_precision_is_low_or_unknown():
    features = {0: {**feature(0, "Precise."), "precision": 0.9}, 1: {**feature(1, "Imprecise."), "precision": 0.3},
                2: feature(2, "Never measured.")}
    out = compose_report([1.0, 2.0, 3.0], features, min_feature_score=0.75, min_feature_precision=0.6)
    assert out["findings"] == "Precise."
    assert sorted((o["feature_id"], o["code"]) for o in out["omitted"]) == [(1, "low_precision"), (2, "low_precision")]
    assert "held-out precision 0.300 below min_feature_precision 0.600" in out["omitted"][1]["reason"]
    # unset, nothing changes: dictionaries made before precision was measured compose as before
    assert compose_report([1.0, 2.0, 3.0], features)["findings"].count(".") == 3


@pytest.mark.parametrize("text, side", [
    ("Small left pleural effusion.", "left"), ("Right perihilar opacities.", "right"),
    ("Bibasilar atelectasis.", "bilateral"), ("Left and right effusions.", "bilateral"),
    ("The heart is enlarged.", None),
])
def test_stated_side_reads_the_side_words(text, side):
    from localization_saerad import stated_side

    assert stated_side(text) == side


@pytest.mark.parametrize("map_side, text", [("left", "Pleural effusion."), ("right", "Right sided pleural effusion."),
                                            ("bilateral", "Right sided pleural effusion."),
                                            ("central", "Right sided pleural effusion.")])
def test_a_sentence_whose_side_contradicts_its_map_loses_its_side_words(map_side, text):
    from localization_saerad import check_side

    sentence = {"text": "Right sided pleural effusion.", "side": map_side}
    check_side(sentence)
    assert sentence["text"] == text
    assert ("side_check" in sentence) == (map_side == "left")


def test_no_generated_sentence_names_the_side_opposite_its_map(model):
    from localization_saerad import stated_side

    sided = {i: {**f, "description": f"{'Left' if i % 2 else 'Right'} sided finding number {i}.", "score": 0.9}
             for i, f in model.features.items()}
    model.load_feature_dictionary({"schema_version": 1, "features": list(sided.values())})
    out = model.generate(torch.randn(4, 3, 32, 32), return_dict_in_generate=True, output_localization=True)
    checked = [s for sentences in out.sentences for s in sentences if s["side"] in ("left", "right")]
    assert checked, "the tiny model should map some sentence to one side"
    for s in checked:
        assert stated_side(s["text"]) in (None, s["side"]) and ("side_check" in s) == ("stated_text" in s)
    for sentences, findings in zip(out.sentences, out.findings):
        assert findings == " ".join(s["text"] for s in sentences if s["report_section"] == "findings")
