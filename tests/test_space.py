"""The Space (spaces/): its own code only, named stateless endpoints, readable errors, aligned overlays."""

import ast
import io
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_model

SPACE = Path(__file__).resolve().parents[1] / "spaces"
gr = pytest.importorskip("gradio")
sys.path.insert(0, str(SPACE))

import app  # noqa: E402
import inference  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def xray(path: Path, size=(96, 64), seed: int = 0) -> Path:
    Image.fromarray((np.random.default_rng(seed).random(size[::-1]) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def space_model(tmp_path_factory):
    """A tiny model folder whose first description is HTML and Markdown, to be shown as text."""
    model = tiny_model()
    model.feature_dictionary["features"][0]["description"] = "<b>bold</b> **stars** [link](http://x)"
    path = tmp_path_factory.mktemp("space") / "model"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(space_model):
    demo = app.build_demo(str(space_model))
    port = free_port()
    app.CONCURRENCY = 2
    demo.queue(max_size=app.QUEUE_SIZE, default_concurrency_limit=2).launch(
        server_port=port, prevent_thread_lock=True, max_file_size=f"{inference.MAX_UPLOAD_MB}mb", quiet=True)
    from gradio_client import Client

    yield demo, Client(f"http://127.0.0.1:{port}/", verbose=False), port
    demo.close()


REMOTE = tuple(p.stem for p in SPACE.parent.glob("*_saerad.py"))  # the model folder's modules, not importable there


def test_the_space_imports_nothing_of_the_toolkit():
    for path in SPACE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("saerad", *REMOTE) for n in names), f"{path.name} imports {names}"
    requirements = (SPACE / "requirements.txt").read_text()
    assert "saerad" not in requirements.lower().replace("sae-rad", "")
    assert "sdk_version: " in (SPACE / "README.md").read_text()


def test_report_endpoint_equals_model_generate_and_is_named(server, space_model, tmp_path):
    from gradio_client import handle_file
    from transformers import AutoImageProcessor, AutoModel

    _, client, _ = server
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/report", "/explain"}
    model = AutoModel.from_pretrained(space_model, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(space_model, trust_remote_code=True)
    image = xray(tmp_path / "chest.png")
    text, result = client.predict(handle_file(str(image)), api_name="/report")
    pixels = processor(images=Image.open(image).convert("L"), return_tensors="pt")["pixel_values"]
    expected = model.generate(pixels, return_dict_in_generate=True, output_localization=True)
    assert text == expected.reports[0] == result["report"]
    assert [s["feature_ids"] for s in result["sentences"]] == [s["feature_ids"] for s in expected.sentences[0]]
    assert [s["side"] for s in result["sentences"]] == [s["side"] for s in expected.sentences[0]]
    assert all(len(s["activations"]) == len(s["feature_ids"]) for s in result["sentences"])


def test_explain_endpoint_needs_no_earlier_call(server, tmp_path):
    from gradio_client import Client, handle_file

    _, _, port = server
    fresh = Client(f"http://127.0.0.1:{port}/", verbose=False)  # a new client: no state from /report
    info, overlay = fresh.predict(handle_file(str(xray(tmp_path / "a.png", (80, 120)))), 0, api_name="/explain")
    assert info["feature_id"] == 0 and info["description"].startswith("<b>bold</b>")
    assert Image.open(overlay).size == (80, 120)  # on the upload, at its own size


def test_explain_refuses_a_feature_id_that_is_not_an_integer(server, tmp_path):
    from gradio_client import handle_file

    demo, client, _ = server
    image = handle_file(str(xray(tmp_path / "a.png")))
    for bad in (3.5, True, -1, 64, "3"):
        with pytest.raises(Exception, match="feature id must be an integer"):
            client.predict(image, bad, api_name="/explain")
    assert client.predict(image, 3.0, api_name="/explain")[0]["feature_id"] == 3
    assert demo.delete_cache == app.DELETE_CACHE and app.DELETE_CACHE[1] <= 3600  # uploads do not stay


def test_serve_does_not_import_a_model_folders_unknown_code_without_trust_remote_code(space_model, tmp_path):
    import json
    import shutil

    from saerad.cli import main

    marker = tmp_path / "ran"
    variants = {}
    for name in ("evil-module", "edited-modeling", "other-repo", "subfolder"):
        folder = tmp_path / name
        shutil.copytree(space_model, folder)
        variants[name] = folder
    config = json.loads((space_model / "config.json").read_text())
    (variants["evil-module"] / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (variants["evil-module"] / "config.json").write_text(json.dumps(
        {**config, "auto_map": {**config["auto_map"], "AutoModel": "evil.SAERadModel"}}))
    with open(variants["edited-modeling"] / "modeling_saerad.py", "a") as f:
        f.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    (variants["other-repo"] / "preprocessor_config.json").write_text(json.dumps(
        {"auto_map": {"AutoImageProcessor": "someone/else--proc.P"}}))
    (variants["subfolder"] / "pkg").mkdir()
    (variants["subfolder"] / "pkg" / "modeling_saerad.py").write_text("import os\n")
    for name, folder in variants.items():
        assert main(["serve", "--model", str(folder)]) == 2, name
        assert not marker.exists() and "saerad_space_app" not in sys.modules, name
    from saerad.generate import check_remote_code

    check_remote_code(str(space_model))  # saerad's own remote code: served without asking


def test_bad_uploads_fail_in_a_sentence_naming_the_file(server, tmp_path):
    from gradio_client import handle_file

    _, client, _ = server
    junk = tmp_path / "scan of patient.png"
    junk.write_bytes(b"this is not an image" * 10)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(junk)), api_name="/report")
    message = str(err.value)
    assert "scan of patient.png: not an image" in message and "<bytes>" not in message
    tiny = xray(tmp_path / "tiny.png", (20, 20))
    with pytest.raises(Exception, match="tiny.png: 20x20 pixels is smaller"):
        client.predict(handle_file(str(tiny)), api_name="/report")
    text, _ = client.predict(handle_file(str(xray(tmp_path / "ok.png"))), api_name="/report")  # and the next works
    assert text.startswith("FINDINGS")


def test_a_dicom_without_its_preamble_is_read(server, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from gradio_client import handle_file
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 64, 64, 1, 16, 12, 11
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.PixelData = (np.random.default_rng(1).integers(0, 4096, (64, 64), dtype=np.uint16)).tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False)  # no preamble, no DICM
    path = tmp_path / "upload"  # and no suffix
    path.write_bytes(buffer.getvalue())
    assert buffer.getvalue()[128:132] != b"DICM"
    text, _ = server[1].predict(handle_file(str(path)), api_name="/report")
    assert text.startswith("FINDINGS")


def test_uploads_over_the_limit_are_refused_before_they_reach_disk(server, tmp_path):
    import httpx

    _, _, port = server
    big = b"0" * ((inference.MAX_UPLOAD_MB + 1) * 1024 * 1024)
    response = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files={"files": ("big.png", big)},
                          timeout=60)
    assert response.status_code == 413


