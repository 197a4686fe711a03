"""The Space in a real browser (headless Debian Chromium driven by Playwright), at a desk (1400x1000) and on a phone
(390x844): the preview on upload, the report, one Tab stop and arrow keys for the sentences, the patient's side and
a contradicting map marked, the crop outline and colour scale, a typed opacity applied, large captioned exemplars
linked to their feature, alt text on every image, a name on every button, table columns that fit, "no matches",
descriptions as text, and a bad upload's error with recovery.

Screenshots go to $SAERAD_SCREENSHOTS (docs/space/ was made so, with this test's made-up model)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_familiarity import calibrate_on_phantoms, noise
from test_space import app, free_port, xray

from conftest import tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install saerad[dev])")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: `make install` installs Debian's chromium "
                                "as root with apt-get; elsewhere install it by hand")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LITERAL = "<b>bold</b> **stars**"
SIZES = {"desktop": {"width": 1400, "height": 1000}, "phone": {"width": 390, "height": 844}}
SIDES = ("left", "right", "bilateral")


def _made_up_model(folder: Path) -> Path:
    """A tiny model whose descriptions are made up (HTML and Markdown, a side each, eight shared by several
    features), with large exemplar thumbnails, report lines for them, a build record and a familiarity calibration
    fitted on phantoms."""
    model = calibrate_on_phantoms(tiny_model())
    for f in model.feature_dictionary["features"]:
        group, side = f["id"] % 8, SIDES[f["id"] % 8 % 3]
        f.update(description=f"{LITERAL} finding {group} on the {side}", max_activation=9.5,
                 findings=[{"label": f"Made-up {group}", "status": "positive", "laterality": side}],
                 exemplars=[f"ex{f['id']}a", f"ex{f['id']}b"])
    model.save_pretrained(folder)
    thumbs = folder / "exemplars"
    thumbs.mkdir()
    for f in model.feature_dictionary["features"]:
        for e in f["exemplars"]:
            picture = Image.new("L", (256, 200), 30)
            ImageDraw.Draw(picture).ellipse([40, 20, 216, 196], fill=200)  # reaches the bottom edge: uncropped?
            picture.save(thumbs / f"{e}.png")
    (thumbs / "captions.json").write_text(json.dumps({e: f"Made-up report line of {e}." for f in
                                                      model.feature_dictionary["features"] for e in f["exemplars"]}))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Made-up test model\n\nA card for the test.\n")
    (folder / "saerad_build.json").write_text(json.dumps({"title": "Made-up test model", "dataset": "made-up-phantom",
                                                          "d_sae": 64, "backbone": "tiny-vit",
                                                          "training_metrics": {"n": 123}}))
    return folder


def _pick_upload(model, processor, folder: Path) -> tuple:
    """A non-square upload on which some sentence's map contradicts its side and some map lies on one side."""
    from words import side_conflict

    for seed in range(60):
        path = xray(folder / f"chest-{seed}.png", (200, 120), seed=seed)
        pixels = processor(images=Image.open(path).convert("L"), return_tensors="pt")["pixel_values"]
        out = model.generate(pixels, return_dict_in_generate=True, output_localization=True)
        sentences = out.sentences[0]
        conflicts = [k for k, s in enumerate(sentences) if side_conflict(s["text"], s["side"])]
        if conflicts and len(sentences) >= 3 and any(s["side"] in ("left", "right") for s in sentences):
            return path, out.reports[0], sentences, conflicts
    raise AssertionError("no seed gave a contradicting map")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    from transformers import AutoImageProcessor, AutoModel

    folder = _made_up_model(tmp_path_factory.mktemp("browser") / "made-up-model")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    upload = _pick_upload(model, processor, tmp_path_factory.mktemp("uploads"))
    import torch

    threads = torch.get_num_threads()  # the app sets its share of the CPUs: the tests after this one keep theirs
    demo = app.build_demo(str(folder))
    port = free_port()
    app.launch(demo, port, "127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", folder, upload, (model, processor)
    demo.close()
    torch.set_num_threads(threads)


def _upload(page, path: Path) -> None:
    """Upload `path`, first clearing the file an earlier upload left (the file box hides its input meanwhile)."""
    field = page.locator("#upload input[type=file]")
    if field.count() == 0:
        page.locator("#upload button[aria-label='Clear']").click()
        field.wait_for(state="attached", timeout=30_000)
    field.set_input_files(str(path))


def _report(page) -> str:
    return page.locator("#report textarea").input_value()


def _unnamed(page) -> dict:
    """Visible images without alt text, and visible buttons without an accessible name."""
    return page.evaluate("""() => {
      const shown = (e) => e.offsetParent !== null || e.getClientRects().length > 0;
      const name = (e) => (e.getAttribute('aria-label') || e.getAttribute('title') || e.innerText || '').trim()
        || [...e.querySelectorAll('img[alt]')].map((i) => i.alt).join(' ').trim()
        || (e.getAttribute('aria-labelledby') || '').split(' ').map((i) => document.getElementById(i)?.innerText
                                                                  || '').join('').trim();
      return {images: [...document.querySelectorAll('img')].filter(shown).filter((e) => !(e.alt || '').trim())
                        .map((e) => e.outerHTML.slice(0, 160)),
              buttons: [...document.querySelectorAll('button, [role=button]')].filter(shown).filter((e) => !name(e))
                        .map((e) => e.outerHTML.slice(0, 160))};
    }""")


def _columns_fit(page, selector: str, width: int) -> list:
    """The headers of a table that lie (partly) outside the viewport's width, or whose name is cut off."""
    return page.evaluate("""([sel, width]) => [...document.querySelectorAll(sel + ' thead th')]
      .filter((th) => th.getClientRects().length)
      .filter((th) => { const r = th.getBoundingClientRect(), s = th.querySelector('span.header') || th;
                        return r.left < -1 || r.right > width + 1 || s.scrollWidth > s.clientWidth + 1; })
      .map((th) => th.innerText)""", [selector, width])


def _cyan_pixels(page, selector: str) -> int:
    """Pixels of the crop's cyan outline in the image the page shows."""
    return page.evaluate("""async (sel) => {
      const img = document.querySelector(sel); await img.decode();
      const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
      const g = c.getContext('2d'); g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] < 60 && d[i + 1] > 150 && d[i + 2] > 200) n++;
      return n; }""", selector)


def _report_and_keyboard(page, upload, shots, size):
    """Preview before the report; the report; the sentences one Tab stop; arrow keys; side wording; conflicts."""
    import words

    path, expected, sentences, conflicts = upload
    page.evaluate("""() => { window.seen = {};
      new MutationObserver(() => {
        if (document.querySelector('#preview img') && !window.seen.preview) window.seen.preview = performance.now();
        if ((document.querySelector('#report textarea')?.value || '').startsWith('FINDINGS') && !window.seen.report)
          window.seen.report = performance.now();
      }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true}); }""")
    _upload(page, path)
    page.wait_for_function("(t) => document.querySelector('#report textarea')?.value === t", arg=expected,
                           timeout=60_000)
    page.wait_for_function("() => window.seen.preview && window.seen.report", timeout=10_000)
    assert page.evaluate("() => window.seen.preview <= window.seen.report")  # the preview came first
    assert page.locator("#preview img").get_attribute("alt").startswith("The uploaded chest X-ray, 200 x 120")
    labels = page.locator("#sentences label")
    assert labels.count() == len(sentences)
    marked = [k for k in range(labels.count()) if "⚠" in labels.nth(k).inner_text()]
    assert marked == conflicts
    radios = page.locator("#sentences input[type=radio]")
    names = page.evaluate("() => [...document.querySelectorAll('#sentences input')].map((i) => i.name)")
    assert len(set(names)) == 1  # one radio group: one Tab stop
    labels.first.click()
    page.wait_for_function("() => document.querySelector('#overlay img')?.alt.includes('sentence 1:')",
                           timeout=30_000)
    radios.first.focus()
    page.keyboard.press("ArrowDown")
    assert radios.nth(1).is_checked()
    page.wait_for_function("() => document.querySelector('#overlay img')?.alt.includes('sentence 2:')",
                           timeout=30_000)
    page.keyboard.press("Tab")  # one Tab stop: the next Tab leaves the list
    assert page.evaluate("() => !document.activeElement.closest('#sentences')")
    sided = next(k for k, s in enumerate(sentences) if s["side"] in ("left", "right"))
    for k in dict.fromkeys([conflicts[0], sided]):
        labels.nth(k).click()
        page.wait_for_function("(n) => document.querySelector('#overlay img')?.alt.includes('sentence ' + n + ':')",
                               arg=k + 1, timeout=30_000)
        page.wait_for_function("(t) => document.querySelector('#where')?.innerText.includes(t)",
                               arg=words.map_sentence(sentences[k]["side"]), timeout=30_000)
        where = page.locator("#where").inner_text()
        assert ("Side disagrees" in where) == (k in conflicts)
    assert "patient's" in page.locator("#where").inner_text()
    return labels.nth(sided)


def _overlay_exemplars_opacity(page, chosen, shots, size):
    """The overlay next to the chosen sentence, its crop outline and scale, a typed opacity, the exemplars."""
    assert _cyan_pixels(page, "#overlay img") > 50
    assert page.locator("#scale .bar").is_visible()
    chosen.scroll_into_view_if_needed()
    label, overlay = chosen.bounding_box(), page.locator("#overlay img").bounding_box()
    assert 0 <= overlay["y"] - (label["y"] + label["height"]) < 420 or overlay["x"] > label["x"] + label["width"] - 5
    assert "finding" in page.locator("#sentence-features").inner_text()
    assert LITERAL in page.locator("#sentence-features").inner_text()  # escaped: the tags read as text
    assert "Why:" in page.locator("#sentence-features").inner_text()
    assert "AUROC: how well" in page.locator("#sentence-features").inner_text()
    figure = page.locator("#exemplars figure").first
    assert "Made-up report line of ex" in figure.inner_text() and "back to feature #" in figure.inner_text()
    box = figure.locator("img").bounding_box()
    assert box["width"] >= 150 and abs(box["height"] / box["width"] - 200 / 256) < 0.03  # large and uncropped
    target = figure.locator("a").get_attribute("href")
    assert page.locator(target).count() == 1  # the link back lands on the feature's row
    before = page.locator("#overlay img").get_attribute("src")
    number = page.locator("#opacity input[type=number]")
    number.fill("0.2")
    number.press("Enter")
    page.wait_for_function("(b) => document.querySelector('#overlay img')?.getAttribute('src') !== b", arg=before,
                           timeout=30_000)
    page.screenshot(path=str(shots / f"report-{size}.png"), full_page=True)


def _features_and_dictionary(page, shots, size, width):
    page.get_by_role("tab", name="Features").click()
    page.locator("#active").wait_for(timeout=30_000)
    assert _columns_fit(page, "#active", width) == []
    assert LITERAL in page.locator("#active").inner_text()
    assert "#" in page.locator("#bars").inner_text()
    assert "active features, strongest first" in page.locator("#active").inner_text()
    page.locator("#pick input").click()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#feature-overlay img')?.alt.includes('feature #')",
                           timeout=30_000)
    opened = page.locator("#feature").inner_text()
    assert "Written in the report." in opened and "AUROC: how well" in opened
    assert any(where in opened for where in ("patient's", "in the middle", "nowhere"))
    assert "back to feature #" in page.locator("#feature-exemplars").inner_text()
    page.screenshot(path=str(shots / f"features-{size}.png"), full_page=True)
    page.get_by_role("tab", name="Dictionary").click()
    page.locator("#dictionary").wait_for(timeout=30_000)
    assert _columns_fit(page, "#dictionary", width) == []
    assert "64 described features" in page.locator("#dictionary-count").inner_text()
    query = page.locator("#query textarea, #query input").first
    query.fill("zzzz")
    page.wait_for_function("() => document.querySelector('#dictionary-count')?.innerText.includes('No matches')",
                           timeout=30_000)
    query.fill("finding 3 ")
    page.wait_for_function("() => /\\d+ of 64/.test(document.querySelector('#dictionary-count')?.innerText)",
                           timeout=30_000)
    assert LITERAL in page.locator("#dictionary").inner_text()
    page.screenshot(path=str(shots / f"dictionary-{size}.png"), full_page=True)


