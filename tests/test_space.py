import io

import numpy as np
import pytest
import torch
from PIL import Image

from saerad.space import overlay, report_html


def test_the_models_map_overlays_on_the_processed_image(model):
    pixels = torch.randn(1, 3, 32, 32)
    out = model(pixels)
    feature = int(out.feature_activations[0].argmax())
    saliency = model.localize(pixels, feature_ids=[feature])[0, 0].numpy()
    assert saliency.shape == (32, 32) and saliency.max() == pytest.approx(1.0) and saliency.min() >= 0
    assert overlay(Image.new("L", (64, 64), 100), saliency).size == (32, 32)


def test_report_html_links_every_sentence_to_its_features(model):
    out = model.generate(torch.randn(1, 3, 32, 32), return_dict_in_generate=True)
    page = report_html({"sentences": out.sentences[0]}, model.features)
    assert "<h3>FINDINGS</h3>" in page
    for sentence in out.sentences[0]:
        for f in sentence["feature_ids"]:
            assert f"#{f}</code>" in page


def test_report_html_says_why_a_report_is_empty():
    page = report_html({"sentences": [], "omitted": [{"feature_id": 3, "activation": 0.4, "reason": "no description",
                                                  "code": "no_description"}]},
                       {})
    assert page == "<p>(no report: 1 feature fired, 1 without a description)</p>"


def test_the_space_builds_and_answers_an_upload(model_dir):
    gr = pytest.importorskip("gradio")
    from saerad.space import build_demo

    demo = build_demo(str(model_dir))
    assert isinstance(demo, gr.Blocks)
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(buf, format="PNG")
    run = next(fn.fn for fn in demo.fns.values() if fn.fn.__name__ == "run")
    page, choices, held = run(buf.getvalue())
    assert "FINDINGS" in page and held is not None
    explain = next(fn.fn for fn in demo.fns.values() if fn.fn.__name__ == "explain")
    text, heat = explain(choices["choices"][0][1], held)
    assert text.startswith("**Feature #") and heat.size == (32, 32)
