"""The hostile corpus through every entry point, and property tests for the text parsers."""

import os
import time

import pytest
from hostile import MARKER, markdown, run_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saerad.data.reports import parse_sections, split_sentences
from saerad.labeler import OBSERVATIONS, label_mentions, label_report


def test_every_case_of_the_hostile_corpus_is_handled_at_every_entry_point(tmp_path):
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    rows = run_corpus(tmp_path)
    wrong = [row for row in rows if not row["ok"]]
    assert not wrong, "\n".join(f"{r['kind']} / {r['case']} / {r['entry point']}: expected {r['expected']}, got "
                                f"{r['got']}" for r in wrong)
    assert len(rows) >= 300 and not os.path.exists(MARKER)  # the malicious pickle was never opened
    assert not os.path.exists("/tmp/saerad-hostile-eps-ran")  # nor the EPS rendered
    table = markdown(rows)
    for entry in ("| image | saerad report (CLI) |", "| predictions | saerad evaluate --predictions (CLI) |",
                  "| reports | saerad interpret --reports (CLI) |", "| embeddings | saerad train (CLI) |",
                  "| build | saerad build (CLI) |"):
        assert entry in table


def test_broken_images_in_an_imagefolder_are_counted_in_the_manifest_and_refused_with_strict(tmp_path, capsys):
    import json

    from hostile import metadata_cases

    from saerad.cli import main

    case = next(c for c in metadata_cases() if c.name.startswith("broken images"))
    root = case.make(tmp_path)
    assert main(["data", "build", f"imagefolder:{root}", "--out", str(tmp_path / "built")]) == 0
    assert "skipped 1 rows: empty file" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "built" / "saerad_dataset.json").read_text())
    assert manifest["skipped"] == {"empty file": 1, "not an image": 1} and manifest["splits"] == {"train": 2}
    assert main(["data", "build", f"imagefolder:{root}", "--out", str(tmp_path / "built2"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "1 empty file, 1 not an image" in err and "zero.png" in err
    assert not (tmp_path / "built2").exists() and not list(tmp_path.glob(".*tmp"))


def test_the_labeler_is_linear_on_a_run_on_sentence():
    # 2.2k characters took 0.25 s and 17.6k 62 s before (cubic); 70k characters now take about 0.5 s on 2 cores
    text = ("no left pleural effusion or pneumothorax and mild cardiomegaly possibly atelectasis with right "
            "pacemaker and severe degenerative changes ") * 500
    start = time.perf_counter()
    labels = label_report(text[:70_000])
    assert time.perf_counter() - start < 30  # generous: a cubic labeler takes hours here
    assert {"Cardiomegaly", "Pleural Effusion", "Support Devices"} <= set(labels)


TEXT = st.text(st.characters(codec="utf-8"), max_size=400) | st.from_regex(
    r"(FINDINGS|IMPRESSION|INDICATION)?:? ?([A-Za-z0-9 .,;:()\-]{0,40}[.!?] ?){0,8}", fullmatch=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_text_parsers_never_raise_and_keep_their_invariants(text):
    sentences = split_sentences(text)
    assert all(s and s == s.strip() for s in sentences)
    sections = parse_sections(text)
    assert all(v is None or isinstance(v, str) for v in sections.values())
    mentions = label_mentions(text)
    for m in mentions:
        assert m["status"] in ("positive", "negative", "uncertain") and m["start"] < m["end"]
    labels = label_report(text)
    assert set(labels) <= set(OBSERVATIONS) and set(labels.values()) <= {"positive", "negative", "uncertain"}
    assert labels.get("No Finding") in (None, "positive")


@pytest.mark.parametrize("n", [0, 1, 10_000])
def test_text_parsers_take_empty_and_huge_inputs(n):
    text = "x" * n
    assert split_sentences(text) == ([text] if n else [])
    assert label_report(text) == {"No Finding": "positive"} or label_report(text) == {}


def test_a_dictionary_with_a_null_and_a_left_side_for_one_finding_composes():
    from composition_saerad import compose_report

    effusion = {"label": "Pleural Effusion", "status": "positive"}
    features = {0: {"id": 0, "description": "Effusion.", "section": "pleura", "score": 0.9,
                    "findings": [{**effusion, "laterality": None}, {**effusion, "laterality": "left"}]},
                1: {"id": 1, "description": "Left effusion.", "section": "pleura", "score": 0.9,
                    "findings": [{**effusion, "laterality": "left"}, {**effusion, "laterality": None}]}}
    composed = compose_report([2.0, 1.0], features)  # sorted None against "left" before: TypeError
    assert composed["findings"] == "Effusion." and composed["sentences"][0]["feature_ids"] == [0, 1]


def test_the_hub_processor_stretches_16_bit_images_instead_of_saturating_them():
    import numpy as np
    from PIL import Image

    from image_processing_saerad import SAERadImageProcessor, as_checked_processor, default_image_processor

    from conftest import tiny_model

    processor = as_checked_processor(default_image_processor(tiny_model().config.vision_config))
    assert isinstance(processor, SAERadImageProcessor)
    ramp = np.tile(np.linspace(0, 4095, 64), (64, 1)).astype(np.uint16)  # 12 bits stored in 16, as DICOMs are
    pixels = processor(images=Image.fromarray(ramp), return_tensors="pt")["pixel_values"]
    eight = processor(images=Image.fromarray((ramp / 4095 * 255).round().astype(np.uint8)), return_tensors="pt")
    assert float((pixels - eight["pixel_values"]).abs().max()) < 0.05  # the same picture, not 99.9% white
    with pytest.raises(ValueError, match="image 1: 1x1 pixels is smaller than the minimum 32x32"):
        processor(images=[Image.fromarray(ramp), Image.new("L", (1, 1))], return_tensors="pt")
    with pytest.raises(ValueError, match="more elongated than 1:10"):
        processor(images=np.zeros((32, 20000), np.uint8), return_tensors="pt")


def _peak(argv: list, tmp_path) -> tuple:
    """(exit code, stderr, peak RSS in MB) of `saerad ARGV` in a fresh process, its address space capped at 12 GB
    so that a regression fails here instead of taking the machine."""
    import subprocess
    import sys

    code = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))\n"
            "from saerad.cli import main\ncode = main(sys.argv[1:])\n"
            "print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(code)")
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    peak = [line for line in run.stderr.splitlines() if line.startswith("peak ")]
    return run.returncode, run.stderr, int(peak[-1].split()[1]) / 1024 if peak else float("inf")


def test_a_deflate_bomb_and_a_huge_shortest_edge_are_refused_under_1_gb(model_dir, tmp_path):
    """A 1.2 MB deflated DICOM declaring 64x64 pixels inflated to 10.8 GB; shortest_edge 60000 took 23.8 GB."""
    import json
    import shutil

    from imaging import gradient, write_deflated_dicom, write_png

    bomb = write_deflated_dicom(tmp_path / "bomb.dcm", pixel_bytes=1200 << 20)  # 1.2 GB of zeros
    private = write_deflated_dicom(tmp_path / "private.dcm", private_bytes=1 << 30)  # a 1 GB private element
    assert bomb.stat().st_size < 3 << 20 and private.stat().st_size < 3 << 20
    huge = tmp_path / "huge-edge"
    shutil.copytree(model_dir, huge)
    settings = json.loads((huge / "preprocessor_config.json").read_text())
    (huge / "preprocessor_config.json").write_text(json.dumps({**settings, "size": {"shortest_edge": 60000}}))
    image = write_png(tmp_path / "x.png", gradient(96, 80))
    for argv, message in (([str(bomb), "--model", str(model_dir)], "inflates past"),
                          ([str(private), "--model", str(model_dir)], "elements other than the pixel data"),
                          ([str(image), "--model", str(huge)], "the limit is")):
        code, err, peak = _peak(["report", *argv], tmp_path)
        assert code == 2 and message in err and "Traceback" not in err, err
        assert peak < 1024, (argv, peak)


def test_an_eps_named_png_is_refused_without_ghostscript_being_called(model_dir, tmp_path, monkeypatch, capsys):
    from hostile import EPS
    from PIL import EpsImagePlugin

    from saerad.cli import main
    from saerad.data.adapters import probe_image
    from saerad.data.images import load_image

    called = []
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)  # as where Ghostscript is installed
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: called.append(a))
    monkeypatch.setattr("subprocess.check_call", lambda *a, **k: called.append(a))
    path = tmp_path / "x.png"
    path.write_bytes(EPS)
    with pytest.raises(ValueError, match="x.png: not an image"):
        load_image(path)
    assert main(["report", str(path), "--model", str(model_dir)]) == 2
    assert "x.png: not an image" in capsys.readouterr().err
    assert probe_image(path) == "not an image"  # a dataset row: skipped and counted
    assert called == [] and not os.path.exists("/tmp/saerad-hostile-eps-ran")
