import math
import random

import numpy as np
import pytest

from saerad.evaluation import bleu, chexpert_f1, cider, load_metric, meteor, rouge
from saerad.evaluation.metrics import METRICS, ChexpertF1, tokenize
from saerad.evaluation.stats import bootstrap_ci, paired_randomization
from saerad.evaluation.wordnet import wordnet_available

CORPUS = [
    "The heart size is normal. No pleural effusion.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Mild cardiomegaly. Lungs are clear.",
    "Right upper lobe consolidation concerning for pneumonia.",
    "No pneumothorax. Sternotomy wires are intact.",
]


def test_identical_texts_score_perfectly():
    assert bleu(CORPUS, CORPUS) == {f"bleu_{n}": 1.0 for n in range(1, 5)}
    assert rouge(CORPUS, CORPUS)["rouge_l"] == pytest.approx(1.0)
    assert cider(CORPUS, CORPUS)["cider"] == pytest.approx(10.0)
    scores = chexpert_f1(CORPUS, CORPUS)
    assert scores["micro_f1_14"] == 1.0 and scores["micro_f1_5"] == 1.0 and scores["f1_pleural_effusion"] == 1.0


def test_disjoint_texts_score_zero():
    preds = ["alpha beta gamma delta"] * 3
    refs = ["one two three four", "five six seven eight", "nine ten eleven twelve"]
    assert bleu(preds, refs)["bleu_1"] == 0.0 and rouge(preds, refs)["rouge_l"] == 0.0
    assert cider(preds, refs)["cider"] == 0.0


def test_hand_computed_small_case():
    b = bleu(["a b c d"], ["a b c e"])
    assert b["bleu_1"] == pytest.approx(0.75)
    assert b["bleu_2"] == pytest.approx(math.sqrt(0.75 * 2 / 3))
    assert b["bleu_3"] == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3))
    assert b["bleu_4"] == 0.0
    assert rouge(["a b c d"], ["a b c e"])["rouge_l"] == pytest.approx(0.75)
    # brevity penalty: 2 hypothesis tokens against 4 reference tokens
    assert bleu(["a b"], ["a b c d"])["bleu_1"] == pytest.approx(math.exp(1 - 4 / 2))
    # CheXpert: prediction finds the effusion but also a pneumothorax the reference lacks
    f1 = chexpert_f1(["Left pleural effusion. Small pneumothorax."], ["Left pleural effusion."])
    assert f1["f1_pleural_effusion"] == 1.0 and f1["f1_pneumothorax"] == 0.0
    assert f1["micro_f1_14"] == pytest.approx(2 / 3)  # tp 1, fp 1, fn 0
    assert f1["micro_f1_5"] == 1.0 and f1["macro_f1_5"] == pytest.approx(1 / 5)


def test_uncertain_counts_as_positive_unless_asked():
    preds, refs = ["Possible left effusion."], ["Left pleural effusion."]
    assert chexpert_f1(preds, refs)["f1_pleural_effusion"] == 1.0
    assert chexpert_f1(preds, refs, uncertain_as_positive=False)["f1_pleural_effusion"] == 0.0


def test_bleu_matches_sacrebleu_on_the_same_tokens():
    sacrebleu = pytest.importorskip("sacrebleu")
    rng = random.Random(0)
    words = "the heart lungs are clear normal no effusion small left right opacity mild".split()
    preds = [" ".join(rng.choices(words, k=rng.randint(4, 12))) for _ in range(40)]
    refs = [" ".join(rng.choices(words, k=rng.randint(4, 12))) for _ in range(40)]
    ours = bleu(preds, refs)
    for n in range(1, 5):
        theirs = sacrebleu.BLEU(tokenize="none", smooth_method="none", max_ngram_order=n, force=True).corpus_score(
            [" ".join(tokenize(p)) for p in preds], [[" ".join(tokenize(r)) for r in refs]])
        assert ours[f"bleu_{n}"] * 100 == pytest.approx(theirs.score, abs=1e-9)


def test_meteor_with_wordnet_or_a_clear_refusal():
    if not wordnet_available():
        with pytest.raises(LookupError, match="WordNet"):
            meteor(CORPUS, CORPUS)
        assert load_metric("meteor").compute(predictions=CORPUS, references=CORPUS) == {}
        pytest.skip("WordNet is not installed here; METEOR refuses as intended")
    assert meteor(CORPUS, CORPUS)["meteor"] > 0.99
    assert meteor(["the patient is ill"], ["the patient is sick"])["meteor"] > meteor(
        ["the patient is blue"], ["the patient is sick"])["meteor"]  # WordNet synonyms count


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        bleu(["a"], ["a", "b"])


def test_tokenize_drops_punctuation_case_and_deid():
    assert tokenize("No XXXX effusion, Dr. ___ said.") == ["no", "effusion", "dr", "said"]


def test_bootstrap_interval_contains_the_value_and_is_seeded():
    preds = CORPUS * 4
    refs = list(reversed(CORPUS)) * 4
    stats = METRICS["bleu"].stats(preds, refs)
    value = METRICS["bleu"].aggregate(stats)["bleu_1"]
    ci = bootstrap_ci(METRICS["bleu"], stats, n_resamples=200, seed=1)
    assert ci["bleu_1"][0] <= value <= ci["bleu_1"][1] and ci["bleu_1"][0] < ci["bleu_1"][1]
    assert ci == bootstrap_ci(METRICS["bleu"], stats, n_resamples=200, seed=1)


def test_paired_randomization_separates_systems():
    refs = ["Left pleural effusion.", "Mild cardiomegaly.", "Right pneumothorax.", "No acute process."] * 10
    good = ChexpertF1.stats(refs, refs)
    bad = ChexpertF1.stats(["No acute process."] * len(refs), refs)
    same = paired_randomization(ChexpertF1, good, good, "micro_f1_14", n_resamples=200)
    differ = paired_randomization(ChexpertF1, good, bad, "micro_f1_14", n_resamples=200)
    assert same["p_value"] == 1.0 and same["difference"] == 0.0
    assert differ["p_value"] < 0.01 and differ["difference"] > 0.5


@pytest.mark.parametrize("name", ["bleu", "rouge", "meteor", "cider", "chexpert_f1"])
def test_evaluate_modules_load_offline(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module = load_metric(name)
    result = module.compute(predictions=CORPUS, references=CORPUS)
    if name != "meteor" or wordnet_available():
        assert result and all(np.isfinite(v) for v in result.values())


def test_evaluate_combine_merges_the_modules():
    import evaluate

    combined = evaluate.combine([load_metric(n) for n in ("bleu", "rouge", "cider", "chexpert_f1")])
    result = combined.compute(predictions=CORPUS, references=CORPUS)
    assert {"bleu_4", "rouge_l", "cider", "micro_f1_14"} <= set(result)


def test_unknown_metric_and_missing_neural_packages_are_clear():
    from saerad.evaluation.neural import chexbert_f1, radgraph_f1

    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("bertscore")
    for fn, package in ((chexbert_f1, "f1chexbert"), (radgraph_f1, "radgraph")):
        with pytest.raises(LookupError, match=package):
            fn(["a"], ["a"])
