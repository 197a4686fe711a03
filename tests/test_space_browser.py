"""The Space in a real browser (headless Debian Chromium driven by Playwright): upload, read the report, select a
sentence, see the overlay; a bad upload shows a visible error and the next upload works; descriptions read as text.

Screenshots go to $SAERAD_SCREENSHOTS (docs/space/ was made so, with SAERAD_SPACE_MODEL set to the demo's model)."""

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_familiarity import calibrate_on_phantoms, noise
from test_space import app, free_port, inference, xray

from conftest import tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install saerad[dev])")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: `make install` installs Debian's chromium "
                                "as root with apt-get; elsewhere install it by hand")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LITERAL = "<b>bold</b> **stars**"


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    model_dir = os.environ.get("SAERAD_SPACE_MODEL")
    if not model_dir:
        model = calibrate_on_phantoms(tiny_model())
        for f in model.feature_dictionary["features"]:
            f["description"] = f"{LITERAL} finding {f['id']}."
        model_dir = tmp_path_factory.mktemp("browser") / "model"
        model.save_pretrained(model_dir)
    demo = app.build_demo(str(model_dir))
    port = free_port()
    demo.queue(max_size=app.QUEUE_SIZE, default_concurrency_limit=2).launch(
        server_port=port, prevent_thread_lock=True, max_file_size=f"{inference.MAX_UPLOAD_MB}mb", quiet=True)
    yield f"http://127.0.0.1:{port}/", Path(model_dir)
    demo.close()


def _upload(page, path: Path) -> None:
    """Upload `path`, first clearing the file an earlier upload left (the file box hides its input meanwhile)."""
    field = page.locator("#upload input[type=file]")
    if field.count() == 0:
        page.locator("#upload button[aria-label='Clear']").click()
        field.wait_for(state="attached", timeout=30_000)
    field.set_input_files(str(path))


def _report(page) -> str:
    return page.locator("#report textarea").input_value()


def test_upload_report_sentence_overlay_error_and_recovery(page_url, tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    url, model_dir = page_url
    shots = Path(os.environ.get("SAERAD_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    example = sorted((Path(app.__file__).parent / "examples").glob("*.png"))[0]
    image = tmp_path / example.name
    shutil.copy(example, image)
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)
    expected = model.generate(processor(images=Image.open(image).convert("L"), return_tensors="pt")["pixel_values"])[0]

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#upload input[type=file]").wait_for(state="attached", timeout=60_000)
        _upload(page, image)
        page.wait_for_function("() => document.querySelector('#report textarea')?.value.length > 0", timeout=60_000)
        assert _report(page) == expected
        page.locator("#preview img").wait_for(timeout=30_000)
        page.locator("#sentences label").first.click()
        page.locator("#overlay img").wait_for(timeout=30_000)
        page.wait_for_function("() => document.querySelector('#where textarea')?.value.includes('map reads')",
                               timeout=30_000)
        page.screenshot(path=str(shots / "report.png"), full_page=True)

        bad = tmp_path / "not-an-xray.png"
        bad.write_bytes(b"plain text, not pixels" * 20)
        _upload(page, bad)
        page.wait_for_function("() => document.querySelector('#report textarea')?.value"
                               ".includes('not-an-xray.png: not an image')", timeout=30_000)
        assert page.locator("#report textarea").is_visible() and _report(page).startswith("Cannot read this upload.")
        page.screenshot(path=str(shots / "error.png"), full_page=True)

        other = xray(tmp_path / "second.png", (200, 160), seed=5)
        _upload(page, other)
        second = model.generate(processor(images=Image.open(other).convert("L"), return_tensors="pt")["pixel_values"])
        page.wait_for_function("(text) => document.querySelector('#report textarea')?.value === text", arg=second[0],
                               timeout=60_000)

        page.get_by_role("tab", name="Features").click()
        page.locator("#active").wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "features.png"), full_page=True)
        page.get_by_role("tab", name="Dictionary").click()
        table = page.locator("#dictionary")
        table.wait_for(timeout=30_000)
        if not os.environ.get("SAERAD_SPACE_MODEL"):  # the test model's descriptions hold HTML and Markdown
            assert LITERAL in table.inner_text()
            page.get_by_role("tab", name="Features").click()
            assert LITERAL in page.locator("#active").inner_text()
            page.get_by_role("tab", name="Report").click()
            assert LITERAL in page.locator("#sentences").inner_text() or LITERAL in page.locator(
                "#sentence-features").inner_text()
        page.get_by_role("tab", name="Dictionary").click()
        page.screenshot(path=str(shots / "dictionary.png"), full_page=True)
        browser.close()


def test_an_unfamiliar_upload_shows_a_warning_above_the_report(page_url, tmp_path):
    url, _ = page_url
    image = tmp_path / "noise.png"
    noise(3).save(image)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#upload input[type=file]").wait_for(state="attached", timeout=60_000)
        _upload(page, image)
        warning = page.locator("#familiarity")
        warning.get_by_text("Unlike the training images").wait_for(timeout=60_000)
        assert warning.is_visible() and "learnt from" in warning.inner_text()
        report_box, warning_box = page.locator("#report").bounding_box(), warning.bounding_box()
        assert warning_box["y"] + warning_box["height"] <= report_box["y"] + 1  # above the report
        assert _report(page).startswith("FINDINGS:")  # warned, not withheld
        page.screenshot(path=str(Path(os.environ.get("SAERAD_SCREENSHOTS") or tmp_path) / "unfamiliar.png"),
                        full_page=True)
        browser.close()
