"""The familiarity check: calibrated on train and validation images only, carried by generate, the CLI and the
model folder; a real radiograph is unlike phantoms."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from composition_saerad import why_empty
from image_processing_saerad import default_image_processor, load_image
from modeling_saerad import SAERadModel
from saerad.cli import main

from conftest import tiny_model
from minimal_env import generate_without_saerad


class _Split(list):
    """A split as the calibration reads it: rows with an `image` column."""

    def select(self, indices):
        return _Split(self[i] for i in indices)

    def __getitem__(self, key):
        if key == "image":
            return [row["image"] for row in self]
        return list.__getitem__(self, key)


class _NoTestSplit(dict):
    """A dataset whose test split raises when read."""

    def __getitem__(self, key):
        if key == "test":
            raise AssertionError("the calibration read the test split")
        return dict.__getitem__(self, key)


def phantoms(n, start=0, size=64):
    from saerad.data.phantom import render

    cases = [[], [{"label": "cardiomegaly"}], [{"label": "pleural_effusion", "laterality": "left"}]]
    return [render(cases[i % 3], seed=start + i, size=size) for i in range(n)]


def calibrate_on_phantoms(model, n_fit=60, n_validation=30):
    """Calibrate `model`'s familiarity on phantoms (the remote code's functions, no dataset)."""
    import familiarity_saerad

    processor = default_image_processor(model.config.vision_config)
    layer = familiarity_saerad.default_layer(model.config.vision_config)
    stats = familiarity_saerad.early_statistics(model.vision_model, pixels(processor, phantoms(n_fit + n_validation)),
                                                layer, model.config.vision_config)
    model.familiarity = familiarity_saerad.calibrate(stats[:n_fit], stats[n_fit:], layer, 0.05)
    return model


@pytest.fixture
def phantom_spec(monkeypatch):
    """`phantoms` resolves to train (60) and validation (30) phantom splits and a test split that must not be read."""
    from saerad.data import adapters

    data = _NoTestSplit(train=_Split({"image": im} for im in phantoms(60)),
                        validation=_Split({"image": im} for im in phantoms(30, start=1000)),
                        test=_Split())
    real = adapters.load_spec
    monkeypatch.setattr(adapters, "load_spec", lambda spec, **kw: data if spec == "phantoms" else real(spec, **kw))
    return "phantoms"


@pytest.fixture
def calibrated(phantom_spec):
    from saerad.familiarity import calibrate

    model = tiny_model()
    processor = default_image_processor(model.config.vision_config)
    model.familiarity = calibrate(model, processor, phantom_spec, rows=50, false_flag_rate=0.05)
    return model, processor


def pixels(processor, images):
    return processor(images=images, return_tensors="pt")["pixel_values"]


def noise(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64), dtype=np.uint8))


def test_calibration_reads_train_and_validation_never_test(calibrated):
    model, _ = calibrated
    cal = model.familiarity
    assert cal["n_fit"] == 50 and cal["n_validation"] == 30 and cal["layer"] == 1
    assert cal["fit_source"].endswith(":train") and cal["validation_source"].endswith(":validation")
    assert cal["validation_flag_rate"] <= 0.05 + 1 / 30
    assert cal["mean"].shape == (64,) and cal["precision"].shape == (64, 64)  # mean and std of 32 channels


def test_noise_is_flagged_and_fresh_phantoms_are_not(calibrated):
    model, processor = calibrated
    out = model.generate(pixels(processor, [noise(s) for s in range(4)]), return_dict_in_generate=True)
    assert all(f["unfamiliar"] and f["warning"] and f["score"] > f["threshold"] for f in out.familiarity)
    assert all(out.reports)  # warn (the default) still writes the report
    fresh = model.generate(pixels(processor, phantoms(12, start=5000)), return_dict_in_generate=True)
    assert sum(f["unfamiliar"] for f in fresh.familiarity) <= 2
    assert set(fresh.familiarity[0]["signals"]) == {"early_statistics_mahalanobis", "reconstruction_error", "l0"}


def test_the_pipeline_carries_the_warning_and_withholds_on_request(calibrated, tmp_path):
    from transformers import pipeline

    model, processor = calibrated
    model.image_processor = processor
    model.save_pretrained(tmp_path / "model")
    reporter = pipeline("radiology-report", model=str(tmp_path / "model"), trust_remote_code=True)
    warned = reporter(noise(1))
    assert warned["familiarity"]["unfamiliar"] and "unlike the images" in warned["familiarity"]["warning"]
    assert warned["report"]  # warn (the default) still writes the report
    assert reporter(noise(1), on_unfamiliar="withhold")["report"] == ""
    assert not reporter(phantoms(1, start=7000)[0])["familiarity"]["unfamiliar"]


def test_on_unfamiliar_warn_withhold_ignore(calibrated, caplog):
    model, processor = calibrated
    batch = pixels(processor, [noise(0)] + phantoms(1, start=7000))
    warn = model.generate(batch, return_dict_in_generate=True)
    assert warn.familiarity[0]["unfamiliar"] and not warn.familiarity[1]["unfamiliar"]
    assert warn.reports[0] and "unlike the images this model learnt from" in warn.familiarity[0]["warning"]
    withheld = model.generate(batch, return_dict_in_generate=True, on_unfamiliar="withhold")
    assert withheld.reports[0] == "" and withheld.sentences[0] == [] and withheld.familiarity[0]["withheld"]
    assert withheld.reports[1] == warn.reports[1] and not withheld.familiarity[1]["withheld"]
    result = {"omitted": withheld.omitted[0], "familiarity": withheld.familiarity[0]}
    assert "withheld" in why_empty(result) and "unlike the images" in why_empty(result)
    ignored = model.generate(batch, return_dict_in_generate=True, on_unfamiliar="ignore")
    assert ignored.reports == warn.reports and ignored.familiarity[0]["unfamiliar"]
    assert ignored.familiarity[0]["warning"] is None
    with caplog.at_level(logging.WARNING):
        assert model.generate(batch) == warn.reports  # the plain list: the warning goes to the log
    assert "1 of 2 images are unlike" in caplog.text
    with pytest.raises(ValueError, match="on_unfamiliar must be one of"):
        model.generate(batch, on_unfamiliar="skip")


def test_folder_without_calibration_generates_and_says_the_check_is_unavailable(model_dir, capsys, tmp_path):
    model = SAERadModel.from_pretrained(model_dir)
    assert model.familiarity is None
    out = model.generate(torch.randn(2, 3, 32, 32), return_dict_in_generate=True, on_unfamiliar="withhold")
    assert all(out.reports)
    assert all(not f["available"] and "unavailable" in f["note"] and f["unfamiliar"] is None for f in out.familiarity)
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "a.png")
    assert main(["report", str(tmp_path / "a.png"), "--model", str(model_dir)]) == 0
    assert "familiarity check is unavailable" in capsys.readouterr().err


def test_calibration_round_trips_through_save_and_from_pretrained(calibrated, tmp_path):
    model, processor = calibrated
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "familiarity.safetensors").is_file()
    assert (tmp_path / "m" / "familiarity_saerad.py").is_file()  # the remote code travels with the folder
    loaded = SAERadModel.from_pretrained(tmp_path / "m").familiarity
    for key, value in model.familiarity.items():
        assert torch.equal(loaded[key], value) if isinstance(value, torch.Tensor) else loaded[key] == value
    batch = pixels(processor, [noise(1)] + phantoms(2, start=8000))
    remote = generate_without_saerad(tmp_path / "m", batch, tmp_path)
    local = model.generate(batch, return_dict_in_generate=True).familiarity
    assert remote["familiarity"] == json.loads(json.dumps(local))
    assert remote["familiarity"][0]["unfamiliar"]
    assert not [e for e in remote["events"] if e[0] == "generate" or e[1].startswith("socket")]


def test_report_prints_the_warning_on_stderr_and_in_json(calibrated, tmp_path, capsys):
    model, _ = calibrated
    model.save_pretrained(tmp_path / "m")
    noise(2).save(tmp_path / "noise.png")
    phantoms(1, start=9000)[0].save(tmp_path / "phantom.png")
    images = [str(tmp_path / "noise.png"), str(tmp_path / "phantom.png")]
    assert main(["report", *images, "--model", str(tmp_path / "m")]) == 0
    out = capsys.readouterr()
    assert out.err.count("warning:") == 1 and "noise.png: This image is unlike" in out.err
    assert out.out.count("FINDINGS:") == 2
    assert main(["report", *images, "--model", str(tmp_path / "m"), "--json", "--on-unfamiliar", "withhold"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload[0]["familiarity"]["unfamiliar"] and payload[0]["report"] == ""
    assert payload[1]["familiarity"]["unfamiliar"] is False and payload[1]["report"]


def test_real_chest_radiograph_is_unlike_phantoms(calibrated):
    """The adult PA chest CR that pydicom-data ships (MIT), against a model calibrated on phantoms."""
    from saerad.errors import Unreachable
    from saerad.familiarity import fetch_wheel_files

    try:
        files = fetch_wheel_files("pydicom-data", "data_store/data/")
    except Unreachable as err:
        pytest.skip(f"the package registry is unreachable: {err}")
    model, processor = calibrated
    real = load_image(str(next(f for f in files if f.name == "RG1_UNCR.dcm")))
    variants = [real, real.transpose(Image.FLIP_LEFT_RIGHT), real.resize((real.width // 3, real.height // 3))]
    out = model.generate(pixels(processor, variants), return_dict_in_generate=True)
    assert all(f["unfamiliar"] for f in out.familiarity)


def test_evaluate_counts_the_flagged_test_images(calibrated, tmp_path):
    from saerad.evaluation.runner import run_evaluation

    model, processor = calibrated
    model.save_pretrained(tmp_path / "m")
    root = tmp_path / "data"
    root.mkdir()
    images = [noise(10), noise(11)] + phantoms(3, start=9100)
    lines = []
    for k, image in enumerate(images):
        image.save(root / f"{k}.png")
        lines.append(json.dumps({"file_name": f"{k}.png", "findings": "The lungs are clear.", "split": "test",
                                 "id": f"r{k}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    results = run_evaluation(f"imagefolder:{root}", model=str(tmp_path / "m"), baselines=["normal"],
                             out=str(tmp_path / "eval"), n_resamples=20)
    expected = sum(f["unfamiliar"] for f in model.generate(pixels(processor, images),
                                                           return_dict_in_generate=True).familiarity)
    counts = json.loads((tmp_path / "eval" / "results.json").read_text())["familiarity"]["sae-rad"]
    assert counts["n_flagged"] == expected >= 2 and counts["n"] == 5
    assert f"sae-rad: {expected} of 5 test images flagged" in (tmp_path / "eval" / "results.md").read_text()
    assert set(results["familiarity"]) == {"sae-rad"}  # the baselines look at no image


def test_build_calibrates_and_states_it_in_the_card(backbone_dir, phantom_spec, tmp_path):
    from fixtures import run_pipeline

    run_pipeline(tmp_path, backbone_dir)
    args = ["build", "--backbone", str(backbone_dir), "--sae", str(tmp_path / "sae"), "--dictionary",
            str(tmp_path / "interp" / "feature_dictionary.json")]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0  # the SAE's dataset has no validation split
    assert not (tmp_path / "plain" / "familiarity.safetensors").exists()
    assert "no familiarity calibration" in (tmp_path / "plain" / "README.md").read_text()
    assert main(args + ["--out", str(tmp_path / "m"), "--calibration", phantom_spec, "--calibration-rows", "40",
                        "--false-flag-rate", "0.1"]) == 0
    card = (tmp_path / "m" / "README.md").read_text()
    assert "40 training images" in card and "30 validation images" in card and "test split was not read" in card
    info = json.loads((tmp_path / "m" / "saerad_build.json").read_text())["familiarity"]
    assert info["n_fit"] == 40 and info["false_flag_rate"] == 0.1
    assert SAERadModel.from_pretrained(tmp_path / "m").familiarity["threshold"] == info["threshold"]


def test_a_malformed_or_mismatched_calibration_is_refused(calibrated, tmp_path):
    import familiarity_saerad

    model, processor = calibrated
    model.save_pretrained(tmp_path / "m")
    bad = dict(model.familiarity, mean=model.familiarity["mean"][:10])
    familiarity_saerad.save_calibration(bad, tmp_path / "m")
    with pytest.raises(ValueError, match="familiarity calibration malformed"):
        SAERadModel.from_pretrained(tmp_path / "m")
    model.familiarity = dict(bad, precision=torch.eye(10))
    with pytest.raises(ValueError, match="has 10 statistics but hidden state 1 of this backbone gives 64"):
        model.generate(pixels(processor, [noise(0)]))


def test_concurrent_generates_each_score_their_own_images(calibrated):
    """The Space computes two requests at once on one model: each generate reads only its own forward pass."""
    from concurrent.futures import ThreadPoolExecutor

    model, processor = calibrated
    batches = [pixels(processor, [noise(20 + k)]) if k % 2 else pixels(processor, phantoms(1, start=9500 + k))
               for k in range(8)]
    alone = [model.generate(b, return_dict_in_generate=True).familiarity[0]["score"] for b in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda b: model.generate(b, return_dict_in_generate=True).familiarity[0]["score"],
                                 batches * 3))
    assert together == alone * 3
