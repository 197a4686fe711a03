"""SAE-Rad Space: upload a chest X-ray, read a report whose every sentence links to the features that wrote it.

    SAERAD_MODEL=ORG/NAME python app.py [--port 7860]      (or `saerad serve --model FOLDER_OR_ID`)

Needs only registry packages (requirements.txt) and the model repo: the model's own generate, explain and localize.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from inference import MAX_UPLOAD_MB, Loaded, display_image, familiarity_notice, public_report

MODEL = os.environ.get("SAERAD_MODEL", "ORG/NAME")  # `saerad push --space-id` writes the model's repo id here
CONCURRENCY = int(os.environ.get("SAERAD_CONCURRENCY", "2"))  # requests computed at once: bounds memory
QUEUE_SIZE = 512  # requests waiting their turn: they wait rather than being refused
EXAMPLES = sorted(str(p) for p in (Path(__file__).parent / "examples").glob("*.png"))
MAX_EXEMPLARS = 8
MAX_BARS = 20  # the bar chart shows the strongest; the table lists them all
PRIVATE = {"api_visibility": "private"}  # the page's own events; the API is /report and /explain


def _score(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _frequency(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


class Handlers:
    """The page's and the API's event handlers around one loaded model."""

    def __init__(self, loaded: Loaded):
        self.loaded, self.features = loaded, loaded.features

    def read(self, path: str | None):
        if path is None:
            raise gr.Error("No image: upload a PNG, JPEG or DICOM file.")
        try:
            return self.loaded.read_upload(path)
        except ValueError as err:
            raise gr.Error(str(err)) from None

    def feature_row(self, fid: int) -> list:
        f = self.features.get(int(fid), {})
        return [int(fid), f.get("description") or "(no description)", f.get("section") or "",
                _score(f.get("score")), _frequency(f.get("frequency"))]

    def exemplars(self, fids: list) -> tuple:
        """Thumbnails of the features' top exemplars where the model folder has them, else their ids."""
        ids = []
        for fid in fids:
            for e in self.features.get(int(fid), {}).get("exemplars", [])[:MAX_EXEMPLARS]:
                if e not in ids:
                    ids.append(e)
        ids = ids[:MAX_EXEMPLARS]
        pictures = [(self.loaded.thumbnail(e), f"exemplar {e}") for e in ids if self.loaded.thumbnail(e)]
        listed = "Top training exemplars: " + (", ".join(ids) or "none")
        return gr.update(value=pictures, visible=bool(pictures)), listed

    def on_upload(self, path):
        empty = (None, "", gr.update(choices=[], value=None), None, [], pd.DataFrame(),
                 gr.update(choices=[], value=[]), gr.update(choices=[], value=None), [], "", gr.update(visible=False))
        if path is None:
            return empty
        try:
            image = self.loaded.read_upload(path)
        except ValueError as err:  # shown where the report would be, and as a toast; the page stays usable
            gr.Warning(str(err))
            return (None, f"Cannot read this upload. {err}") + empty[2:]
        result = self.loaded.report(image, explained=True)
        table = result.pop("table")
        choices = [(f"{k + 1}. [{s['section'].upper()}] {s['text']}  (features "
                    + ", ".join(f"#{f}" for f in s["feature_ids"]) + ")", k)
                   for k, s in enumerate(result["sentences"])]
        active = [[r["feature_id"], r["description"] or "(no description)", round(r["activation"], 3),
                   _score(r["score"]), _frequency(r["frequency"]),
                   "written" if r["written"] else (r["omitted_reason"] or "not written")] for r in table]
        strongest = table[:MAX_BARS]
        bars = pd.DataFrame({"feature": [f"#{r['feature_id']}" for r in strongest],
                             "activation": [round(r["activation"], 3) for r in strongest]})
        feature_choices = [(f"#{r['feature_id']}: {(r['description'] or '(no description)')[:60]}", r["feature_id"])
                           for r in table]
        switchable = [c for c, r in zip(feature_choices, table) if r["written"]]
        return (display_image(image), result["report"] or self.loaded.remote.why_empty(result),
                gr.update(choices=choices, value=None), {"image": image, "result": result}, active, bars,
                gr.update(choices=switchable, value=[]), gr.update(choices=feature_choices, value=None),
                [], "", gr.update(value=familiarity_notice(result), visible=bool(familiarity_notice(result))))

    def on_sentence(self, index, opacity, state):
        if index is None or not state:
            return None, [], gr.update(value=[], visible=False), ""
        sentence = state["result"]["sentences"][int(index)]
        pictures, ids = self.exemplars(sentence["feature_ids"])
        rows = [self.feature_row(f) + [round(a, 3)] for f, a in zip(sentence["feature_ids"], sentence["activations"])]
        where = f"Its map reads: {sentence['side'] or 'nowhere (no gradient)'}. " + ids
        return self.loaded.overlay(state["image"], sentence["localization"], opacity), rows, pictures, where

    def on_feature(self, fid, opacity, state):
        if fid is None or not state:
            return None, "", gr.update(value=[], visible=False), ""
        f = self.features.get(int(fid), {})
        saliency = self.loaded.feature_map(state["image"], int(fid))
        pictures, ids = self.exemplars([fid])
        description = f.get("description") or "(no description)"
        text = (f"Feature #{int(fid)} ({f.get('section') or 'no section'}): {description}"
                f"\nHeld-out AUROC {_score(f.get('score'))}; fires on {_frequency(f.get('frequency'))} of training "
                f"images. Its map reads: {self.loaded.side(saliency) or 'nowhere'}.")
        return self.loaded.overlay(state["image"], saliency, opacity), text, pictures, ids

    def on_whatif(self, off, state):
        if not state:
            return ""
        if not off:
            return "(switch features off to read the report without them)"
        return self.loaded.whatif(state["image"], off) or "(no report without those features)"

    def search(self, query: str, sort: str):
        q = (query or "").strip().lower()
        rows = [f for f in self.features.values() if f.get("description")]
        if q:
            rows = [f for f in rows if q in f["description"].lower() or q in str(f.get("section", "")).lower()
                    or any(q in str(x.get("label", "")).lower() for x in f.get("findings") or [])
                    or q == f"#{f['id']}" or q == str(f["id"])]
        key = {"score": lambda f: -(f.get("score") or 0), "frequency": lambda f: -(f.get("frequency") or 0),
               "id": lambda f: f["id"]}[sort or "score"]
        return [self.feature_row(f["id"]) for f in sorted(rows, key=key)]

    def api_report(self, path):
        """Report text, and the sentences with their feature ids, activations and side statements."""
        result = public_report(self.loaded.report(self.read(path)))
        return result["report"], result

    def api_explain(self, path, feature_id):
        """One feature on one image: its description, scores, activation, side, exemplars, and its overlay."""
        image = self.read(path)
        if feature_id is None or not 0 <= int(feature_id) < self.loaded.model.config.d_sae:
            raise gr.Error(f"feature id must be in [0, {self.loaded.model.config.d_sae}); got {feature_id}")
        fid = int(feature_id)
        row = next((r for r in self.loaded.explain(image) if r["feature_id"] == fid), None)
        saliency = self.loaded.feature_map(image, fid)
        f = self.features.get(fid, {})
        info = {"feature_id": fid, "description": f.get("description"), "section": f.get("section"),
                "score": f.get("score"), "frequency": f.get("frequency"), "exemplars": f.get("exemplars", []),
                "activation": row["activation"] if row else 0.0, "written": bool(row and row["written"]),
                "omitted_reason": row["omitted_reason"] if row else "did not fire", "side": self.loaded.side(saliency)}
        return info, self.loaded.overlay(image, saliency, 0.6)