@pytest.mark.parametrize("size", list(SIZES))
def test_the_page_as_a_reader_uses_it(space, tmp_path, size):
    url, folder, upload, _ = space
    shots = Path(os.environ.get("SAERAD_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport=SIZES[size])
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#upload input[type=file]").wait_for(state="attached", timeout=60_000)
        name = page.locator("#model-name").inner_text()
        assert "made-up-model" in name and str(folder.parent) not in name and "learnt from 123" in name
        page.get_by_role("link", name="Read its model card").click()
        page.get_by_text("A card for the test.").wait_for(timeout=10_000)  # the link opens the card on the page
        chosen = _report_and_keyboard(page, upload, shots, size)
        _overlay_exemplars_opacity(page, chosen, shots, size)
        assert _unnamed(page) == {"images": [], "buttons": []}
        _features_and_dictionary(page, shots, size, SIZES[size]["width"])
        assert _unnamed(page) == {"images": [], "buttons": []}
        browser.close()


def test_a_bad_upload_shows_its_error_and_the_next_upload_works(space, tmp_path):
    url, _, upload, (model, processor) = space
    shots = Path(os.environ.get("SAERAD_SCREENSHOTS") or tmp_path)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport=SIZES["desktop"])
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#upload input[type=file]").wait_for(state="attached", timeout=60_000)
        bad = tmp_path / "not-an-xray.png"
        bad.write_bytes(b"plain text, not pixels" * 20)
        _upload(page, bad)
        page.wait_for_function("() => document.querySelector('#report textarea')?.value"
                               ".includes('not-an-xray.png: not an image')", timeout=30_000)
        assert page.locator("#report textarea").is_visible() and _report(page).startswith("Cannot read this upload.")
        page.screenshot(path=str(shots / "error.png"), full_page=True)
        other = xray(tmp_path / "second.png", (160, 200), seed=5)
        _upload(page, other)
        second = model.generate(processor(images=Image.open(other).convert("L"), return_tensors="pt")["pixel_values"])
        page.wait_for_function("(text) => document.querySelector('#report textarea')?.value === text", arg=second[0],
                               timeout=60_000)
        browser.close()


def test_an_unfamiliar_upload_shows_a_warning_above_the_report(space, tmp_path):
    url = space[0]
    image = tmp_path / "noise.png"
    noise(3).save(image)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport=SIZES["desktop"])
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#upload input[type=file]").wait_for(state="attached", timeout=60_000)
        _upload(page, image)
        warning = page.locator("#familiarity")
        warning.get_by_text("Unlike the training images").wait_for(timeout=60_000)
        assert warning.is_visible() and "learnt from" in warning.inner_text()
        report_box, warning_box = page.locator("#report").bounding_box(), warning.bounding_box()
        assert warning_box["y"] + warning_box["height"] <= report_box["y"] + 1  # above the report
        page.wait_for_function("() => document.querySelector('#report textarea')?.value.startsWith('FINDINGS:')",
                               timeout=60_000)  # warned, not withheld
        page.screenshot(path=str(Path(os.environ.get("SAERAD_SCREENSHOTS") or tmp_path) / "unfamiliar.png"),
                        full_page=True)
        browser.close()


def test_an_upload_with_the_whole_image_in_view_draws_no_outline(space):
    """A square upload: the model sees all of it, so no box is drawn (and still no tint where the map is empty)."""
    import inference

    _, folder, _, _ = space
    loaded = inference.Loaded(str(folder))
    image = Image.fromarray(np.full((64, 64), 100, dtype=np.uint8))
    out = np.asarray(loaded.overlay(image, np.zeros((32, 32), dtype=np.float32), 1.0)).astype(int)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
