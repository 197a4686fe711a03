"""The page's and the API's event handlers around one loaded model."""

from __future__ import annotations

import gradio as gr

import views
import words
from inference import Loaded, display_image, familiarity_notice, public_report


def feature_index(value, d_sae: int) -> int:
    """A feature id as /explain takes it: an integer in [0, d_sae) (3.5 is not feature 4, nor True feature 1)."""
    whole = isinstance(value, int) or isinstance(value, float) and value.is_integer()
    if isinstance(value, bool) or not whole or not 0 <= int(value) < d_sae:
        raise gr.Error(f"feature id must be an integer in [0, {d_sae}); got {value!r}")
    return int(value)


class Handlers:
    """Upload (preview first, then the report), sentence and feature selection, what-if, search, and the API."""

    def __init__(self, loaded: Loaded):
        self.loaded, self.features = loaded, loaded.features
        config = loaded.model.config
        self.threshold, self.max_features = config.min_feature_score, config.max_report_features

    def read(self, path: str | None):
        if path is None:
            raise gr.Error("No image: upload a PNG, JPEG or DICOM file.")
        try:
            return self.loaded.read_upload(path)
        except ValueError as err:
            raise gr.Error(str(err)) from None

    def on_preview(self, path):
        """The upload shown at once (before the report is computed), or why it cannot be read."""
        if path is None:
            return gr.update(value=None), None, ""
        try:
            image = self.loaded.read_upload(path)
        except ValueError as err:  # shown where the report would be, and as a toast; the page stays usable
            gr.Warning(str(err))
            return gr.update(value=None), None, f"Cannot read this upload. {err}"
        alt = f"The uploaded chest X-ray, {image.width} x {image.height} pixels"
        return gr.update(value=display_image(image), alt_text=alt), image, "Writing the report…"

    def on_report(self, image):
        """The report, its sentences to choose from, and the Features tab filled in."""
        if image is None:
            return (gr.update(), gr.update(choices=[], value=None), None, [], "", gr.update(choices=[], value=[]),
                    gr.update(choices=[], value=None), "", "", "", gr.update(value=None), gr.update(visible=False))
        result = self.loaded.report(image, explained=True)
        table = result.pop("table")
        reasons = {o["feature_id"]: (o.get("code"), o["reason"]) for o in result["omitted"]}
        for s in result["sentences"]:
            s["conflict"] = words.side_conflict(s.get("stated_text") or s["text"], s.get("side"))
        choices = [(f"{k + 1}. {s['section'].upper()}: {s['text']}"
                    + ("  ⚠ its map lies on another side" if s["conflict"] and s.get("side_check") != "dropped"
                       else "  ⚠ side words dropped: its map lies on another side" if s["conflict"] else ""), k)
                   for k, s in enumerate(result["sentences"])]
        for r in table:
            r["why"] = words.omission(*reasons.get(r["feature_id"], (None, r["omitted_reason"])), r["written"],
                                      self.threshold, self.max_features, r["score"])
        active = [[r["feature_id"], words.whole_sentences(r["description"]), words.activation(r["activation"]),
                   words.auroc(r["score"]), words.frequency(r["frequency"]), r["why"]] for r in table]
        groups: dict = {}
        for r in table:
            if r["written"]:
                groups.setdefault(words.whole_sentences(r["description"]), []).append(r["feature_id"])
        switches = [(f"{d} ({len(ids)} feature{'s' * (len(ids) != 1)}: " + ", ".join(f"#{i}" for i in ids) + ")",
                     ",".join(map(str, ids))) for d, ids in groups.items()]
        picks = [(f"#{r['feature_id']} · {words.activation(r['activation'])} · "
                  f"{words.whole_sentences(r['description'])[:60]}", r["feature_id"]) for r in table]
        report = result["report"] or self.loaded.remote.why_empty(result)
        notice = familiarity_notice(result)
        state = {"image": image, "result": result, "table": {r["feature_id"]: r for r in table}}
        written = sum(r["written"] for r in table)
        active = gr.update(value=active, label=f"{len(table)} active features, strongest first ({written} written in "
                           "the report)" if table else "No feature fired on this image")
        return (report, gr.update(choices=choices, value=None), state, active, views.bars(table),
                gr.update(choices=switches, value=[]), gr.update(choices=picks, value=None), "", "", "",
                gr.update(value=None), gr.update(value=notice, visible=bool(notice)))

    def on_sentence(self, index, opacity, state):
        """The chosen sentence's overlay, side, features (grouped by description) and exemplars."""
        if index is None or not state:
            return gr.update(value=None), "", "", ""
        sentence = state["result"]["sentences"][int(index)]
        overlay = self.loaded.overlay(state["image"], sentence["localization"], opacity)
        alt = (f"Map of sentence {int(index) + 1}: red where its features look, over the upload, inside the dashed "
               f"cyan box the model saw. {words.map_sentence(sentence.get('side'))}")
        return (gr.update(value=overlay, alt_text=alt), views.side_note(sentence),
                views.sentence_features(self.loaded, sentence), views.exemplars(self.loaded, sentence["feature_ids"],
                                                                                "sf"))

    def on_feature(self, fid, opacity, state):
        """One active feature opened: where it looks, what it says, what the report did with it, its exemplars."""
        if fid is None or not state:
            return gr.update(value=None), "", ""
        fid = int(fid)
        saliency = self.loaded.feature_map(state["image"], fid)
        side = self.loaded.side(saliency)
        row = state["table"].get(fid)
        overlay = self.loaded.overlay(state["image"], saliency, opacity)
        alt = f"Where feature #{fid} looks, in red inside the dashed cyan box the model saw. {words.map_sentence(side)}"
        return (gr.update(value=overlay, alt_text=alt),
                views.opened_feature(self.loaded, fid, row, row["why"] if row else "It did not fire.", side),
                views.exemplars(self.loaded, [fid], "of"))

    def on_whatif(self, off, state):
        if not state:
            return ""
        if not off:
            return "(switch descriptions off to read the report without their features)"
        ids = [int(i) for group in off for i in str(group).split(",") if i]
        return self.loaded.whatif(state["image"], ids) or "(no report without those features)"

    def _matches(self, query: str) -> list:
        q = (query or "").strip().lower()
        rows = [f for f in self.features.values() if f.get("description")]
        if q:
            rows = [f for f in rows if q in f["description"].lower() or q in str(f.get("section", "")).lower()
                    or any(q in str(x.get("label", "")).lower() for x in f.get("findings") or [])
                    or q == f"#{f['id']}" or q == str(f["id"])]
        return rows

    def search(self, query: str, sort: str) -> list:
        """The dictionary's rows matching `query`, sorted by `sort`."""
        key = {"AUROC": lambda f: -(f.get("score") or 0), "frequency": lambda f: -(f.get("frequency") or 0),
               "id": lambda f: f["id"]}.get(sort or "AUROC", lambda f: -(f.get("score") or 0))
        return [[f["id"], words.whole_sentences(f.get("description")), f.get("section") or "",
                 words.auroc(f.get("score")), words.frequency(f.get("frequency"))]
                for f in sorted(self._matches(query), key=key)]

    def count(self, query: str, sort: str) -> str:
        """The search's match count, or "No matches"."""
        return views.match_count(query, len(self._matches(query)), len(self._matches("")))

    def api_report(self, path):
        """Report text, and the sentences with their feature ids, activations and side statements."""
        result = public_report(self.loaded.report(self.read(path)))
        return result["report"], result

    def api_explain(self, path, feature_id):
        """One feature on one image: its description, scores, activation, side, exemplars, and its overlay."""
        fid = feature_index(feature_id, self.loaded.model.config.d_sae)
        image = self.read(path)
        row = next((r for r in self.loaded.explain(image) if r["feature_id"] == fid), None)
        saliency = self.loaded.feature_map(image, fid)
        f = self.features.get(fid, {})
        info = {"feature_id": fid, "description": f.get("description"), "section": f.get("section"),
                "score": f.get("score"), "frequency": f.get("frequency"), "exemplars": f.get("exemplars", []),
                "activation": row["activation"] if row else 0.0, "written": bool(row and row["written"]),
                "omitted_reason": row["omitted_reason"] if row else "did not fire", "side": self.loaded.side(saliency)}
        return info, self.loaded.overlay(image, saliency, 0.6)
