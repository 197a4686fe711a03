import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from modeling_saerad import SAERadModel

from conftest import tiny_model
from minimal_env import generate_without_saerad


def comparable(config: dict) -> dict:
    """A config dict without what loading legitimately fills in (source path, resolved dtype)."""
    skip = {"_name_or_path", "dtype", "torch_dtype"}
    return {k: comparable(v) if isinstance(v, dict) else v for k, v in config.items() if k not in skip}




def test_save_writes_the_hub_layout_with_every_file_of_the_remote_code(model_dir):
    from saerad.resources import REMOTE_CODE

    files = set(os.listdir(model_dir))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "feature_dictionary.json"} <= files
    assert set(REMOTE_CODE) <= files
    root = Path(__file__).resolve().parents[1]
    assert set(REMOTE_CODE) == {p.name for p in root.glob("*_saerad.py")}  # the list knows every root module
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_saerad.SAERadConfig",
                                  "AutoModel": "modeling_saerad.SAERadModel"}
    assert config["custom_pipelines"]["radiology-report"]["impl"] == "pipeline_saerad.SAERadReportPipeline"
    processor = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_saerad.SAERadImageProcessor"}
    assert config["model_type"] == "sae_rad"


def test_round_trip_keeps_config_tensors_dictionary_and_reports(model, model_dir):
    loaded = SAERadModel.from_pretrained(model_dir).eval()
    assert comparable(loaded.config.to_dict()) == comparable(model.config.to_dict())
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert loaded.feature_dictionary == model.feature_dictionary
    pixels = torch.randn(2, 3, 32, 32)
    assert model.generate(pixels) == loaded.generate(pixels)


def test_auto_classes_load_the_folder_with_remote_code(model, model_dir):
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    loaded = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)
    assert config.d_sae == 64 and loaded.feature_dictionary == model.feature_dictionary
    from PIL import Image

    pixels = processor(images=Image.new("L", (40, 50), 128), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)  # grayscale replicated to 3 channels, resized to the backbone
    assert torch.equal(loaded(pixels).feature_activations, model(pixels).feature_activations)


def test_fresh_process_without_saerad_gives_identical_activations_and_reports(model, model_dir, tmp_path):
    pixels = torch.randn(3, 3, 32, 32)
    remote = generate_without_saerad(model_dir, pixels, tmp_path)
    out = model.generate(pixels, return_dict_in_generate=True)
    local_config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True).to_dict()
    assert comparable(remote["config"]) == comparable(json.loads(json.dumps(local_config)))
    assert remote["activations"] == out.feature_activations.tolist()
    assert remote["reports"] == out.reports and any(remote["reports"])
    assert remote["sentences"] == json.loads(json.dumps(out.sentences))
    assert remote["processed_shape"] == [1, 3, 32, 32]
    active = sorted(int(f) for f in (out.feature_activations > 0).any(0).nonzero().flatten())
    assert remote["maps_shape"] == [3, len(active), 32, 32]
    grounded = model.generate(pixels, return_dict_in_generate=True, output_localization=True)
    assert remote["sides"] == [[s["side"] for s in sentences] for sentences in grounded.sentences]
    written = sorted({f for s in out.sentences[0] for f in s["feature_ids"]})
    assert remote["switched_off"] == model.generate(pixels[:1], feature_overrides={f: 0 for f in written})[0]
    assert remote["explained"] == [[row["feature_id"] for row in t] for t in model.explain(pixels)]
    from saerad.resources import REMOTE_CODE

    assert remote["remote_modules"] == sorted(name.removesuffix(".py") for name in REMOTE_CODE)  # every file ran
    assert set(remote["pipeline"]) == {"report", "findings", "impression", "sentences", "omitted", "familiarity"}
    # no socket at all; while loading, writes only to transformers' modules cache (how remote code is imported);
    # while generating, none
    events = remote["events"]
    assert not [e for e in events if e[1].startswith("socket.")], events
    assert not [e for e in events if e[0] == "generate"], events
    cache = str(tmp_path / "hf" / "modules")
    stray = [e for e in events if not (e[2].startswith(cache) or (e[1] == "os.mkdir" and cache.startswith(e[2])))]
    assert not stray, stray
    assert any(e[2].endswith("modeling_saerad.py") for e in events)  # the watch sees writes


def test_model_without_dictionary_loads_and_says_so(tmp_path):
    model = tiny_model()
    model.feature_dictionary = None
    model.save_pretrained(tmp_path)
    loaded = SAERadModel.from_pretrained(tmp_path)
    assert loaded.feature_dictionary is None
    with pytest.raises(ValueError, match="no feature dictionary"):
        loaded.generate(torch.randn(1, 3, 32, 32))


def test_pickled_weights_are_refused(model, tmp_path):
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"holds only pickled weights \(pytorch_model.bin\)"):
        SAERadModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors only"):
        SAERadModel.from_pretrained(tmp_path, use_safetensors=False)
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path / "x", safe_serialization=False)


def test_image_processor_given_at_build_is_saved(model, tmp_path):
    from image_processing_saerad import default_image_processor

    processor = default_image_processor(model.config.vision_config)
    processor.image_mean = [0.5307] * 3
    model.image_processor = processor
    model.save_pretrained(tmp_path)
    saved = json.loads(Path(tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == [0.5307] * 3 and saved["do_convert_rgb"] is True
