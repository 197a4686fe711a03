import pytest

from saerad.data.reports import normalize_deid, normalize_sentence, parse_sections, split_sentences

MIMIC = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new cough, eval for pneumonia.

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:

 Made-up text: there is a small right pleural effusion.  The heart size is
 top normal.

 IMPRESSION:

 Small right effusion.
"""


def test_mimic_style_sections():
    s = parse_sections(MIMIC)
    assert s["findings"] == "Made-up text: there is a small right pleural effusion. The heart size is top normal."
    assert s["impression"] == "Small right effusion."
    assert s["indication"] == "___F with new cough, eval for pneumonia."
    assert s["comparison"] == "___"
    assert s["technique"] == "Chest PA and lateral"
    assert s["preamble"] is None


def test_iu_style_inline_headers_and_preamble():
    s = parse_sections("Chest two views. COMPARISON: None. INDICATION: Cough. FINDINGS: Lungs are clear. "
                       "IMPRESSION: Normal chest.")
    assert s == {"findings": "Lungs are clear.", "impression": "Normal chest.", "indication": "Cough.",
                 "comparison": "None.", "preamble": "Chest two views."}


def test_last_occurrence_wins_and_spellings_are_normalised():
    s = parse_sections("Findings: first draft.\nImpressions: early.\nFINDINGS: final findings.\nCONCLUSION: final.")
    assert s["findings"] == "final findings." and s["impression"] == "final."


def test_missing_headers_give_none_and_history_fills_indication():
    s = parse_sections("HISTORY: Fever.\nIMPRESSION: No acute process.")
    assert s["findings"] is None and s["comparison"] is None
    assert s["indication"] == "Fever." and s["impression"] == "No acute process."
    plain = parse_sections("Just some text with no headers at all.")
    assert plain["findings"] is None and plain["preamble"] == "Just some text with no headers at all."


def test_lowercase_words_with_colons_inside_a_line_are_not_headers():
    s = parse_sections("FINDINGS: Heart: normal. The impression: unchanged. IMPRESSION: Stable.")
    assert s["findings"] == "Heart: normal. The impression: unchanged." and s["impression"] == "Stable."


def test_sentences_keep_numbers_titles_decimals_and_measurements():
    text = ("1. Right upper lobe nodule measuring 1.5 x 1.2 cm. 2. No pneumothorax. Dr. Smith was told at 3 p.m. "
            "The heart is normal (approx. 12 cm). Effusion is 2.5 cm. Lungs clear")
    assert split_sentences(text) == [
        "1. Right upper lobe nodule measuring 1.5 x 1.2 cm.", "2. No pneumothorax.", "Dr. Smith was told at 3 p.m.",
        "The heart is normal (approx. 12 cm).", "Effusion is 2.5 cm.", "Lungs clear"]


def test_deid_tokens_never_leak():
    assert normalize_deid("Normal chest x-XXXX.") == "Normal chest x-ray."
    assert split_sentences("Compared to ___ there is XXXX opacity. Seen by Dr. ___ .") == [
        "Compared to there is opacity.", "Seen by Dr."]
    for sentence in split_sentences("XXXX XXXX are normal. ___ effusion ___."):
        assert "XXXX" not in sentence and "___" not in sentence


def test_paragraph_breaks_end_sentences():
    assert split_sentences("No effusion\n\nHeart normal") == ["No effusion", "Heart normal"]


def test_normalize_sentence_drops_numbering_case_and_punctuation():
    assert normalize_sentence("2. No  Pneumothorax.") == normalize_sentence("no pneumothorax") == "no pneumothorax"
    assert normalize_sentence("Nodule 1.5 cm.") == "nodule 1.5 cm"


@pytest.mark.parametrize("sentence", ["Dr. Smith was notified.", "Approx. 3 cm nodule in the right lung.",
                                      "1. Small left effusion.", "Nodule measures 1.5 cm."])
def test_the_composer_and_the_scorer_split_a_sentence_alike(sentence):
    from composition_saerad import compose_report
    from saerad.interpret.score import ReportIndex

    assert split_sentences(sentence) == [sentence]
    features = {0: {"id": 0, "description": f"{sentence} No pneumothorax.", "section": "lungs", "findings": [],
                    "score": 0.9}}
    written = [s["text"] for s in compose_report([1.0], features)["sentences"] if s["report_section"] == "findings"]
    assert written == [sentence, "No pneumothorax."]
    assert "1 5" not in normalize_sentence(sentence)  # a decimal stays a decimal
    assert ReportIndex([f"Heart normal. {sentence}"]).sentences[0] == {"heart normal", normalize_sentence(sentence)}
