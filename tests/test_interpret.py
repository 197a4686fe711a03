import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saerad.cli import main
from saerad.interpret.corpus import Corpus, extractive_description
from saerad.interpret.describe import tag_description
from saerad.interpret.mine import mine
from saerad.interpret.score import ReportIndex, auroc, score_features

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
         "romeo sierra tango uniform victor whiskey xray yankee zulu amber basil cedar dune ember fjord").split()
BOILERPLATE = ["The study is made up for a test.", "No pneumothorax."]


def planted(folder, n=5000, d=64, m=32, k=3, seed=0):
    """32 orthonormal atoms; each row has exactly k of them, and its report says so (plus boilerplate)."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.linalg.qr(torch.randn(d, d, generator=g))[0][:m]
    chosen = torch.stack([torch.randperm(m, generator=g)[:k] for _ in range(n)])
    active = torch.zeros(n, m, dtype=torch.bool).scatter(1, chosen, True)
    x = ((torch.rand(n, m, generator=g) + 0.5) * active) @ atoms + 0.01 * torch.randn(n, d, generator=g)
    np.save(folder / "x.npy", x.numpy())
    rng = random.Random(seed)
    with open(folder / "reports.jsonl", "w") as f:
        for i in range(n):
            sentences = BOILERPLATE + [f"Planted sign {WORDS[j]} is seen." for j in range(m) if active[i, j]]
            rng.shuffle(sentences)
            f.write(json.dumps({"id": str(i), "findings": " ".join(sentences)}) + "\n")
    return atoms


def test_planted_features_get_their_sentence_and_detect_it(tmp_path):
    atoms = planted(tmp_path)
    assert main(["train", "--embeddings", str(tmp_path / "x.npy"), "--architecture", "topk", "--k", "3", "--d-sae",
                 "64", "--epochs", "30", "--log-every", "0", "--out", str(tmp_path / "sae")]) == 0
    assert main(["interpret", "--sae", str(tmp_path / "sae"), "--embeddings", str(tmp_path / "x.npy"), "--reports",
                 str(tmp_path / "reports.jsonl"), "--holdout", "0.2", "--out", str(tmp_path / "interp")]) == 0
    decoder = load_file(str(tmp_path / "sae" / "sae.safetensors"))["W_dec"]
    cos = (decoder / decoder.norm(dim=1, keepdim=True)) @ atoms.T
    dictionary = json.loads((tmp_path / "interp" / "feature_dictionary.json").read_text())
    aligned = [(f, WORDS[int(cos[f["id"]].argmax())]) for f in dictionary["features"]
               if float(cos[f["id"]].max()) >= 0.9 and "dead" not in f["flags"]]
    assert len(aligned) >= 28
    correct = [f for f, word in aligned if f["description"] == f"Planted sign {word} is seen."]
    assert len(correct) >= 0.9 * len(aligned)
    assert all(f["score"] >= 0.9 for f in correct)
    for f in dictionary["features"]:
        assert not any(b in f["description"] for b in BOILERPLATE)
        assert len(f["exemplars"]) <= 32
    metrics = json.loads((tmp_path / "interp" / "interpret_metrics.json").read_text())
    assert {"n_live", "median_auroc", "frac_live_auroc_ge_0_75"} <= set(metrics)
    assert metrics["median_auroc"] >= 0.9


def test_mining_equals_a_dense_brute_force():

    from modeling_saerad import SparseAutoencoder

    torch.manual_seed(0)
    sae = SparseAutoencoder(d_in=8, d_sae=16, architecture="relu")
    torch.nn.init.normal_(sae.W_enc)
    torch.nn.init.normal_(sae.W_dec)
    sae.b_enc.data.fill_(-1.5)
    x = torch.randn(300, 8)
    mined = mine(sae, x, k=5, batch_size=37, keep_firing=True)
    dense = sae.encode(x).detach()
    firing = mined.firing_rows()
    for feature in range(16):
        column = dense[:, feature]
        assert firing[feature] == (column > 0).nonzero().flatten().tolist()
        expected = sorted(((float(v), i) for i, v in enumerate(column) if v > 0), reverse=True)[:5]
        got = mined.exemplars(feature)
        assert [r for r, _ in got] == [i for _, i in expected]
        assert np.allclose([v for _, v in got], [v for v, _ in expected])
        assert float(mined.frequency[feature]) == pytest.approx(float((column > 0).float().mean()))
        if (column > 0).any():
            assert float(mined.max_activation[feature]) == pytest.approx(float(column.max()))
            assert float(mined.mean_activation[feature]) == pytest.approx(float(column[column > 0].mean()), rel=1e-5)


def test_extractive_prefers_enriched_sentences_and_keeps_agreed_laterality():
    reports = (["The heart size is normal. No pleural effusion. Small left pleural effusion is noted."] * 4
               + ["The heart size is normal. No pleural effusion. There is a small left effusion."] * 2
               + ["The heart size is normal. No pleural effusion. The lungs are clear."] * 30)
    reports[2] = "The heart size is normal. Small left pleural effusion is noted."
    corpus = Corpus(reports)
    description = extractive_description(corpus, list(range(6)))
    assert description.startswith("Small left pleural effusion is noted.")
    assert "heart size is normal" not in description  # everywhere, so it describes nothing
    findings, section = tag_description(description)
    assert section == "pleura" and findings[0]["label"] == "Pleural Effusion" and findings[0]["laterality"] == "left"
    assert extractive_description(corpus, []) == ""


def test_normal_anatomy_features_get_normal_descriptions_scored_on_normal_reports():
    reports = ["The heart size is normal. The lungs are clear."] * 10 + ["Moderate cardiomegaly."] * 20
    description = extractive_description(Corpus(reports), list(range(10)))
    assert "The heart size is normal." in description
    findings, section = tag_description("The heart size is normal.")
    assert findings == [{"label": "Cardiomegaly", "status": "negative", "laterality": None, "severity": None}]
    index = ReportIndex(["Normal heart size.", "Moderate cardiomegaly.", "Heart is not enlarged."])
    assert [index.states(i, findings, "The heart size is normal.") for i in range(3)] == [1.0, 0.0, 1.0]


def test_detection_score_is_how_well_the_description_predicts_firing():
    reports = ["Moderate cardiomegaly."] * 100 + ["The heart size is normal."] * 900
    index = ReportIndex(reports)
    features = [{"id": i, "description": "The heart is enlarged.", "findings": tag_description("The heart is "
                                                                                              "enlarged.")[0]}
                for i in range(3)]
    acts = np.zeros((1000, 3))
    acts[:10, 0] = 1.0  # fires on a tenth of the cardiomegaly rows and nowhere else: precise, so predictable
    acts[:100, 1] = 1.0
    acts[100:500, 1] = 1.0  # fires on every cardiomegaly row and on 400 normal ones: the description misses most
    acts[::2, 2] = 1.0  # fires on every other row, whatever the report says
    score_features(features, acts, index)
    assert features[0]["score"] == pytest.approx(0.5 * (1 + 1 - 90 / 990))
    assert features[1]["score"] == pytest.approx(0.5 * (1 + 100 / 500 - 0))
    assert features[2]["score"] == pytest.approx(0.5)
    described = {"id": 0, "description": "Lungs are clear. No effusion.", "findings": []}
    assert ReportIndex(["Lungs are clear."]).states(0, [], described["description"]) == 0.5


def test_features_with_too_few_held_out_firings_are_not_scored():
    reports = ["Moderate cardiomegaly."] * 100 + ["The heart size is normal."] * 900
    index = ReportIndex(reports)
    findings = tag_description("The heart is enlarged.")[0]
    features = [{"id": i, "description": "The heart is enlarged.", "findings": findings} for i in range(3)]
    acts = np.zeros((1000, 3))
    acts[:3, 0] = 1.0  # three cardiomegaly rows: a perfect-looking AUROC on too little evidence
    acts[:5, 1] = 1.0
    acts[:998, 2] = 1.0  # silent on two rows only
    score_features(features, acts, index)
    assert [f["score_support"] for f in features] == [3, 5, 998]
    assert features[0]["score"] is None and features[2]["score"] is None
    assert features[1]["score"] == pytest.approx(0.5 * (1 + 1 - 95 / 995))
    score_features(features, acts, index, min_support=3)
    assert features[0]["score"] == pytest.approx(0.5 * (1 + 1 - 97 / 997))


def test_detection_describer_states_what_predicts_firing_not_what_is_common():
    normal = "The heart size is normal. No pneumothorax."
    reports = ([f"{normal} Small left pleural effusion."] * 8 + [normal] * 2 + [normal] * 80
               + ["Low lung volumes. No pneumothorax."] * 10)
    corpus = Corpus(reports)
    # fires on 8 effusion reports and 2 normal ones: the effusion predicts it; normal sentences are everywhere
    description = extractive_description(corpus, list(range(10)), firing=list(range(10)))
    assert description == "Small left pleural effusion."
    assert extractive_description(corpus, [90, 91], firing=list(range(90, 100))) == "Low lung volumes."
    assert extractive_description(corpus, [], firing=[]) == ""
    # a feature of one rare image is described by what is rare in its report
    lone = Corpus([f"{normal} Tiny calcified granuloma."] + [normal] * 50)
    assert extractive_description(lone, [0], firing=[0]) == "Tiny calcified granuloma."


def test_auroc_known_values():
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.1, 0.2], [False, False, True, True]) == 0.0
    assert auroc([0, 0, 0, 0], [False, True, False, True]) == 0.5
    assert auroc([0.3, 0.1, 0.2], [True, False, True]) == 1.0
    assert auroc([1, 2], [True, True]) is None


def test_a_feature_of_the_normal_images_is_described_and_scored_as_no_finding():
    from saerad.interpret.corpus import NORMAL_SENTENCE, Corpus, extractive_description
    from saerad.interpret.describe import tag_description
    from saerad.interpret.score import ReportIndex, auroc

    normal = ["Lungs are clear. Mediastinum is unremarkable.", "The lungs are clear. The mediastinum is unremarkable.",
              "Clear lungs. No effusion."] * 4
    abnormal = ["Mediastinum is unremarkable. Heart is enlarged.", "Left pleural effusion. The lungs are clear.",
                "Right lower lobe opacity. Mediastinum is unremarkable."] * 4
    reports = normal + abnormal
    # no sentence says "normal", yet what the firing reports share is that they state nothing abnormal
    description = extractive_description(Corpus(reports), list(range(12)))
    assert description == NORMAL_SENTENCE
    findings, _ = tag_description(description)
    assert [(f["label"], f["status"]) for f in findings] == [("No Finding", "positive")]
    index = ReportIndex(reports + ["Heart is enlarged. No acute cardiopulmonary abnormality."])
    stated = [index.states(i, findings, description) for i in range(25)]
    # a report states No Finding when its labels are No Finding, not when it holds the phrase
    assert stated == [1.0] * 12 + [0.0] * 13
    assert auroc(stated, [True] * 12 + [False] * 13) == 1.0
    # a firing report's own No Finding sentence is preferred to the fixed one
    own = extractive_description(Corpus([r + " No acute disease." for r in normal] + abnormal), list(range(12)))
    assert own == "No acute disease."


def test_enrichment_states_what_the_exemplars_state_more_often_than_the_corpus_not_the_most_frequent():
    from saerad.interpret.describe import enriched_description

    reports = (["Low lung volumes. Small left pleural effusion."] * 6 + ["Low lung volumes."] * 4
               + ["Low lung volumes."] * 50 + ["The lungs are clear."] * 40)
    corpus = Corpus(reports)
    # all ten exemplars state low lung volumes, as 60% of the corpus does; six state the effusion, which no other does
    assert enriched_description(corpus, list(range(10))) == "Small left pleural effusion."
    # a statement one exemplar in ten makes is not what the feature is about, however rare
    lone = Corpus(["Tiny calcified granuloma. Low lung volumes."] + ["Low lung volumes."] * 9 + ["Clear."] * 90)
    assert enriched_description(lone, list(range(10))) == "Low lung volumes."
    # nothing enriched: no description, rather than a statement every report makes
    assert enriched_description(Corpus(["Low lung volumes."] * 50), list(range(10))) == ""


def test_enrichment_names_a_side_only_where_the_exemplars_agree_on_it():
    from saerad.interpret.describe import enriched_description

    normal = ["The lungs are clear."] * 80
    split = ["Left pleural effusion."] * 5 + ["Right pleural effusion."] * 5 + ["Pleural effusion."] * 2
    corpus = Corpus(split + normal)
    assert enriched_description(corpus, list(range(10))) == "Pleural effusion."
    agree = ["Left pleural effusion."] * 9 + ["Right pleural effusion."] + ["Pleural effusion."] * 2
    assert enriched_description(Corpus(agree + normal), list(range(10))) == "Left pleural effusion."


def test_held_out_precision_is_the_share_of_firing_rows_whose_report_states_the_description():
    reports = ["Moderate cardiomegaly."] * 3 + ["The heart size is normal."] * 7
    features = [{"id": 0, "description": "Cardiomegaly.", "findings": tag_description("Cardiomegaly.")[0]}]
    acts = np.zeros((10, 1))
    acts[[0, 1, 2, 3], 0] = 1.0  # fires on the 3 cardiomegaly rows and one normal one
    score_features(features, acts, ReportIndex(reports), min_support=2)
    assert features[0]["precision"] == 0.75 and features[0]["score"] == 0.875  # ranks well, wrong one time in 4


def test_precision_threshold_chosen_on_held_out_rows_drops_the_imprecise_feature():
    from saerad.interpret.score import choose_precision_threshold

    reports = ["Cardiomegaly. Small pleural effusion."] * 2 + ["Cardiomegaly."] * 8 + ["The lungs are clear."] * 10
    index = ReportIndex(reports)
    features = [{"id": i, "description": d, "findings": tag_description(d)[0], "section": "lungs", "score": 0.9}
                for i, d in enumerate(["Cardiomegaly.", "Pleural effusion."])]
    acts = np.zeros((20, 2))
    acts[:10, 0] = 2.0  # the cardiomegaly feature fires on the cardiomegaly rows
    acts[:18, 1] = 1.0  # the effusion feature fires almost everywhere: two of its eighteen reports state it
    score_features(features, acts, index, min_support=1)
    threshold, fbeta = choose_precision_threshold(features, acts, index, min_score=None)  # on precision alone
    assert features[1]["precision"] < threshold <= features[0]["precision"]
    assert fbeta[threshold] > fbeta[0.0]


def test_activation_floor_is_where_the_firing_rows_stop_being_precise():
    from saerad.interpret.score import activation_floor

    acts = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    states = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # strong firings are true, weak ones are not
    assert activation_floor(acts, states, target=1.0, min_rows=2) == 3.0
    assert activation_floor(acts, states, target=0.75, min_rows=2) == 2.0
    assert activation_floor(acts, states, target=0.0, min_rows=2) == 0.5
    assert activation_floor(acts, states, target=1.0, min_rows=4) is None  # never precise over 4 rows


def test_a_feature_below_its_own_floor_writes_nothing():
    from composition_saerad import compose_report

    features = {0: {"id": 0, "description": "Cardiomegaly.", "section": "heart/mediastinum", "findings": [],
                    "score": 0.9, "min_activation": 2.0}}
    assert compose_report([3.0], features)["findings"] == "Cardiomegaly."
    weak = compose_report([1.0], features)
    assert weak["findings"] == "" and weak["omitted"][0]["code"] == "weak"
def test_vectorised_scoring_equals_the_per_row_definition():
    """score_features (ranks over all rows at once, firing pairs or a dense array) gives exactly the scores of the
    per-row definition: `states` for each row, then `auroc`."""
    rng = random.Random(3)
    sentences = ["Moderate cardiomegaly.", "The heart size is normal.", "Small left pleural effusion.",
                 "Right pleural effusion.", "No pleural effusion.", "Planted sign alpha is seen.",
                 "Planted sign bravo is seen.", "Lungs are clear.", "No pneumothorax."]
    reports = [" ".join(rng.sample(sentences, rng.randint(0, 4))) for _ in range(400)]
    index = ReportIndex(reports)
    descriptions = sentences + ["Bilateral pleural effusions.", "Lungs are clear. No effusion.", ""]
    features = []
    for fid in range(60):
        text = descriptions[fid % len(descriptions)]
        features.append({"id": fid, "description": text, "findings": tag_description(text)[0] if text else []})
    acts = np.zeros((400, 60))
    for fid in range(60):
        acts[rng.sample(range(400), rng.choice([0, 3, 20, 150, 395])), fid] = rng.random() + 0.1
    expected = []
    for f in features:
        fires = acts[:, f["id"]] > 0
        if not f["description"] or min(fires.sum(), (~fires).sum()) < 5:
            expected.append(None)
            continue
        expected.append(auroc([index.states(i, f["findings"], f["description"]) for i in range(400)], fires))
    score_features(features, acts, index)
    assert [f["score"] for f in features] == expected
    rows, feats = np.nonzero(acts)
    score_features(features, (rows, feats), index)
    assert [f["score"] for f in features] == expected
    assert sum(s is not None for s in expected) > 20
