"""One loader for chest X-ray images: PNG and JPEG (8/16-bit, any mode) and DICOM -> grayscale 8-bit PIL image."""

from __future__ import annotations

import io
import os
import stat
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

from modeling_saerad import MAX_ASPECT, MAX_PIXELS, MIN_SIZE  # noqa: F401  (the remote code's bounds, shared)
from modeling_saerad import check_image_size as check_size
from modeling_saerad import stretch_to_uint8 as to_uint8

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]
MAX_FILE_BYTES = 1 << 30  # a compressed radiograph is 1-50 MB; an uncompressed 4k x 4k 16-bit DICOM 32 MB
DICOM_SUFFIXES = (".dcm", ".dicom")


def _bounded(data: bytes, name: str) -> bytes:
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{name}: over the image file limit of {MAX_FILE_BYTES} bytes")
    return data


def _read(source: ImageSource) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return _bounded(bytes(source), "<bytes>"), "<bytes>"
    if hasattr(source, "read"):
        name = getattr(source, "name", "<stream>")
        return _bounded(source.read(MAX_FILE_BYTES + 1), name), name
    name = os.fspath(source)
    if os.path.isdir(name):
        raise ValueError(f"{name}: is a folder, not an image file")
    if not os.path.exists(name):
        raise FileNotFoundError(f"{name}: no such file")
    if not stat.S_ISREG(os.stat(name).st_mode):  # a FIFO would block forever, /dev/zero never ends
        raise ValueError(f"{name}: not a regular file")
    with open(name, "rb") as f:
        return _bounded(f.read(MAX_FILE_BYTES + 1), name), name


def _one_line(err: Exception) -> str:
    # decoder errors list what to install over several lines; the CLI prints one
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def _load_dicom(data: bytes, name: str, max_pixels: int = MAX_PIXELS, min_size: int = MIN_SIZE) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{name}: not a readable DICOM file ({_one_line(err)})") from None
    if "PixelData" not in ds:
        raise ValueError(f"{name}: DICOM file has no pixel data")
    try:  # the header bounds what decoding will allocate, before any pixel is decoded
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (AttributeError, TypeError, ValueError) as err:
        raise ValueError(f"{name}: DICOM header lacks a usable size ({_one_line(err)})") from None
    check_size(columns, rows, name, max_pixels, min_size)
    if frames < 1 or samples not in (1, 3, 4) or bits not in (1, 8, 16, 32, 64):
        raise ValueError(f"{name}: DICOM header is implausible ({frames} frames, {samples} samples, {bits} bits)")
    if rows * columns * frames * samples * max(bits, 8) // 8 > 4 * max_pixels:
        raise ValueError(f"{name}: {frames} frames of {columns}x{rows} pixels exceed the decoding limit")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for truncated or unsupported pixel data
        raise ValueError(f"{name}: cannot decode the DICOM pixel data ({_one_line(err)})") from None
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
        pixels = _load_dicom(data, name, max_pixels, min_size)
        check_size(pixels.shape[1], pixels.shape[0], name, max_pixels, min_size)
        return Image.fromarray(pixels, mode="L")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ValueError(f"{name}: {err}") from None
    except (OSError, SyntaxError, ValueError):
        raise ValueError(f"{name}: not an image (PNG, JPEG or DICOM expected)") from None
    check_size(*image.size, name, max_pixels, min_size)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: truncated or corrupt image data ({err})") from None
    image = ImageOps.exif_transpose(image)
    return to_grayscale(image)
