"""The pipeline at the paper's shapes, run small: benchmarks/paper_scale.py through the real commands."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper_scale():
    spec = importlib.util.spec_from_file_location("paper_scale", ROOT / "benchmarks" / "paper_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_paper_scale_run_recovers_and_describes_planted_concepts(paper_scale, tmp_path):
    args = paper_scale.parser().parse_args([
        "--work", str(tmp_path / "run"), "--train", "4000", "--val", "400", "--test", "200", "--d-in", "32",
        "--concepts", "40", "--expansion", "8", "--active", "4", "--batch", "400", "--epochs", "8",
        "--backbone-layers", "1", "--n-resamples", "20"])
    result = paper_scale.run(args)
    assert [r["stage"] for r in result["stages"]] == ["data", "train", "interpret", "build", "evaluate"]
    assert result["recovery"]["recovered_and_described"] >= 0.8
    assert "sae-rad" in result["evaluation"] and result["evaluation"]["sae-rad"]["micro_f1_14"] is not None
    manifest = (tmp_path / "run" / "embeddings" / "test" / "manifest.json")
    assert manifest.exists()  # the cache is the one `saerad embed` writes, read back by the commands


def test_large_dictionary_validation_still_names_the_bad_exemplar_and_depth():
    from composition_saerad import validate_feature_dictionary

    features = [{"id": i, "description": "Planted sign.", "section": "other", "findings": [],
                 "exemplars": [f"train-{i}-{j}" for j in range(32)]} for i in range(5000)]
    data = {"schema_version": 1, "features": features}
    assert len(validate_feature_dictionary(data, 5000)["features"]) == 5000
    features[4000]["exemplars"][3] = "bad\u0000id"
    with pytest.raises(ValueError, match=r"features\[4000\]\.exemplars\[3\] holds control characters"):
        validate_feature_dictionary(data, 5000)
    features[4000]["exemplars"][3] = "x" * 300
    with pytest.raises(ValueError, match=r"features\[4000\]\.exemplars\[3\] is 300 characters"):
        validate_feature_dictionary(data, 5000)
    features[4000]["exemplars"] = ["ok", 7]
    with pytest.raises(ValueError, match=r"features\[4000\]\.exemplars\[1\] must be a string"):
        validate_feature_dictionary(data, 5000)
    nested: list = []
    for _ in range(20):
        nested = [nested]
    features[4000]["exemplars"] = ["ok"]
    features[4000]["extra"] = nested
    with pytest.raises(ValueError, match="nested deeper"):
        validate_feature_dictionary(data, 5000)
