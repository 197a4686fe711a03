import json
import os
import subprocess
import sys

import numpy as np
import pytest

from saerad.cli import main
from saerad.hub import _stage_space, build, push, push_plan

from fixtures import run_pipeline
from minimal_env import generate_without_saerad


@pytest.fixture
def built(backbone_dir, tmp_path):
    """A model folder built from a tiny backbone, a trained SAE and an interpreted dictionary."""
    spec = run_pipeline(tmp_path, backbone_dir)
    results = {"dataset": spec, "split": "test", "n": 4, "labeler": "rule-based", "systems": {
        "sae-rad": {"micro_f1_14": {"value": 0.5, "ci": [0.4, 0.6]}, "bleu_4": {"value": 0.1, "ci": [0, 0.2]}},
        "normal": {"micro_f1_14": {"value": 0.3, "ci": [0.2, 0.4]}, "bleu_4": {"value": 0.05, "ci": [0, 0.1]}}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["build", "--backbone", str(backbone_dir), "--sae", str(tmp_path / "sae"), "--dictionary",
                 str(tmp_path / "interp" / "feature_dictionary.json"), "--results", str(tmp_path / "results.json"),
                 "--out", str(tmp_path / "model")]) == 0
    return tmp_path / "model"


def test_built_folder_has_the_hub_layout_and_card(built, backbone_dir):
    files = set(os.listdir(built))
    assert {"config.json", "configuration_saerad.py", "modeling_saerad.py", "model.safetensors", "README.md",
            "preprocessor_config.json", "feature_dictionary.json"} <= files
    card = (built / "README.md").read_text()
    head = card.split("---")[1]
    for key in ("license:", "library_name: \"transformers\"", "pipeline_tag: \"image-to-text\"",
                "model-index:", "micro_f1_14", "metrics:"):
        assert key in head, key
    # a local backbone is no hub model id: no base_model (the Hub refuses one), and the card names only its folder
    assert "base_model" not in head and f"`{os.path.basename(backbone_dir)}`, a local folder" in card
    assert "Not for clinical use" in card and "mean L0" in card and "median AUROC" in card
    interp = json.loads((built.parent / "interp" / "interpret_metrics.json").read_text())
    assert (f"{interp['n_live']} live\n  features, of which {interp['n_low_support']} fired (or stayed silent) on "
            f"fewer than 5 held-out rows") in card
    assert "| sae-rad | 0.500 |" in card
    evaluation = card.split("## Evaluation")[1].split("\n## ")[0]  # the results name the modules that made them
    assert all(f"`{name}`" in evaluation for name in ("bleu", "rouge", "meteor", "cider", "chexpert_f1"))


def test_the_card_and_build_record_hold_no_machine_paths_and_name_the_data_terms(built, tmp_path):
    for name in ("README.md", "saerad_build.json", "config.json"):
        text = (built / name).read_text()
        assert str(tmp_path) not in text and "/tmp/" not in text and "/root/" not in text, name
    card = (built / "README.md").read_text()
    assert "pypi.org" not in card and "https://arxiv.org/abs/2410.03334" in card
    assert 'license: "other"' in card and "## Data and license" in card and "their terms apply" in card


def test_dataset_names_are_specs_not_paths(tmp_path):
    from saerad.hub import dataset_name

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "saerad_dataset.json").write_text(json.dumps({"spec": "iu-phantom"}))
    assert dataset_name(str(folder)) == "iu-phantom"
    assert dataset_name("imagefolder:/home/me/secret/cxr") == "imagefolder:cxr"
    assert dataset_name("/home/me/data") == "data" and dataset_name("mimic-cxr") == "mimic-cxr"
    assert dataset_name(None) is None


def test_built_folder_round_trips_in_an_environment_without_saerad(built, tmp_path):
    from PIL import Image
    from transformers import AutoImageProcessor

    from modeling_saerad import SAERadModel

    model = SAERadModel.from_pretrained(built).eval()
    processor = AutoImageProcessor.from_pretrained(built, trust_remote_code=True)
    image = Image.fromarray((np.random.default_rng(1).random((64, 64)) * 255).astype(np.uint8))
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    remote = generate_without_saerad(built, pixels, tmp_path)
    out = model.generate(pixels, return_dict_in_generate=True)
    assert remote["activations"] == out.feature_activations.tolist() and remote["reports"] == out.reports


