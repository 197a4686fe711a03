"""The Gradio Space, built from here so that `spaces/app.py` stays thin: one builder per tab."""

from __future__ import annotations

import html
import re
from typing import Any, Optional

import numpy as np

# Limits of the public demo, in one place.
MAX_UPLOAD_MB = 20
MAX_SENTENCES = 30
MAX_EXEMPLARS = 8
QUEUE_SIZE = 16


def overlay(image: Any, saliency: np.ndarray) -> Any:
    """The radiograph in gray with the saliency in red."""
    from PIL import Image

    gray = np.asarray(image.convert("L").resize(saliency.shape[::-1]), dtype=np.float32) / 255
    rgb = np.stack([np.clip(gray + saliency, 0, 1), gray * (1 - 0.5 * saliency), gray * (1 - 0.5 * saliency)], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def plain_markdown(text: str) -> str:
    """A repo's text shown as itself in Markdown: HTML escaped, Markdown's markup characters backslashed."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|>~])", r"\\\1", html.escape(str(text), quote=False))


def report_html(result: dict, features: dict) -> str:
    """Report sentences, each with links to the features that wrote it; for an empty report, why it is empty."""
    from .generate import why_empty

    if not result["sentences"]:
        return f"<p>{html.escape(why_empty(result))}</p>"
    parts = []
    for part in ("findings", "impression"):
        sentences = [s for s in result["sentences"] if s["report_section"] == part][:MAX_SENTENCES]
        items = []
        for s in sentences:
            refs = " ".join(f'<code title="{html.escape(features[f]["description"])} (activation {a:.2f})">#{f}</code>'
                            for f, a in zip(s["feature_ids"], s["activations"]))
            items.append(f"<li>{html.escape(s['text'])} <small>{refs}</small></li>")
        parts.append(f"<h3>{part.upper()}</h3><ul>{''.join(items) or '<li>(nothing)</li>'}</ul>")
    return "".join(parts)


def build_report_tab(model: Any, processor: Any) -> None:
    """Upload a PNG, JPEG or DICOM; read the report; pick a sentence's feature to see its exemplars and saliency."""
    import gradio as gr

    from .data.images import load_image
    from .generate import processed_image

    features = model.features
    with gr.Tab("Report"):
        with gr.Row():
            upload = gr.File(label=f"Chest X-ray (PNG, JPEG or DICOM, up to {MAX_UPLOAD_MB} MB)", type="binary")
            with gr.Column():
                report = gr.HTML()
                choice = gr.Dropdown(label="Feature behind a sentence", choices=[], interactive=True)
        with gr.Row():
            detail = gr.Markdown()
            heat = gr.Image(label="Where the feature looks", type="pil")
        state = gr.State()

        def run(data: Optional[bytes]):
            if data is None:
                return "", gr.update(choices=[], value=None), None
            if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
                raise gr.Error(f"the file is larger than {MAX_UPLOAD_MB} MB")
            try:
                image = load_image(data)
            except (ValueError, FileNotFoundError) as err:
                raise gr.Error(str(err)) from None
            pixels = processor(images=image, return_tensors="pt")["pixel_values"]
            out = model.generate(pixels, return_dict_in_generate=True)
            result = {"sentences": out.sentences[0], "omitted": out.omitted[0]}
            ids = sorted({f for s in out.sentences[0] for f in s["feature_ids"]})
            labels = [(f"#{f}: {features[f]['description'][:60]}", f) for f in ids]
            # the maps cover the processed (resized, centre-cropped) image: overlay them on that, not the upload
            return (report_html(result, features), gr.update(choices=labels, value=None),
                    (processed_image(pixels[0], processor), pixels))

        def explain(feature_id: Optional[int], held):
            if feature_id is None or held is None:
                return "", None
            f = features[int(feature_id)]
            exemplars = ", ".join(plain_markdown(e) for e in f["exemplars"][:MAX_EXEMPLARS]) or "none"
            text = (f"**Feature #{f['id']}** ({f['section']}): {plain_markdown(f['description'])}\n\n"
                    f"Interpretability AUROC: {f.get('score') if f.get('score') is not None else 'n/a'}; "
                    f"fires on {100 * (f.get('frequency') or 0):.1f}% of training images.\n\n"
                    f"Top training exemplars: {exemplars}")
            image, pixels = held
            return text, overlay(image, model.localize(pixels, feature_ids=[int(feature_id)])[0, 0].numpy())

        upload.change(run, inputs=upload, outputs=[report, choice, state])
        choice.change(explain, inputs=[choice, state], outputs=[detail, heat])


def build_features_tab(model: Any) -> None:
    """Browse the feature dictionary."""
    import gradio as gr

    rows = [[f["id"], f["section"], f["description"], f.get("score"), f.get("frequency")]
            for f in model.features.values() if f["description"]]
    with gr.Tab("Features"):
        gr.Dataframe(value=rows, headers=["id", "section", "description", "AUROC", "frequency"], wrap=True)


def build_demo(model_id: str):
    """The whole Space: the model loaded once, then one tab per builder."""
    import gradio as gr

    from .generate import load_model

    model, processor = load_model(model_id)
    with gr.Blocks(title="SAE-Rad") as demo:
        gr.Markdown(f"# SAE-Rad: interpretable chest X-ray reports\nModel `{model_id}`. Every sentence names the "
                    "sparse-autoencoder features that wrote it. **Not for clinical use.**")
        build_report_tab(model, processor)
        build_features_tab(model)
    return demo
