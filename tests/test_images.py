import io

import numpy as np
import pytest
from PIL import Image

from saerad.data.images import load_image

from imaging import gradient, write_dicom, write_png


def test_8bit_png_loads_unchanged(tmp_path):
    pixels = gradient()
    image = load_image(write_png(tmp_path / "a.png", pixels))
    assert image.mode == "L" and np.array_equal(np.asarray(image), pixels)


def test_16bit_png_is_stretched_to_8bit(tmp_path):
    pixels = gradient(maximum=4095, dtype=np.uint16)  # 12-bit data in a 16-bit PNG, as many CXR exports
    path = write_png(tmp_path / "a16.png", pixels)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_image(path))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0)  # the ramp stays a ramp


def test_rgba_and_palette_become_grayscale(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :20, 3] = 255  # left half opaque, right half transparent
    image = load_image(write_png(tmp_path / "rgba.png", rgba, "RGBA"))
    out = np.asarray(image)
    assert image.mode == "L" and out[0, 0] == 200 and out[0, 39] == 0
    palette = Image.fromarray(gradient()).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    assert load_image(buf.getvalue()).mode == "L"


def test_jpeg_from_bytes_and_stream(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(gradient()).convert("RGB").save(buf, format="JPEG")
    assert load_image(buf.getvalue()).size == (48, 64)
    buf.seek(0)
    assert load_image(buf).size == (48, 64)


def test_monochrome1_dicom_is_inverted(tmp_path):
    pixels = gradient(maximum=1000, dtype=np.uint16)
    mono2 = np.asarray(load_image(write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2")))
    mono1 = np.asarray(load_image(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1")))
    assert mono2[0, 0] == 0 and mono2[0, -1] == 255
    assert np.array_equal(mono1, 255 - mono2)


def test_dicom_window_is_applied(tmp_path):
    pixels = gradient(maximum=1000, dtype=np.uint16)
    out = np.asarray(load_image(write_dicom(tmp_path / "w.dcm", pixels, slope=1.0, intercept=0.0,
                                            window=(500.0, 200.0))))
    # values below 400 are black, above 600 white, the ramp in between
    ramp = pixels[0]
    assert (out[0][ramp < 390] == 0).all() and (out[0][ramp > 610] == 255).all()
    assert 0 < out[0][np.argmin(abs(ramp.astype(int) - 500))] < 255


def test_dicom_without_suffix_is_detected_by_magic(tmp_path):
    path = write_dicom(tmp_path / "image", gradient(maximum=1000, dtype=np.uint16))
    assert load_image(path).size == (48, 64)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_text("hello, I am a report"), "not an image"),
        (lambda p: p.write_bytes(_png_bytes()[:200]), "truncated"),
        (lambda p: write_png(p, gradient(16, 16)), "smaller than the minimum"),
    ],
)
def test_bad_inputs_name_the_file_and_problem(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ValueError, match=message) as err:
        load_image(path)
    assert str(path) in str(err.value)


def test_dicom_without_pixels_and_missing_file_and_folder(tmp_path):
    path = write_dicom(tmp_path / "empty.dcm", gradient(dtype=np.uint16), with_pixels=False)
    with pytest.raises(ValueError, match="no pixel data"):
        load_image(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)


def test_decompression_bomb_is_refused(tmp_path):
    path = write_png(tmp_path / "big.png", np.zeros((300, 400), np.uint8))
    with pytest.raises(ValueError, match="exceeds the limit"):
        load_image(path, max_pixels=100_000)


def _png_bytes():
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
