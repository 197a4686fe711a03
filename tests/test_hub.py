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
    from huggingface_hub import ModelCard

    from saerad.resources import REMOTE_CODE

    files = set(os.listdir(built))
    assert {"config.json", "model.safetensors", "README.md", "preprocessor_config.json",
            "feature_dictionary.json", *REMOTE_CODE} <= files
    card = (built / "README.md").read_text()
    data = ModelCard.load(built / "README.md").data  # huggingface_hub's own reader
    assert data.library_name == "transformers" and data.pipeline_tag == "image-to-text" and data.license
    assert "sae-rad" in data.tags and "f1" in data.metrics
    # a local backbone is no hub model id: no base_model (the Hub refuses one), and the card names only its folder
    assert data.base_model is None and f"`{os.path.basename(backbone_dir)}`, a local folder" in card
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
    assert "## Data and license" in card and "their terms apply" in card
    from huggingface_hub import ModelCard

    assert ModelCard.load(built / "README.md").data.license == "other"


def test_the_card_holds_every_metric_of_results_json_in_its_model_index(built, tmp_path):
    from huggingface_hub import ModelCard

    results = json.loads((tmp_path / "results.json").read_text())
    data = ModelCard.load(built / "README.md").data
    found = {r.metric_type: r.metric_value for r in data.eval_results}
    assert found == {k: v["value"] for k, v in results["systems"]["sae-rad"].items()}
    assert {(r.task_type, r.dataset_split) for r in data.eval_results} == {("image-to-text", "test")}
    assert data.model_name == "ORG/NAME"  # a placeholder until it is pushed (not the build's temporary folder)
    plan = push(str(built), "me/sae-rad", dry_run=True)  # the staged card is the same card, named for its repo
    staged = ModelCard.load(os.path.join(plan["staged"], "model", "README.md")).data
    assert {r.metric_type: r.metric_value for r in staged.eval_results} == found and staged.model_name == "me/sae-rad"


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
    from image_processing_saerad import default_image_processor

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
    from huggingface_hub import ModelCard

    assert ModelCard.load(built / "README.md").data.base_model == "facebook/dinov2-small"
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


def test_a_model_folder_is_rebuilt_from_its_build_record(built, tmp_path):
    record = json.loads((built / "saerad_build.json").read_text())
    assert record["build_args"]["sae"] == "../sae" and record["build_args"]["backbone"] == "../backbone"
    assert main(["build", "--from-record", str(built / "saerad_build.json"), "--out", str(tmp_path / "again")]) == 0
    for name in sorted(os.listdir(built)):
        if (built / name).is_file():
            assert (tmp_path / "again" / name).read_bytes() == (built / name).read_bytes(), name
    assert main(["build", "--from-record", str(built / "saerad_build.json"), "--sae", str(tmp_path / "sae"),
                 "--out", str(tmp_path / "x")]) == 2  # the record says everything: one source of truth


def test_the_bundled_backbones_have_names_that_build_and_embed_load(tmp_path):
    from saerad.embed import backbone_fingerprint, load_backbone
    from saerad.hub import backbone_record_name
    from saerad.resources import bundled_backbones, resolve_backbone

    assert {"saerad:phantom-resnet", "saerad:phantom-dino"} <= set(bundled_backbones())
    model, processor = load_backbone("saerad:phantom-resnet")
    assert type(model).__name__ == "ResNetModel" and processor.crop_size["height"] == 128
    folder = resolve_backbone("saerad:phantom-resnet")
    assert backbone_record_name(folder) == backbone_record_name("saerad:phantom-resnet") == "saerad:phantom-resnet"
    assert backbone_fingerprint("saerad:phantom-resnet")["backbone_sha256"] == backbone_fingerprint(folder)[
        "backbone_sha256"] is not None
    assert main(["embed", "--backbone", "saerad:no-such", "--dataset", "x", "--out", str(tmp_path / "e")]) == 2


def test_exemplar_captions_quote_the_first_findings_sentence_of_each_top_exemplar(tmp_path):
    from datasets import Dataset, DatasetDict

    from saerad.hub import write_captions

    data = DatasetDict({"train": Dataset.from_dict({
        "id": ["a", "b", "c"], "findings": ["and a cut fragment. Made-up first sentence. Made-up second one.", "",
                                            None],
        "impression": ["x.", "Made-up impression only.", None]})})
    data.save_to_disk(tmp_path / "data")
    dictionary = {"features": [{"id": 0, "description": "d.", "exemplars": ["a", "b", "c"]},
                               {"id": 1, "description": "", "exemplars": ["z"]}]}
    assert write_captions(str(tmp_path / "data"), dictionary, tmp_path / "exemplars") == 2
    captions = json.loads((tmp_path / "exemplars" / "captions.json").read_text())
    assert captions == {"a": "Made-up first sentence.", "b": "Made-up impression only."}  # none without text
    assert write_captions(str(tmp_path / "gone"), dictionary, tmp_path / "other") == 0


class _RecordingApi:
    """HfApi's calls recorded, nothing sent."""
    calls: list = []

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: _RecordingApi.calls.append((name, args, kwargs))


def test_push_refuses_a_symlink_anywhere_in_the_folder_before_any_upload(built, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    _RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingApi)
    secret = tmp_path / "token"
    secret.write_text("hf_secret")
    for where in ("notes.txt", "exemplars/x.png", "sub/dir"):
        link = built / where
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(secret if where != "sub/dir" else tmp_path)
        for dry in ([], ["--dry-run"]):
            assert main(["push", str(built), "--repo-id", "me/x", *dry, "--include", where]) == 2
            err = capsys.readouterr().err
            assert "symbolic link" in err and str(link) in err and err.count("\n") == 1
        with pytest.raises(ValueError, match="symbolic link"):
            push(str(built), "me/x", token="hf_fake")
        link.unlink()
    assert _RecordingApi.calls == []


def test_push_refuses_unknown_files_unless_named_and_uploads_exactly_what_the_dry_run_prints(built, monkeypatch,
                                                                                             capsys):
    import huggingface_hub

    _RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingApi)
    (built / "evil.py").write_text("import os\n")
    (built / "exemplars").mkdir(exist_ok=True)
    (built / "exemplars" / "notes.txt").write_text("x")
    assert main(["push", str(built), "--repo-id", "me/x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "evil.py" in err and "exemplars/notes.txt" in err and "--include" in err and err.count("\n") == 1
    assert main(["push", str(built), "--repo-id", "me/x", "--dry-run", "--include", "evil.py"]) == 2
    (built / "exemplars" / "notes.txt").unlink()
    argv = ["push", str(built), "--repo-id", "me/x", "--space-id", "me/s", "--include", "evil.py"]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = {"model": [], "space": []}
    for line in out.splitlines():
        if line.startswith("would upload to"):
            part = "space" if " space " in line else "model"
        elif line.startswith("  "):
            listed[part].append(line.split()[0])
    assert "evil.py" in listed["model"] and "config.json" in listed["model"] and "app.py" in listed["space"]
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    assert main(argv) == 0
    sent = {kw.get("repo_type", "model"): sorted(op.path_in_repo for op in args[1])
            for name, args, kw in _RecordingApi.calls if name == "create_commit"}
    assert sent == {"model": sorted(listed["model"]), "space": sorted(listed["space"])}