def test_the_queue_waits_rather_than_refuses(server):
    demo, _, _ = server
    assert demo._queue.max_size >= 256
    assert all(fn.concurrency_limit in (None, "default", 2) for fn in demo.fns.values())


def test_the_overlay_lies_where_the_map_is_on_a_non_square_upload(space_model):
    from transformers import BitImageProcessor

    loaded = inference.Loaded.__new__(inference.Loaded)
    loaded.processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    loaded.remote = inference.remote_functions("modeling_saerad")
    assert loaded.crop_box(768, 256) == (256.0, 0.0, 512.0, 256.0)
    assert loaded.crop_box(256, 768) == (0.0, 256.0, 256.0, 512.0)
    saliency = np.zeros((32, 32), dtype=np.float32)
    saliency[20:28, 4:8] = 1  # lower left of the crop
    image = Image.new("L", (768, 256), 0)
    red = np.asarray(loaded.overlay(image, saliency, 1.0)).astype(float)[..., 0]
    ys, xs = np.nonzero(red > 128)
    assert 256 + 4 * 8 <= xs.min() and xs.max() < 256 + 8 * 8 + 8 and 20 * 8 - 8 <= ys.min() and ys.max() < 28 * 8 + 8


def test_a_finding_at_a_known_place_is_overlaid_there_on_a_non_square_image():
    """The brightness model (tests/test_localize.py) looks exactly where the image is bright."""
    from test_localize import _brightness_model
    from transformers import BitImageProcessor

    loaded = inference.Loaded.__new__(inference.Loaded)
    loaded.model = _brightness_model()
    loaded.processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                         image_mean=[0, 0, 0], image_std=[1, 1, 1])
    loaded.remote = inference.remote_functions(type(loaded.model).__module__)
    pixels = np.zeros((256, 768), dtype=np.uint8)
    pixels[128:, 420:500] = 255  # the patient's left lower zone of the part the model sees
    image = Image.fromarray(pixels)
    saliency = loaded.feature_map(image, 0)
    red = np.asarray(loaded.overlay(image, saliency, 1.0)).astype(float)
    mass = np.clip(red[..., 0] - red[..., 1], 0, None)
    xs = np.arange(768)[None, :].repeat(256, 0)
    assert mass.sum() > 0 and 400 <= (mass * xs).sum() / mass.sum() <= 520
    assert mass[:, :256].sum() == 0 and mass[:, 512:].sum() == 0  # nothing on the padding the model never saw