def _report_tab() -> SimpleNamespace:
    """Upload, preview and examples beside the report, its sentences and the selected sentence's overlay."""
    with gr.Row():
        with gr.Column():
            upload = gr.File(label=f"Chest X-ray (PNG, JPEG or DICOM, up to {MAX_UPLOAD_MB} MB)",
                             file_types=[".png", ".jpg", ".jpeg", ".dcm", ".dicom"], elem_id="upload")
            preview = gr.Image(label="Uploaded image", type="pil", interactive=False, elem_id="preview")
            if EXAMPLES:
                gr.Examples(EXAMPLES, inputs=upload, label="Example phantoms (drawn, not real patients)")
        with gr.Column():
            familiarity = gr.Markdown(visible=False, elem_id="familiarity")  # the warning, above the report
            report = gr.Textbox(label="Report", lines=8, interactive=False, elem_id="report")
            sentence = gr.Radio(label="Select a sentence", choices=[], elem_id="sentences")
            opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Overlay opacity")
            heat = gr.Image(label="Where the sentence's features look", type="pil", interactive=False,
                            elem_id="overlay")
            where = gr.Textbox(label="Side and exemplars", interactive=False, elem_id="where")
    features = gr.Dataframe(headers=["id", "description", "section", "AUROC", "frequency", "activation"],
                            label="The sentence's features", interactive=False, wrap=True,
                            elem_id="sentence-features")
    exemplars = gr.Gallery(label="Top training exemplars", columns=8, height=140, visible=False)
    return SimpleNamespace(upload=upload, preview=preview, report=report, sentence=sentence, opacity=opacity,
                           heat=heat, where=where, features=features, exemplars=exemplars, familiarity=familiarity)


