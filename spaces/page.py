"""The page's layout: the header naming the model, one builder per tab, and the CSS and script that make it read on
a desk and on a phone (columns that fit, the overlay next to the sentence list, one Tab stop and arrow keys for the
sentences)."""

from __future__ import annotations

from html import escape
from types import SimpleNamespace

import gradio as gr

import views
from inference import MAX_UPLOAD_MB

CSS = """
#sentences .wrap { flex-direction: column; align-items: stretch; gap: 4px; }
#sentences label { width: 100%; }
#sentences input:focus-visible { outline: 3px solid #0b63ce; outline-offset: 2px; }
.conflict { color: #8a1c00; font-weight: 600; }
.scale { display: flex; align-items: center; gap: 8px; font-size: 0.85em; }
.scale .bar { flex: 1; height: 12px; border: 1px solid #888; background: linear-gradient(90deg, #808080, #ff0000); }
.scale-note, .means, .note { font-size: 0.85em; color: #555; }
.group table, #where table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.group th, .group td { text-align: left; padding: 2px 6px; border-bottom: 1px solid #ddd; }
.exemplars { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 12px; }
.exemplars figure { margin: 0; }
.exemplars img { width: 100%; height: auto; object-fit: contain; image-rendering: auto; background: #000; }
.exemplars figcaption { font-size: 0.85em; }
ol.bars { list-style: none; padding: 0; margin: 0; }
ol.bars li { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 1fr) 3.5em; gap: 6px; align-items: center;
             font-size: 0.85em; margin: 2px 0; }
ol.bars .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
ol.bars .track { background: #eee; height: 10px; }
ol.bars .fill { display: block; background: #c0392b; height: 10px; }
ol.bars .value { text-align: right; }
.no-matches { font-weight: 600; }
#dictionary table, #active table { table-layout: fixed; width: 100%; }
@media (max-width: 640px) {
  #sentences .wrap { max-height: 260px; overflow-y: auto; flex-wrap: nowrap; }
  #whatif-row, #feature-row { flex-direction: column; }
  ol.bars li { grid-template-columns: minmax(0, 1fr) 30% 3em; }
  #dictionary th, #dictionary td, #active th, #active td { padding: 2px !important; }
  #dictionary .cell-wrap, #active .cell-wrap { padding: 2px !important; }
  #dictionary span, #active span { font-size: 11px !important; font-family: sans-serif !important;
                                   word-break: normal !important; overflow-wrap: normal !important; }
  #dictionary th span, #active th span { font-size: 10px !important; overflow-wrap: anywhere !important; }
  #dictionary .cell-menu-button, #active .cell-menu-button { display: none; }
}
"""

# Gradio names each radio input on its own, so the browser sees ten groups: one name makes the sentences one group
# (one Tab stop, arrow keys move and select), and is set again whenever Gradio redraws the list.
JS = """
() => {
  const group = () => document.querySelectorAll('#sentences input[type=radio]').forEach((input) => {
    if (input.name !== 'sentence') input.name = 'sentence';
  });
  new MutationObserver(group).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                        attributeFilter: ['name']});
  group();
  document.addEventListener('click', (event) => {  // the header's card link opens the card's accordion
    if (!event.target.closest("a[href='#model-card']")) return;
    const card = document.getElementById('model-card');
    const toggle = card && card.querySelector('button, .label-wrap');
    if (toggle && !card.querySelector('.prose')?.offsetParent) toggle.click();
  });
}
"""


def header(info: dict) -> None:
    """The model by its repo id or folder name, what it learnt from, and a link to its card."""
    link = info["url"] or ("#model-card" if info["card"] else None)
    title = f" — {escape(info['title'])}" if info.get("title") else ""
    card = f"<a href='{escape(link)}'>Read its model card</a>." if link else "(Its folder holds no model card.)"
    gr.HTML(f"<h1>SAE-Rad: interpretable chest X-ray reports</h1><p>Every sentence names the sparse-autoencoder "
            f"features that wrote it; select one to see them and where they look. <strong>Not for clinical use."
            f"</strong></p><p id='model-name'>Model: <strong>{escape(info['name'])}</strong>{title}. "
            f"{escape(info['learnt'])} {card}</p>", elem_id="header")
    if info["card"] and not info["url"]:
        with gr.Accordion("Model card", open=False, elem_id="model-card"):
            gr.Markdown(info["card"], sanitize_html=True)