def test_build_refuses_a_backbone_that_does_not_match_the_sae(built, tmp_path, backbone_dir):
    from transformers import Dinov2Config, Dinov2Model

    other = tmp_path / "wide"
    Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=8, image_size=32)).save_pretrained(other)
    from modeling_saerad import default_image_processor

    default_image_processor(Dinov2Config(image_size=32)).save_pretrained(other)
    sae = built.parent / "sae"
    with pytest.raises(ValueError, match="d_in"):
        build(str(other), str(sae), str(built.parent / "interp" / "feature_dictionary.json"), str(tmp_path / "x"))


def test_push_dry_run_lists_the_files_and_sends_nothing(built, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", str(built), "--repo-id", "me/sae-rad", "--space-id", "me/sae-rad-demo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "modeling_saerad.py", "feature_dictionary.json", "README.md",
                 "app.py", "requirements.txt"):
        assert f"  {name}" in out
    assert "would upload to model me/sae-rad (private=False)" in out
    assert "space me/sae-rad-demo" in out and "models=['me/sae-rad']" in out
    staged_root = out.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    assert 'from_pretrained("me/sae-rad"' in open(os.path.join(staged_root, "model", "README.md")).read()
    assert '"me/sae-rad"' in open(os.path.join(staged_root, "space", "app.py")).read()
    staged = _stage_space(push_plan(str(built), "me/sae-rad", "me/sae-rad-demo")["space"])
    assert "models:\n  - me/sae-rad" in open(os.path.join(staged, "README.md")).read()
    assert '"me/sae-rad"' in open(os.path.join(staged, "app.py")).read()


def test_push_without_a_token_fails_in_one_sentence(built, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    run = subprocess.run([sys.executable, "-m", "saerad", "push", str(built), "--repo-id", "me/x"],
                         capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "no Hugging Face token" in run.stderr


def test_push_to_an_unreachable_hub_fails_cleanly(built, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="cannot reach the Hugging Face Hub"):
        push(str(built), "me/x", token="hf_fake")


def test_a_hub_backbone_becomes_the_cards_base_model(built, tmp_path, monkeypatch):
    from saerad.hub import hub_model_id, render_card

    assert hub_model_id("microsoft/rad-dino") == "microsoft/rad-dino"
    assert hub_model_id(str(built)) is None and hub_model_id("rad-dino") is None
    (tmp_path / "microsoft").mkdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "microsoft" / "rad-dino").mkdir()
    assert hub_model_id("microsoft/rad-dino") is None  # a relative folder of that name is local
    info = json.loads((built / "saerad_build.json").read_text())
    info.pop("base_model")
    info["backbone"] = "facebook/dinov2-small"  # a folder built before base_model was recorded
    (built / "saerad_build.json").write_text(json.dumps(info))
    render_card(str(built))
    card = (built / "README.md").read_text()
    assert 'base_model: "facebook/dinov2-small"' in card.split("---")[1]
    assert "backbone (`facebook/dinov2-small`)" in card


def test_the_card_says_what_a_saerad_pretrained_backbone_learnt_from(built, tmp_path):
    from saerad.hub import backbone_pretraining, render_card

    summary = {"objective": "image embedding -> labels", "dataset": "iu-phantom", "config": {"objective": "labels"}}
    (tmp_path / "bb").mkdir()
    (tmp_path / "bb" / "pretrain.json").write_text(json.dumps(summary))
    info = json.loads((built / "saerad_build.json").read_text())
    assert info["backbone_pretraining"] is None  # the tiny test backbone was not made by saerad pretrain
    info["backbone_pretraining"] = backbone_pretraining(str(tmp_path / "bb"))
    (built / "saerad_build.json").write_text(json.dumps(info))
    card = render_card(str(built))
    assert "(image, report) pairs: image embedding -> labels" in card
    assert "the SAE, the describer and the composer remain unsupervised" in card
    assert "spent their embedding on the phantom patient" in card
