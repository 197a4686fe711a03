import json

import pytest

from saerad.cli import main
from saerad.errors import UserError
from saerad.evaluation.runner import run_evaluation

from fixtures import image_file

REPORTS = ["Small left pleural effusion.", "Mild cardiomegaly. No effusion.", "The lungs are clear.",
           "Right upper lobe consolidation.", "No pneumothorax. Sternotomy wires."]


@pytest.fixture
def tiny_dataset(tmp_path):
    root = tmp_path / "data"
    lines = []
    for k in range(16):
        split = "test" if k % 4 == 0 else "train"
        image_file(root / f"{k}.png", k)
        lines.append(json.dumps({"file_name": f"{k}.png", "findings": REPORTS[k % 5], "split": split, "id": f"r{k}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return f"imagefolder:{root}"


def test_runner_scores_model_and_all_baselines(tiny_dataset, model_dir, tmp_path):
    out = tmp_path / "eval"
    results = run_evaluation(tiny_dataset, model=str(model_dir), out=str(out), n_resamples=50)
    assert results["n"] == 4 and results["split"] == "test"
    assert list(results["systems"]) == ["sae-rad", "normal", "retrieval", "oracle"]
    for system in results["systems"].values():
        for key in ("micro_f1_14", "macro_f1_5", "bleu_4", "rouge_l", "cider"):
            value, (lo, hi) = system[key]["value"], system[key]["ci"]
            assert lo <= value + 1e-9 and value <= hi + 1e-9
    # the retrieval baseline returns training findings; the oracle restates each reference's labels
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(p["retrieval"] in REPORTS for p in predictions)
    assert results["systems"]["oracle"]["micro_f1_14"]["value"] == 1.0
    saved = json.loads((out / "results.json").read_text())
    assert saved["systems"]["normal"]["bleu_1"]["value"] == results["systems"]["normal"]["bleu_1"]["value"]
    assert {"dataset", "split", "n", "systems", "dataset_fingerprint", "labeler"} <= set(saved)
    table = (out / "results.md").read_text()
    assert table.split("\n\n")[0].count("\n") == 5 and "| sae-rad |" in table and "micro_f1_14" in table
    # the model folder predates familiarity calibration: counted as unchecked, not as familiar
    assert saved["familiarity"] == {"sae-rad": {"available": False, "n": 4, "n_flagged": None, "rate": None}}
    assert "sae-rad: no familiarity calibration" in table


def test_runner_scores_a_predictions_file_and_limit(tiny_dataset, tmp_path, capsys):
    preds = tmp_path / "mine.jsonl"
    preds.write_text("".join(json.dumps({"id": f"r{k}", "report": REPORTS[k % 5]}) + "\n" for k in range(0, 16, 4)))
    code = main(["evaluate", "--dataset", tiny_dataset, "--predictions", str(preds), "--baselines", "normal",
                 "--limit", "3", "--n-resamples", "20", "--out", str(tmp_path / "o")])
    assert code == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["n"] == 3 and results["systems"]["mine"]["bleu_4"]["value"] == 1.0
    assert "| mine |" in capsys.readouterr().out


def test_predictions_alone_get_the_baselines_that_need_no_model(tiny_dataset, tmp_path, capsys):
    preds = tmp_path / "mine.jsonl"
    preds.write_text("".join(json.dumps({"id": f"r{k}", "report": "Normal."}) + "\n" for k in range(0, 16, 4)))
    assert main(["evaluate", "--dataset", tiny_dataset, "--predictions", str(preds), "--n-resamples", "20",
                 "--out", str(tmp_path / "o")]) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list(results["systems"]) == ["mine", "normal", "oracle"]


def test_retrieval_never_answers_a_query_with_its_own_study():
    import torch

    from saerad.evaluation.baselines import retrieval_reports

    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    texts = ["a", "b", "c"]
    assert retrieval_reports(bank, bank, texts) == ["a", "b", "c"]  # unkeyed: each row finds itself
    assert retrieval_reports(bank, bank, texts, ["s1", "s2", "s3"], ["s1", "s2", "s3"]) == ["b", "a", "b"]
    # two views of one study: neither may answer the other
    assert retrieval_reports(bank, bank, texts, ["s1", "s1", "s3"], ["s1", "s1", "s3"]) == ["c", "c", "b"]
    # in chunks of one query the answers are the same
    assert retrieval_reports(bank, bank, texts, ["s1", "s1", "s3"], ["s1", "s1", "s3"], chunk=1) == ["c", "c", "b"]
    with pytest.raises(ValueError, match="outside its own study"):
        retrieval_reports(bank[:1], bank[:2], texts[:2], ["s1"], ["s1", "s1"])


def test_retrieval_on_a_split_scored_against_itself_is_not_a_lookup(tiny_dataset, model_dir):
    results = run_evaluation(tiny_dataset, split="train", model=str(model_dir), baselines=["retrieval"],
                             n_resamples=20)
    assert results["systems"]["retrieval"]["bleu_4"]["value"] < 1.0


def test_runner_errors_are_clear(tiny_dataset, capsys):
    assert main(["evaluate", "--dataset", tiny_dataset, "--baselines", "normal"]) == 2
    assert "--model or --predictions" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", tiny_dataset, "--predictions", "x.jsonl", "--baselines", "fancy"]) == 2
    assert "unknown baselines" in capsys.readouterr().err


def test_oracle_restates_chexpert_labels_of_references_with_other_observations():
    from saerad.evaluation.baselines import oracle_report
    from saerad.labeler import label_report

    reference = "Lungs are hyperexpanded. Degenerative changes of the spine. Small left pleural effusion."
    oracle = oracle_report(reference)
    assert label_report(oracle) == label_report(reference) == {"Pleural Effusion": "positive"}


def test_demo_examples_prefer_distinct_written_reports_then_fill_with_empty_ones():
    from saerad.demo import pick_examples

    reports = ["", "Low lung volumes.", "", "Low lung volumes.", "Cardiomegaly.", "", "Effusion."]
    assert pick_examples(reports) == [1, 4, 6]
    assert pick_examples(reports, n=2) == [1, 4]
    assert pick_examples(["", "A.", "A.", ""]) == [1, 0, 3]  # one distinct report, then the first empty ones
    assert pick_examples(["", ""], n=3) == [0, 1]
    assert pick_examples([]) == []


def test_demo_feature_line_names_score_and_exemplars():
    from saerad.demo import feature_line

    feature = {"id": 7, "score": 0.8123, "exemplars": ["12", "5", "40", "9"]}
    assert feature_line(feature, 0.456) == ("feature #7: activation 0.46, detection AUROC 0.81, "
                                            "top training exemplars 12, 5, 40")
    unscored = feature_line({"id": 3, "score": None, "exemplars": []}, 1.0)
    assert unscored.endswith("AUROC n/a, top training exemplars none")


def test_demo_summary_counts_empty_reports_and_the_most_frequent_ones(tmp_path):
    from saerad.demo import report_summary, system_reports

    rows = [{"id": str(i), "reference": "x", "sae-rad": text}
            for i, text in enumerate(["", "Low lung volumes.", "", "Low lung volumes.", "Cardiomegaly.", ""])]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert report_summary(path) == ('sae-rad wrote nothing for 3 of 6 test images; its most frequent reports: '
                                    '"Low lung volumes." (2); "Cardiomegaly." (1).')
    assert system_reports(path)["4"] == "Cardiomegaly."  # the demo picks its examples from these, by test id
    assert system_reports(path, "reference") == {str(i): "x" for i in range(6)}
    path.write_text(json.dumps({"id": "0", "sae-rad": ""}) + "\n")
    assert report_summary(path).endswith("its most frequent reports: none.")


def test_evaluating_from_the_splits_embedding_cache_writes_the_reports_the_images_give(tiny_dataset, model, model_dir,
                                                                                        tmp_path):
    from modeling_saerad import default_image_processor
    from saerad.embed import embed

    model.vision_model.save_pretrained(tmp_path / "backbone")  # the model's own backbone, as `saerad embed` reads one
    default_image_processor(model.config.vision_config).save_pretrained(tmp_path / "backbone")
    cache = embed(str(tmp_path / "backbone"), tiny_dataset, "test", str(tmp_path / "cache"), num_workers=0)
    runs = {}
    for name, embeddings in (("images", None), ("cache", str(cache))):
        run_evaluation(tiny_dataset, model=str(model_dir), baselines=["normal"], out=str(tmp_path / name),
                       n_resamples=20, embeddings=embeddings)
        runs[name] = [json.loads(line)["sae-rad"] for line in (tmp_path / name / "predictions.jsonl").open()]
    assert runs["cache"] == runs["images"] and any(runs["images"])
    # the familiarity check reads images: a run from the cache claims no count, rather than "no calibration"
    assert json.loads((tmp_path / "cache" / "results.json").read_text())["familiarity"] == {}
    assert "sae-rad" in json.loads((tmp_path / "images" / "results.json").read_text())["familiarity"]
    with pytest.raises(UserError, match="drop retrieval"):
        run_evaluation(tiny_dataset, model=str(model_dir), embeddings=str(cache))
