"""What the page shows, as HTML a reader can follow: a sentence's features grouped by description with why they
belong, a feature opened, its exemplars, the strongest activations, and the dictionary's match count. Every text from
the model folder is escaped, so a description reads literally."""

from __future__ import annotations

import base64
from html import escape
from typing import Optional

import words

MAX_EXEMPLARS = 8
MAX_BARS = 20

SCALE = ("<div class='scale' role='img' aria-label='Colour scale: no colour where the features do not look, deeper "
         "red where they look more'><span>not looked at</span><span class='bar'></span><span>looked at most</span>"
         "</div><p class='scale-note'>The dashed cyan box is the part of the upload the model saw (its centre crop); "
         "nothing is drawn outside the map.</p>")


def _data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def exemplars(loaded, fids: list, anchor: str) -> str:
    """The features' top training exemplars, large and uncropped, each captioned with its id and (where the data's
    terms allow) a sentence of its report, and linked back to the feature that brought it here."""
    seen, figures = set(), []
    for fid in fids:
        for e in loaded.features.get(int(fid), {}).get("exemplars", [])[:MAX_EXEMPLARS]:
            if e in seen or len(seen) >= MAX_EXEMPLARS:
                continue
            seen.add(e)
            line = loaded.captions.get(str(e))
            caption = f"Exemplar {escape(str(e))}" + (f": “{escape(line)}”" if line else "")
            back = f"<a href='#{anchor}-{int(fid)}'>back to feature #{int(fid)}</a>"
            thumb = loaded.thumbnail(str(e))
            picture = (f"<img src='{_data_uri(thumb)}' alt='Training image {escape(str(e))}, a top exemplar of "
                       f"feature #{int(fid)}'>" if thumb else "")
            figures.append(f"<figure>{picture}<figcaption>{caption} · {back}</figcaption></figure>")
    if not figures:
        return "<p>No training exemplars are recorded for these features.</p>"
    note = ("" if loaded.captions else "<p class='note'>Ids only: this model folder holds no line of its exemplars' "
            "reports (credentialed data, such as MIMIC-CXR, is never quoted).</p>")
    return (f"<h4>Top training exemplars ({len(figures)})</h4>{note}<div class='exemplars'>" + "".join(figures)
            + "</div>")


def _strength(act: float, f: dict) -> str:
    top = f.get("max_activation")
    return words.activation(act) + (f" of {words.activation(top)}" if top is not None else "")


def _feature_row(loaded, fid: int, act: float, anchor: str) -> str:
    f = loaded.features.get(fid, {})
    return (f"<tr id='{anchor}-{fid}'><td>#{fid}</td><td>{_strength(act, f)}</td><td>{words.auroc(f.get('score'))}</td>"
            f"<td>{words.frequency(f.get('frequency'))}</td></tr>")


def sentence_features(loaded, sentence: dict, anchor: str = "sf") -> str:
    """A sentence's features grouped by description: why each group belongs (it wrote the sentence, or shares its
    finding), then each feature's activation, AUROC and training frequency, with what the numbers mean."""
    groups: dict = {}
    for fid, act in zip(sentence["feature_ids"], sentence["activations"]):
        f = loaded.features.get(int(fid), {})
        groups.setdefault(words.whole_sentences(f.get("description")), []).append((int(fid), act, f))
    text_key = words.whole_sentences(sentence["text"]).lower().rstrip(".")
    parts = []
    for description, members in groups.items():
        shared = words.finding_words(members[0][2].get("findings"))
        if sentence.get("section") == "impression" and text_key not in description.lower() and not shared:
            why = "It wrote part of the report, and no feature found anything abnormal, so the impression is normal."
        elif text_key in description.lower():
            why = "Its description holds this sentence" + (f" (finding: {escape(shared)})." if shared else ".")
        else:
            why = (f"It reports the same finding as this sentence ({escape(shared)}), so the two were merged."
                   if shared else "Its sentence was merged into this one.")
        n = len(members)
        rows = "".join(_feature_row(loaded, fid, act, anchor) for fid, act, _ in members)
        parts.append(f"<section class='group'><h4>{n} feature{'s' * (n != 1)} described as “{escape(description)}”"
                     f"</h4><p>Why: {why}</p><table><thead><tr><th>feature</th><th>activation</th><th>AUROC</th>"
                     f"<th>fires on</th></tr></thead><tbody>{rows}</tbody></table></section>")
    return (f"<p class='means'>{escape(words.ACTIVATION_MEANS)} {escape(words.AUROC_MEANS)} “Fires on”: the share of "
            "training images on which it fires.</p>" + "".join(parts))


def side_note(sentence: dict) -> str:
    """Where a sentence's map lies, as the patient's side, and a warning when it contradicts the sentence."""
    said = sentence.get("stated_text") or sentence["text"]
    conflict = words.side_conflict(said, sentence.get("side"))
    text = escape(words.map_sentence(sentence.get("side")))
    if conflict and sentence.get("side_check") == "dropped":
        return (f"<p class='conflict' role='alert'>⚠ Side words dropped: its features' description read “"
                f"{escape(said)}”, but {escape(conflict.split(', but ', 1)[-1])}, so the model wrote it without a "
                f"side.</p><p>{text}</p>")
    if conflict:
        return (f"<p class='conflict' role='alert'>⚠ Side disagrees: {escape(conflict)}. Read the side with care."
                f"</p><p>{text}</p>")
    return f"<p>{text}</p>"


def opened_feature(loaded, fid: int, row: Optional[dict], why: str, side: Optional[str]) -> str:
    """One feature on this image: its description, what the numbers mean, what the report did with it, its side."""
    f = loaded.features.get(fid, {})
    act = row["activation"] if row else 0.0
    return (f"<h4 id='of-{fid}'>Feature #{fid} ({escape(f.get('section') or 'no section')})</h4>"
            f"<p class='description'>“{escape(words.whole_sentences(f.get('description')))}”</p>"
            f"<p>Activation {_strength(act, f)} on this image. AUROC {words.auroc(f.get('score'))}. Fires on "
            f"{words.frequency(f.get('frequency'))} of training images.</p><p>{escape(why)}</p>"
            f"<p>{escape(words.map_sentence(side))}</p><p class='means'>{escape(words.ACTIVATION_MEANS)} "
            f"{escape(words.AUROC_MEANS)}</p>")


def bars(table: list) -> str:
    """The strongest activations as labelled horizontal bars (no chart axis to overlap on a phone)."""
    strongest = table[:MAX_BARS]
    if not strongest:
        return "<p>No feature fired on this image.</p>"
    top = max(r["activation"] for r in strongest) or 1.0
    rows = "".join(
        f"<li><span class='label'>#{r['feature_id']} {escape(words.whole_sentences(r['description'])[:70])}</span>"
        f"<span class='track'><span class='fill' style='width:{100 * r['activation'] / top:.0f}%'></span></span>"
        f"<span class='value'>{words.activation(r['activation'])}</span></li>" for r in strongest)
    return f"<h4>The {len(strongest)} strongest activations</h4><ol class='bars'>{rows}</ol>"


def match_count(query: str, shown: int, total: int) -> str:
    """How many features the dictionary search shows, and a plain "no matches" when none."""
    q = (query or "").strip()
    if not q:
        return f"<p>{total} described features.</p>"
    if shown == 0:
        return (f"<p class='no-matches'>No matches for “{escape(q)}” among {total} described features. Try a "
                "finding (effusion), a section (lungs) or an id (#12).</p>")
    return f"<p>{shown} of {total} described features match “{escape(q)}”.</p>"
