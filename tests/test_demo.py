"""`saerad demo` end to end on a miniature IU archive (made-up text, real phantoms) with a tiny random backbone."""

import json

import pytest

from saerad.cli import main

from fixtures import IU_XML
from readme import readme_report_command

TEMPLATES = [
    ("The lungs are clear. No pleural effusion.", ["normal"]),
    ("The heart is enlarged.", ["Cardiomegaly/moderate"]),
    ("Small left pleural effusion.", ["Pleural Effusion/left/small"]),
    ("Right basilar opacity.", ["Opacity/lung/base/right"]),
    ("Calcified granuloma in the left upper lobe.", ["Calcified Granuloma/lung/upper lobe/left"]),
]


@pytest.fixture
def mini_iu(tmp_path, monkeypatch):
    """60 made-up IU reports; the demo builds its IU-phantom from them instead of the real archive."""
    import saerad.data.adapters as adapters

    xml_dir = tmp_path / "iu" / "ecgen-radiology"
    xml_dir.mkdir(parents=True)
    for rid in range(1, 61):
        findings, mesh = TEMPLATES[rid % len(TEMPLATES)]
        tags = "".join(f"<major>{t}</major>" for t in mesh)
        (xml_dir / f"{rid}.xml").write_text(IU_XML.format(id=rid, findings=findings, mesh=tags, comparison="None."))
    build = adapters.build_iu_phantom
    monkeypatch.setattr(adapters, "load_iu_phantom", lambda: build(str(tmp_path / "iu"), num_proc=2))


def test_demo_runs_every_stage_into_its_workdir_then_reuses_them(mini_iu, backbone_dir, tmp_path, capsys):
    work = tmp_path / "work"
    args = ["demo", "--workdir", str(work), "--backbone", str(backbone_dir), "--pooling", "mean"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for path in ("data/dataset_dict.json", "embeddings/train/manifest.json", "embeddings/validation/manifest.json",
                 "sae/training_metrics.json", "interpret/feature_dictionary.json", "interpret/interpret_metrics.json",
                 "model/config.json", "model/README.md", "results.json", "results.md", "predictions.jsonl"):
        assert (work / path).exists(), path
    assert f"embeddings: train with {backbone_dir}, mean pooling" in out
    assert json.loads((work / "model" / "config.json").read_text())["pooling"] == "mean"
    results = json.loads((work / "results.json").read_text())
    assert set(results["systems"]) == {"sae-rad", "normal", "retrieval", "oracle"}
    assert results["n"] == len((work / "predictions.jsonl").read_text().splitlines()) > 0
    assert "| sae-rad |" in out and "| oracle |" in out and "Images are phantoms" in out

    # the build record names every input, results included, so that the folder is rebuilt from it byte for byte
    record = work / "model" / "saerad_build.json"
    assert json.loads(record.read_text())["build_args"]["results"] == "../results.json"
    assert main(["build", "--from-record", str(record), "--out", str(work / "rebuilt")]) == 0  # beside model/
    for name in ("README.md", "saerad_build.json", "config.json", "model.safetensors", "feature_dictionary.json"):
        assert (work / "rebuilt" / name).read_bytes() == (work / "model" / name).read_bytes(), name
    capsys.readouterr()

    report = readme_report_command(work)  # the README's `saerad report` line, on this workdir
    assert len(report) > 5 and main(report[1:]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload) == len(report) - 5 and all("sentences" in p for p in payload)  # images: all but 5 words

    assert main(args) == 0  # everything is reused
    again = capsys.readouterr().out
    for stage in ("data", "embeddings: train", "sae", "interpret", "model", "evaluation"):
        assert f"== {stage}" in again and again.split(f"== {stage}", 1)[1].split("\n", 1)[0].endswith("(cached)")

    assert main(["demo", "--workdir", str(work), "--backbone", str(backbone_dir)]) == 2  # cls: not what it holds
    err = capsys.readouterr().err
    assert "(mean pooling), not" in err and "(cls pooling); choose another --workdir" in err