def report_tab(examples: list) -> SimpleNamespace:
    """Upload and preview, the report, its sentences (one Tab stop) with the chosen one's overlay right below."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            upload = gr.File(label=f"Chest X-ray (PNG, JPEG or DICOM, up to {MAX_UPLOAD_MB} MB)",
                             file_types=[".png", ".jpg", ".jpeg", ".dcm", ".dicom"], elem_id="upload")
            preview = gr.Image(label="Uploaded image", type="pil", interactive=False, elem_id="preview",
                               alt_text="No image uploaded yet", buttons=["fullscreen"])
            if examples:
                gr.Examples(examples, inputs=upload, label="Example phantoms (drawn, not real patients)")
            familiarity = gr.Markdown(visible=False, elem_id="familiarity")  # the warning, above the report
            report = gr.Textbox(label="Report", lines=6, interactive=False, elem_id="report")
        with gr.Column(scale=3, min_width=300):
            sentence = gr.Radio(label="Sentences: choose one (arrow keys move the choice)", choices=[],
                                elem_id="sentences")
            heat = gr.Image(label="Where the chosen sentence's features look", type="pil", interactive=False,
                            elem_id="overlay", alt_text="No sentence chosen yet", buttons=["fullscreen"])
            gr.HTML(views.SCALE, elem_id="scale")
            opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Overlay opacity", elem_id="opacity")
            where = gr.HTML(elem_id="where")
    features = gr.HTML(elem_id="sentence-features")
    exemplars = gr.HTML(elem_id="exemplars")
    return SimpleNamespace(upload=upload, preview=preview, report=report, familiarity=familiarity, sentence=sentence,
                           opacity=opacity,
                           heat=heat, where=where, features=features, exemplars=exemplars)


def features_tab() -> SimpleNamespace:
    """The image's active features with what the report did with each, their bars, the what-if switches (one per
    description) and one feature opened."""
    active = gr.Dataframe(headers=["id", "description", "activation", "AUROC", "fires on", "in the report"],
                          label="Active features, strongest first", interactive=False, wrap=True, elem_id="active",
                          column_widths=["8%", "27%", "17%", "14%", "13%", "21%"])
    bars = gr.HTML(elem_id="bars")
    with gr.Row(elem_id="whatif-row"):
        switch = gr.CheckboxGroup(label="Switch a description off (what-if report)", choices=[], elem_id="switch")
        whatif = gr.Textbox(label="What-if report", lines=6, interactive=False, elem_id="whatif")
    pick = gr.Dropdown(label="Open a feature (including those that fired but wrote nothing)", choices=[],
                       elem_id="pick")
    with gr.Row(equal_height=False, elem_id="feature-row"):
        heat = gr.Image(label="Where it looks", type="pil", interactive=False, elem_id="feature-overlay",
                        alt_text="No feature opened yet", buttons=["fullscreen"])
        text = gr.HTML(elem_id="feature")
    exemplars = gr.HTML(elem_id="feature-exemplars")
    return SimpleNamespace(active=active, bars=bars, switch=switch, whatif=whatif, pick=pick, heat=heat, text=text,
                           exemplars=exemplars)


def dictionary_tab(rows: list, count: str) -> SimpleNamespace:
    """The searchable feature dictionary, with how many match."""
    with gr.Row():
        query = gr.Textbox(label="Search descriptions, sections, findings or ids", elem_id="query")
        sort = gr.Dropdown(["AUROC", "frequency", "id"], value="AUROC", label="Sort by", elem_id="sort")
    count = gr.HTML(count, elem_id="dictionary-count")
    table = gr.Dataframe(value=rows, headers=["id", "description", "section", "AUROC", "fires on"],
                         interactive=False, wrap=True, elem_id="dictionary",
                         column_widths=["9%", "44%", "16%", "15%", "16%"])
    return SimpleNamespace(query=query, sort=sort, count=count, table=table)
