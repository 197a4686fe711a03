"""SAE-Rad Space: upload a chest X-ray, read a report whose every sentence links to the features that wrote it.

    SAERAD_MODEL=ORG/NAME python app.py [--port 7860]      (or `saerad serve --model FOLDER_OR_ID`)

Needs only registry packages (requirements.txt) and the model repo: the model's own generate, explain and localize.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr

import page
import words
from handlers import Handlers
from inference import MAX_UPLOAD_MB, Loaded, share_cpus

MODEL = os.environ.get("SAERAD_MODEL", "ORG/NAME")  # `saerad push --space-id` writes the model's repo id here
CONCURRENCY = int(os.environ.get("SAERAD_CONCURRENCY", "2"))  # requests computed at once: bounds memory
QUEUE_SIZE = 512  # requests waiting their turn: they wait rather than being refused
EXAMPLES = sorted(str(p) for p in (Path(__file__).parent / "examples").glob("*.png"))
PRIVATE = {"api_visibility": "private"}  # the page's own events; the API is /report and /explain
# Uploads (a DICOM keeps its PatientName) and the images made from them live in Gradio's cache: every 5 minutes,
# whatever is older than 10 minutes is deleted, and all of it when the server stops (docs/space.md).
DELETE_CACHE = (300, 600)


def build_demo(model_id: str) -> gr.Blocks:
    """The whole Space around one model: report, features and dictionary tabs, and the /report and /explain API."""
    h = Handlers(Loaded(model_id))
    with gr.Blocks(title="SAE-Rad", delete_cache=DELETE_CACHE) as demo:
        page.header(words.model_info(model_id))
        state, image = gr.State(), gr.State()
        with gr.Tab("Report"):
            r = page.report_tab(EXAMPLES)
        with gr.Tab("Features"):
            f = page.features_tab()
        with gr.Tab("Dictionary"):
            d = page.dictionary_tab(h.search("", "AUROC"), h.count("", "AUROC"))
        with gr.Row(visible=False):  # the API's own inputs and outputs
            api_image, api_feature = gr.File(), gr.Number()  # no rounding: a fraction is refused, not rounded
            api_text, api_json, api_info, api_overlay = gr.Textbox(), gr.JSON(), gr.JSON(), gr.Image(type="pil")
            api_report_button, api_explain_button = gr.Button("report"), gr.Button("explain")

        r.upload.change(h.on_preview, r.upload, [r.preview, image, r.report], **PRIVATE).then(
            h.on_report, image, [r.report, r.sentence, state, f.active, f.bars, f.switch, f.pick, r.features,
                                 r.where, r.exemplars, r.heat, r.familiarity], **PRIVATE)
        gr.on([r.sentence.change, r.opacity.change], h.on_sentence, [r.sentence, r.opacity, state],
              [r.heat, r.where, r.features, r.exemplars], trigger_mode="always_last", **PRIVATE)
        f.pick.change(h.on_feature, [f.pick, r.opacity, state], [f.heat, f.text, f.exemplars], **PRIVATE)
        f.switch.change(h.on_whatif, [f.switch, state], f.whatif, **PRIVATE)
        gr.on([d.query.change, d.sort.change], h.search, [d.query, d.sort], d.table, **PRIVATE)
        gr.on([d.query.change], h.count, [d.query, d.sort], d.count, **PRIVATE)
        api_report_button.click(h.api_report, api_image, [api_text, api_json], api_name="report")
        api_explain_button.click(h.api_explain, [api_image, api_feature], [api_info, api_overlay],
                                 api_name="explain")
    return demo


def launch(demo: gr.Blocks, port: int | None = None, host: str | None = None, **kwargs):
    """Serve with the Space's limits (uploads capped before they reach disk, a bounded number of requests computed
    at once, each with its share of the CPUs, the rest queued) and the page's style and script."""
    share_cpus(CONCURRENCY)
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY).launch(
        server_port=port, server_name=host, max_file_size=f"{MAX_UPLOAD_MB}mb", css=page.CSS, js=page.JS, **kwargs)


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the SAE-Rad Space.")
    parser.add_argument("--model", default=MODEL, help="model folder or hub id (default: $SAERAD_MODEL)")
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860)")
    parser.add_argument("--host", default=None, help="address to listen on (default: Gradio's)")
    args = parser.parse_args(argv)
    launch(build_demo(args.model), args.port, args.host)


if __name__ == "__main__":
    main()