def _features_tab() -> SimpleNamespace:
    """The image's active features, their bars, the what-if switches and one feature opened."""
    active = gr.Dataframe(headers=["id", "description", "activation", "AUROC", "frequency", "in the report"],
                          label="Active features, strongest first", interactive=False, wrap=True, elem_id="active")
    bars = gr.BarPlot(x="feature", y="activation", title=f"The {MAX_BARS} strongest activations", sort="-y")
    with gr.Row():
        switch = gr.CheckboxGroup(label="Switch off (what-if report)", choices=[])
        whatif = gr.Textbox(label="What-if report", lines=6, interactive=False, elem_id="whatif")
    pick = gr.Dropdown(label="Open a feature (including those that fired but wrote nothing)", choices=[])
    with gr.Row():
        heat = gr.Image(label="Where it looks", type="pil", interactive=False)
        with gr.Column():
            text = gr.Textbox(label="Feature", lines=4, interactive=False, elem_id="feature")
            ids = gr.Textbox(label="Exemplars", interactive=False)
    exemplars = gr.Gallery(label="Top training exemplars", columns=8, height=140, visible=False)
    return SimpleNamespace(active=active, bars=bars, switch=switch, whatif=whatif, pick=pick, heat=heat, text=text,
                           ids=ids, exemplars=exemplars)


def _dictionary_tab(h: Handlers) -> SimpleNamespace:
    """The searchable feature dictionary."""
    with gr.Row():
        query = gr.Textbox(label="Search descriptions, sections or findings", elem_id="query")
        sort = gr.Dropdown(["score", "frequency", "id"], value="score", label="Sort by")
    table = gr.Dataframe(value=h.search("", "score"), headers=["id", "description", "section", "AUROC", "frequency"],
                         interactive=False, wrap=True, elem_id="dictionary")
    return SimpleNamespace(query=query, sort=sort, table=table)


def build_demo(model_id: str) -> gr.Blocks:
    """The whole Space around one model: report, features and dictionary tabs, and the /report and /explain API."""
    h = Handlers(Loaded(model_id))
    with gr.Blocks(title="SAE-Rad") as demo:
        gr.Markdown("# SAE-Rad: interpretable chest X-ray reports\nEvery sentence names the sparse-autoencoder "
                    "features that wrote it; select one to see them and where they look. **Not for clinical use.**")
        gr.Textbox(value=model_id, label="Model", interactive=False, max_lines=1)
        state = gr.State()
        with gr.Tab("Report"):
            r = _report_tab()
        with gr.Tab("Features"):
            f = _features_tab()
        with gr.Tab("Dictionary"):
            d = _dictionary_tab(h)
        with gr.Row(visible=False):  # the API's own inputs and outputs
            api_image, api_feature = gr.File(), gr.Number(precision=0)
            api_text, api_json, api_info, api_overlay = gr.Textbox(), gr.JSON(), gr.JSON(), gr.Image(type="pil")
            api_report_button, api_explain_button = gr.Button(), gr.Button()

        r.upload.change(h.on_upload, r.upload, [r.preview, r.report, r.sentence, state, f.active, f.bars, f.switch,
                                                f.pick, r.features, r.where, r.familiarity], **PRIVATE)
        gr.on([r.sentence.change, r.opacity.release], h.on_sentence, [r.sentence, r.opacity, state],
              [r.heat, r.features, r.exemplars, r.where], **PRIVATE)
        f.pick.change(h.on_feature, [f.pick, r.opacity, state], [f.heat, f.text, f.exemplars, f.ids], **PRIVATE)
        f.switch.change(h.on_whatif, [f.switch, state], f.whatif, **PRIVATE)
        gr.on([d.query.change, d.sort.change], h.search, [d.query, d.sort], d.table, **PRIVATE)
        api_report_button.click(h.api_report, api_image, [api_text, api_json], api_name="report")
        api_explain_button.click(h.api_explain, [api_image, api_feature], [api_info, api_overlay],
                                 api_name="explain")
    return demo


def launch(demo: gr.Blocks, port: int | None = None, host: str | None = None) -> None:
    """Serve with the Space's limits: uploads capped before they reach disk, a bounded number of requests computed
    at once, the rest queued."""
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY).launch(
        server_port=port, server_name=host, max_file_size=f"{MAX_UPLOAD_MB}mb")


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the SAE-Rad Space.")
    parser.add_argument("--model", default=MODEL, help="model folder or hub id (default: $SAERAD_MODEL)")
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860)")
    parser.add_argument("--host", default=None, help="address to listen on (default: Gradio's)")
    args = parser.parse_args(argv)
    launch(build_demo(args.model), args.port, args.host)


if __name__ == "__main__":
    main()
