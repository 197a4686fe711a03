import json
import os
import subprocess
import sys

import numpy as np
import pytest

from saerad.cli import main

from imaging import write_dicom, write_png


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    png = write_png(tmp_path / "a.png", (rng.random((64, 64)) * 255).astype(np.uint8))
    dcm = write_dicom(tmp_path / "b.dcm", (rng.random((64, 64)) * 4000).astype(np.uint16), "MONOCHROME1")
    return [str(png), str(dcm)]


def test_report_prints_one_report_per_image(model_dir, images, capsys):
    assert main(["report", *images, "--model", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("== ") == 2 and out.count("FINDINGS:") == 2 and "IMPRESSION:" in out


def test_report_json_has_sentences_with_feature_ids(model, model_dir, images, capsys):
    assert main(["report", *images, "--model", str(model_dir), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [p["image"] for p in payload] == images
    for item in payload:
        assert item["report"].startswith("FINDINGS:")
        for sentence in item["sentences"]:
            assert sentence["feature_ids"] and len(sentence["activations"]) == len(sentence["feature_ids"])
            assert all(model.features[f]["description"] for f in sentence["feature_ids"])


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "no such file"),
        ("text", "not an image"),
        ("folder", "is a folder"),
        ("bad_model", "no such model folder"),
        ("not_model", "not a model folder"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(model_dir, images, tmp_path, case, message):
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "empty_dir").mkdir()
    image, model = images[0], str(model_dir)
    if case == "missing":
        image = str(tmp_path / "nope.png")
    elif case == "text":
        image = str(tmp_path / "notes.png")
    elif case == "folder":
        image = str(tmp_path / "empty_dir")
    elif case == "bad_model":
        model = str(tmp_path / "no" / "such" / "model")
    else:
        model = str(tmp_path / "empty_dir")
    run = subprocess.run([sys.executable, "-m", "saerad", "report", image, "--model", model],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.startswith("saerad")]
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr


def test_debug_shows_the_traceback(model_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "saerad", "--debug", "report", str(tmp_path / "x.png"),
                          "--model", str(model_dir)], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "Traceback" in run.stderr


def test_help_lists_the_commands():
    run = subprocess.run([sys.executable, "-m", "saerad", "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "report" in run.stdout


def test_an_empty_report_says_why():
    from composition_saerad import compose_report
    from saerad.generate import why_empty

    features = {0: {"id": 0, "description": "The heart is enlarged.", "section": "heart", "findings": [], "score": 0.6},
                1: {"id": 1, "description": "", "section": "other", "findings": [], "score": None},
                2: {"id": 2, "description": "Small effusion.", "section": "pleura", "findings": [], "score": None}}
    empty = compose_report([0.5, 0.2, 0.1], features, min_feature_score=0.75)
    assert empty["report"] == ""
    assert why_empty(empty) == ("(no report: 3 features fired, 2 whose description was not validated on held-out "
                                "images and 1 without a description)")
    assert why_empty(compose_report([0.0, 0.0, 0.0], features)) == "(no report: no feature fired on this image)"
    one_bare = compose_report([0.0, 0.3, 0.0], features)
    assert why_empty(one_bare) == "(no report: 1 feature fired, 1 without a description)"


def test_report_heatmap_writes_one_tile_per_sentence_and_off_writes_the_what_if_report(model_dir, images, capsys,
                                                                                          tmp_path):
    from PIL import Image

    assert main(["report", images[0], "--model", str(model_dir), "--json"]) == 0
    sentences = json.loads(capsys.readouterr().out)[0]["sentences"]
    findings = [s for s in sentences if s["report_section"] == "findings"]
    assert main(["report", images[0], "--model", str(model_dir), "--heatmap", str(tmp_path / "maps.png")]) == 0
    out = capsys.readouterr().out
    assert out.count("  map ") == len(findings) and "map 1: " in out
    assert Image.open(tmp_path / "maps.png").size == (32 * len(findings), 32)
    first = findings[0]
    off = ",".join(map(str, first["feature_ids"]))
    assert main(["report", images[0], "--model", str(model_dir), "--off", off]) == 0
    out = capsys.readouterr().out
    assert "off)" in out and first["text"] not in out.split("IMPRESSION")[0]
    assert main(["report", images[0], "--model", str(model_dir), "--off", "x,1"]) == 2
    assert "--off takes feature ids" in capsys.readouterr().err
    assert main(["report", images[0], "--model", str(model_dir), "--off", "9999"]) == 2
    assert "not in [0, d_sae=64)" in capsys.readouterr().err
    assert main(["report", *images, "--model", str(model_dir), "--heatmap", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m-1.png").exists() and (tmp_path / "m-2.png").exists()


def test_heatmap_never_overwrites_an_input_or_an_existing_file_and_names_what_it_writes(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(1)
    inputs = [write_png(tmp_path / name, (rng.random((64, 64)) * 255).astype(np.uint8))
              for name in ("cxr-1.png", "cxr-2.png", "x.png")]
    before = {p: p.read_bytes() for p in inputs}
    (tmp_path / "keep.png").write_bytes(b"the user's own file")
    refusals = [
        ([str(inputs[0]), str(inputs[1]), "--heatmap", str(tmp_path / "cxr.png")], "is one of the input images"),
        ([str(inputs[2]), "--heatmap", str(inputs[2])], "is one of the input images"),
        ([str(inputs[2]), "--heatmap", str(inputs[2]), "--overwrite"], "is one of the input images"),
        ([str(inputs[2]), "--heatmap", str(tmp_path / "keep.png")], "already exists"),
        ([str(inputs[2]), "--heatmap", str(tmp_path / "no" / "dir" / "m.png")], "does not exist"),
    ]
    for argv, message in refusals:
        assert main(["report", *argv, "--model", str(model_dir)]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert {p: p.read_bytes() for p in inputs} == before
    assert (tmp_path / "keep.png").read_bytes() == b"the user's own file"
    link = tmp_path / "link.png"
    link.symlink_to(inputs[2])  # a link to an input is that input
    assert main(["report", str(inputs[2]), "--model", str(model_dir), "--heatmap", str(link), "--overwrite"]) == 2
    capsys.readouterr()
    assert main(["report", str(inputs[2]), "--model", str(model_dir), "--heatmap", str(tmp_path / "keep.png"),
                 "--overwrite"]) == 0
    assert f"heatmap written to {tmp_path / 'keep.png'}" in capsys.readouterr().out
    assert main(["report", str(inputs[0]), str(inputs[2]), "--model", str(model_dir), "--json", "--heatmap",
                 str(tmp_path / "maps.png")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [p["heatmap"] for p in payload] == [str(tmp_path / "maps-1.png"), str(tmp_path / "maps-2.png")]
    assert {p: p.read_bytes() for p in inputs} == before and all(os.path.isfile(p["heatmap"]) for p in payload)


def _peak_rss_mb(argv: list) -> float:
    """Peak resident memory (MB) of `saerad ARGV` run in a fresh process (its own ru_maxrss, read at exit)."""
    code = ("import resource, sys\nfrom saerad.cli import main\ncode = main(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(code)")
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    return int(run.stderr.strip().splitlines()[-1]) / 1024


def test_report_memory_is_flat_in_the_number_of_images(model_dir, tmp_path):
    """10, 100 and 300 JPEGs took 449, 697 and 1,189 MB: every decoded image was held to the end."""
    from PIL import Image

    side = 1024  # 1 MB decoded each: 300 held would add 300 MB to a ~400 MB process
    Image.fromarray((np.random.default_rng(0).random((side, side)) * 255).astype(np.uint8)).save(
        tmp_path / "x.jpg", quality=30)
    paths = []
    for k in range(300):
        path = tmp_path / "many" / f"{k:03d}.jpg"
        path.parent.mkdir(exist_ok=True)
        os.link(tmp_path / "x.jpg", path)
        paths.append(str(path))
    few = _peak_rss_mb(["report", *paths[:10], "--model", str(model_dir)])
    many = _peak_rss_mb(["report", *paths, "--model", str(model_dir)])
    assert many <= 1.5 * few, (few, many)