def test_descriptions_reach_the_page_as_text(space_model):
    demo = app.build_demo(str(space_model))
    table = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "dictionary")
    assert all(kind in ("str", "number") for kind in (table.datatype if isinstance(table.datatype, list)
                                                      else [table.datatype]))
    search = next(fn.fn for fn in demo.fns.values() if fn.fn.__name__ == "search")
    rows = search("bold", "AUROC")
    assert rows and rows[0][1] == "<b>bold</b> **stars** [link](http://x)."  # a whole sentence, read literally
    assert not any(isinstance(b, (gr.HTML, gr.Markdown)) and "bold" in str(getattr(b, "value", ""))
                   for b in demo.blocks.values())


def test_saerad_serve_runs_the_space_app(space_model, tmp_path):
    import subprocess
    import time

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "saerad", "serve", "--model", str(space_model), "--port",
                               str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from gradio_client import Client, handle_file

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                assert server.poll() is None, server.stdout.read()
                time.sleep(1)
        text, _ = client.predict(handle_file(str(xray(tmp_path / "x.png"))), api_name="/report")
        assert text.startswith("FINDINGS")
    finally:
        server.terminate()
        server.wait(30)


def test_the_upload_preview_and_sentence_overlay_in_the_page_functions(space_model, tmp_path):
    demo = app.build_demo(str(space_model))
    fns = {fn.fn.__name__: fn.fn for fn in demo.fns.values()}
    preview, image, waiting = fns["on_preview"](str(xray(tmp_path / "wide.png", (300, 100))))
    assert preview["value"].size == (300, 100) and "300 x 100" in preview["alt_text"] and waiting  # before the report
    outputs = fns["on_report"](image)
    report, sentences, state = outputs[:3]
    assert report.startswith("FINDINGS")
    heat, where, features, _ = fns["on_sentence"](0, 0.5, state)
    assert heat["value"].size == (300, 100) and heat["alt_text"] and "Its map lies" in where and "Why:" in features
    off = [c[1] for c in outputs[5]["choices"]]
    assert fns["on_whatif"](off, state) != report  # every written feature off: another report


def test_the_space_takes_its_helpers_from_the_model_folders_own_modules(space_model):
    loaded = inference.Loaded(str(space_model))
    package = type(loaded.model).__module__.rpartition(".")[0]
    assert package.startswith("transformers_modules")
    modules = {name: getattr(loaded.remote, name).__module__ for name in ("load_image", "map_side", "why_empty")}
    assert modules == {"load_image": f"{package}.image_processing_saerad", "map_side": f"{package}.localization_saerad",
                       "why_empty": f"{package}.composition_saerad"}


def test_sides_are_the_patients_and_a_contradicting_map_is_named():
    import words

    assert "patient's left" in words.map_sentence("left") and "image's right" in words.map_sentence("left")
    assert "patient's right" in words.map_sentence("right")
    assert words.side_conflict("There are small bilateral pleural effusions.", "left")  # the sentence
    assert words.side_conflict("There is a left base opacity.", "right")
    assert words.side_conflict("There is biapical scarring.", "right")
    assert words.side_conflict("There is a left base opacity.", "left") is None
    assert words.side_conflict("There is a left base opacity.", "bilateral") is None  # the map spans that side too
    assert words.side_conflict("The heart is normal in size.", "right") is None  # no side named
    assert words.side_conflict("Right pleural effusion.", "central") is None
    import views

    dropped = {"text": "Pleural effusion.", "stated_text": "Right pleural effusion.", "side": "left",
               "side_check": "dropped"}  # a composer that drops contradicted side words keeps what they said
    from html import unescape

    assert "Side words dropped" in views.side_note(dropped) and "patient's left" in unescape(views.side_note(dropped))
    assert "Side disagrees" in views.side_note({"text": "Right pleural effusion.", "side": "left"})
    assert "conflict" not in views.side_note({"text": "Right pleural effusion.", "side": "right"})


def test_omissions_read_in_words_never_as_settings():
    import words

    cases = [("low_score", "score 0.64 below min_feature_score 0.75"), ("no_description", "no description"),
             ("max_features", "beyond max_report_features=15"), ("contradicted", "contradicted by stronger feature 7"),
             (None, "below min_activation 0.5"), (None, None)]
    for code, reason in cases:
        text = words.omission(code, reason, False, 0.75, 15, 0.64)
        assert text.startswith("Not written") and "_" not in text and text.endswith("."), text
    assert "#7" in words.omission("contradicted", "contradicted by stronger feature 7", False, 0.75, 15)
    assert "(AUROC 0.64, below the 0.75 the model requires)" in words.omission(
        "low_score", "score 0.64 below min_feature_score 0.75", False, 0.75, 15, 0.64)
    assert "AUROC 0.74, below the 0.75" in words.omission("low_score", "score 0.7496", False, 0.75, 15, 0.7496)


