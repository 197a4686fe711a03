"""One loader for chest X-ray images: PNG and JPEG (8/16-bit, any mode) and DICOM -> grayscale 8-bit PIL image."""

from __future__ import annotations

import io
import os
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]

MAX_PIXELS = 100_000_000  # decompression-bomb limit: well above a 4k x 4k radiograph, far below a bomb
MIN_SIZE = 32  # smaller than this is no radiograph (and breaks patching at 14-16 px)
DICOM_SUFFIXES = (".dcm", ".dicom")


def _read(source: ImageSource) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "<bytes>"
    if hasattr(source, "read"):
        return source.read(), getattr(source, "name", "<stream>")
    name = os.fspath(source)
    if os.path.isdir(name):
        raise ValueError(f"{name}: is a folder, not an image file")
    if not os.path.exists(name):
        raise FileNotFoundError(f"{name}: no such file")
    with open(name, "rb") as f:
        return f.read(), name


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Stretch any numeric pixel array to 0-255 over its own range (a flat image becomes black)."""
    pixels = pixels.astype(np.float64)
    lo, hi = float(pixels.min()), float(pixels.max())
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _check_size(width: int, height: int, name: str, max_pixels: int, min_size: int) -> None:
    if width * height > max_pixels:
        raise ValueError(f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)")
    if min(width, height) < min_size:
        raise ValueError(f"{name}: {width}x{height} pixels is smaller than the minimum {min_size}x{min_size}")


def _load_dicom(data: bytes, name: str) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{name}: not a readable DICOM file ({err})") from None
    if "PixelData" not in ds:
        raise ValueError(f"{name}: DICOM file has no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for truncated or unsupported pixel data
        raise ValueError(f"{name}: cannot decode the DICOM pixel data ({err})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if photometric.startswith("MONOCHROME"):
        pixels = apply_modality_lut(pixels, ds)
        has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
        if has_voi:
            pixels = apply_voi_lut(pixels, ds, index=0)
        pixels = to_uint8(np.asarray(pixels))
        if photometric == "MONOCHROME1":  # MONOCHROME1: high values are dark
            pixels = 255 - pixels
        return pixels
    if pixels.ndim == 3:  # colour DICOM (secondary capture)
        return np.asarray(Image.fromarray(to_uint8(pixels)).convert("L"))
    return to_uint8(pixels)


def to_grayscale(image: Image.Image) -> Image.Image:
    """Any PIL image (16-bit, RGBA, palette, ...) as 8-bit grayscale."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(to_uint8(np.asarray(image)))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, the background of a radiograph.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def load_image(
    source: ImageSource, *, max_pixels: int = MAX_PIXELS, min_size: int = MIN_SIZE
) -> Image.Image:
    """Load a PNG, JPEG or DICOM (path, bytes or binary stream) as a grayscale 8-bit PIL image."""
    data, name = _read(source)
    if not data:
        raise ValueError(f"{name}: file is empty")
    is_dicom = data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)
    if is_dicom:
        pixels = _load_dicom(data, name)
        _check_size(pixels.shape[1], pixels.shape[0], name, max_pixels, min_size)
        return Image.fromarray(pixels, mode="L")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ValueError(f"{name}: {err}") from None
    except (OSError, SyntaxError, ValueError):
        raise ValueError(f"{name}: not an image (PNG, JPEG or DICOM expected)") from None
    _check_size(*image.size, name, max_pixels, min_size)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: truncated or corrupt image data ({err})") from None
    image = ImageOps.exif_transpose(image)
    return to_grayscale(image)