def test_one_format_per_number_and_descriptions_as_whole_sentences():
    import words

    assert words.activation(24.009) == words.activation(24.01) == "24.0"
    assert words.activation(15.22) == "15.2" and words.activation(36.749) == "36.7"
    assert words.auroc(0.64) == words.auroc(0.6400001) == words.auroc(0.6499) == "0.64" and words.auroc(0.81) == "0.81"
    assert words.frequency(0.08) == "8.0%"
    assert words.whole_sentences("Calcified right lower lobe granuloma The lungs are normally inflated") == \
        "Calcified right lower lobe granuloma. The lungs are normally inflated."
    assert words.whole_sentences("no pneumothorax.") == "No pneumothorax."


def test_the_model_is_named_by_folder_or_repo_never_by_its_path(space_model):
    import words

    info = words.model_info(str(space_model))
    assert info["name"] == space_model.name and str(space_model.parent) not in str(info)
    (space_model / "saerad_build.json").write_text('{"dataset": "iu-phantom", "d_sae": 64, "backbone": "tiny", '
                                                   '"training_metrics": {"n": 2761}}')
    try:
        assert "learnt from 2,761 training images of iu-phantom" in words.model_info(str(space_model))["learnt"]
    finally:
        (space_model / "saerad_build.json").unlink()
    assert words.model_info("org/name")["url"] == "https://huggingface.co/org/name"  # offline: named, linked


def test_the_overlay_outlines_the_crop_and_tints_nothing_outside_the_map(space_model):
    from transformers import BitImageProcessor

    loaded = inference.Loaded.__new__(inference.Loaded)
    loaded.processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    loaded.remote = inference.remote_functions("modeling_saerad")
    saliency = np.full((32, 32), 0.1, dtype=np.float32)  # a Grad-CAM floor...
    saliency[20:28, 4:8] = 1  # ...under one finding
    out = np.asarray(loaded.overlay(Image.new("L", (768, 256), 90), saliency, 1.0)).astype(int)
    cyan = (out[..., 0] < 60) & (out[..., 1] > 150) & (out[..., 2] > 200)
    ys, xs = np.nonzero(cyan)
    assert xs.min() >= 254 and xs.max() <= 513 and cyan[:, 256:260].sum() > 50  # the box the model saw, dashed
    tinted = (out[..., 0] != out[..., 1]) & ~cyan
    ys, xs = np.nonzero(tinted)
    assert 256 + 4 * 8 - 8 <= xs.min() and xs.max() < 256 + 8 * 8 + 8  # only under the finding, not the floor
    square = np.asarray(loaded.overlay(Image.new("L", (256, 256), 90), saliency, 1.0)).astype(int)
    assert not ((square[..., 0] < 60) & (square[..., 2] > 200)).any()  # the whole upload seen: no box


def test_exemplar_captions_only_where_the_data_allow(tmp_path):
    from saerad.hub import captions_allowed

    assert captions_allowed("iu-phantom") and captions_allowed("imagefolder:cxr")
    assert not captions_allowed("mimic-cxr:files") and not captions_allowed(None)
    folder = tmp_path / "exemplars"
    folder.mkdir()
    (folder / "captions.json").write_text('{"7": "Made-up line."}')
    assert inference._captions(folder) == {"7": "Made-up line."} and inference._captions(None) == {}


def test_a_sentences_features_are_grouped_by_description_with_why_they_belong():
    from types import SimpleNamespace

    import views

    finding = [{"label": "Pleural Effusion", "status": "positive", "laterality": "left"}]
    features = {1: {"description": "Left effusion", "findings": finding, "score": 0.8123, "max_activation": 40.0},
                2: {"description": "Left effusion.", "findings": finding, "score": 0.9},
                3: {"description": "Fluid at the left base.", "findings": finding, "score": 0.77}}
    loaded = SimpleNamespace(features=features, captions={}, thumbnail=lambda e: None)
    html = views.sentence_features(loaded, {"text": "Left effusion.", "section": "findings", "feature_ids": [1, 2, 3],
                                            "activations": [24.009, 15.22, 5.0]})
    assert "2 features described as “Left effusion.”" in html and "1 feature described as “Fluid" in html
    assert "Its description holds this sentence (finding: pleural effusion (left))" in html
    assert "same finding as this sentence (pleural effusion (left)), so the two were merged" in html
    assert "24.0 of 40.0" in html and "15.2" in html and "0.81" in html and "AUROC: how well" in html
