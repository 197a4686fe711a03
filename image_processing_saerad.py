# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""SAE-Rad's image processor and file reader: PNG, JPEG and DICOM radiographs read as saerad reads them, refused by
their size before decoding, and the backbone's resize, crop and normalisation (BiT's, as RAD-DINO's)."""

import io
import os
import stat
import warnings
from typing import Any, BinaryIO, Optional, Union

from transformers import BitImageProcessorPil

# The bounds saerad's image loader applies to files, applied here to what a Hub user hands the processor.
MAX_PIXELS = 100_000_000  # decompression-bomb limit: well above a 4k x 4k radiograph, far below a bomb
MIN_SIZE = 32  # smaller than this is no radiograph (and breaks patching at 14-16 px)
MAX_ASPECT = 10  # a radiograph is at most ~1:3; beyond 1:10 the shortest-edge resize blows a tiny image up


def check_image_size(width: int, height: int, name: str = "image", max_pixels: int = MAX_PIXELS,
                     min_size: int = MIN_SIZE) -> None:
    """Refuse an image by its size: too many pixels, too small, or too elongated to be a radiograph."""
    if width * height > max_pixels:
        raise ValueError(f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)")
    if min(width, height) < min_size:
        raise ValueError(f"{name}: {width}x{height} pixels is smaller than the minimum {min_size}x{min_size}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ValueError(f"{name}: {width}x{height} pixels is more elongated than 1:{MAX_ASPECT}; not a radiograph")


def stretch_to_uint8(pixels) -> "Any":
    """Any numeric pixel array stretched to 0-255 over its own range (a flat image becomes black)."""
    import numpy as np

    pixels = np.asarray(pixels).astype(np.float32)  # float64 would double the peak memory of a large image
    lo, hi = float(pixels.min()), float(pixels.max())
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _checked_image(image: Any, name: str) -> Any:
    """`image` after the size checks; a 16-bit, 32-bit or float PIL image or integer array stretched to 8 bits."""
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        check_image_size(*image.size, name)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # BiT's RGB conversion would clip them to white
            return Image.fromarray(stretch_to_uint8(image))
        return image
    shape = tuple(image.shape) if hasattr(image, "shape") else ()
    if len(shape) == 2:
        height, width = shape
    elif len(shape) == 3:
        channels_first = shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4)
        height, width = shape[1:] if channels_first else shape[:2]
    else:
        raise ValueError(f"{name}: expected a PIL image or an (H, W) / (H, W, C) / (C, H, W) array; got shape {shape}")
    check_image_size(int(width), int(height), name)
    if isinstance(image, np.ndarray) and image.dtype.kind in "iu" and image.dtype.itemsize > 1:
        return stretch_to_uint8(image)
    return image


# Reading radiograph files: saerad's loader, here so that the Space and Hub users read files as saerad does.
ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]  # what load_image reads
MAX_FILE_BYTES = 1 << 30  # a compressed radiograph is 1-50 MB; an uncompressed 4k x 4k 16-bit DICOM 32 MB
DICOM_SUFFIXES = (".dcm", ".dicom")


def _bounded(data: bytes, name: str) -> bytes:
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{name}: over the image file limit of {MAX_FILE_BYTES} bytes")
    return data


def _read(source: "ImageSource") -> tuple:
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


def _load_dicom(data: bytes, name: str, max_pixels: int = MAX_PIXELS, min_size: int = MIN_SIZE) -> Any:
    import numpy as np
    from PIL import Image

    try:  # optional: transformers' remote-code check skips imports guarded like this
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ValueError(f"{name}: reading DICOM needs pydicom (pip install pydicom)") from None

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
    check_image_size(columns, rows, name, max_pixels, min_size)
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
        pixels = stretch_to_uint8(np.asarray(pixels))
        if photometric == "MONOCHROME1":  # MONOCHROME1: high values are dark
            pixels = 255 - pixels
        return pixels
    if pixels.ndim == 3:  # colour DICOM (secondary capture)
        return np.asarray(Image.fromarray(stretch_to_uint8(pixels)).convert("L"))
    return stretch_to_uint8(pixels)


def to_grayscale(image: Any) -> Any:
    """Any PIL image (16-bit, RGBA, palette, ...) as 8-bit grayscale."""
    import numpy as np
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(stretch_to_uint8(np.asarray(image)))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, the background of a radiograph.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def load_image(
    source: "ImageSource", *, max_pixels: int = MAX_PIXELS, min_size: int = MIN_SIZE, name: Optional[str] = None
) -> Any:
    """Load a PNG, JPEG or DICOM (path, bytes or binary stream) as a grayscale 8-bit PIL image; errors name the
    file by `name` when given (an upload's own file name), else by its path."""
    from PIL import Image, ImageOps

    data, path = _read(source)
    name = name or path
    if not data:
        raise ValueError(f"{name}: file is empty")
    # A DICOM without its 128-byte preamble starts with a group 0002 or 0008 tag (little-endian), as pydicom writes it
    is_dicom = (data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)
                or data[:2] in (b"\x02\x00", b"\x08\x00") and data[2:4] in (b"\x00\x00", b"\x01\x00", b"\x02\x00",
                                                                        b"\x05\x00", b"\x08\x00", b"\x10\x00"))
    if is_dicom:
        pixels = _load_dicom(data, name, max_pixels, min_size)
        check_image_size(pixels.shape[1], pixels.shape[0], name, max_pixels, min_size)
        return Image.fromarray(pixels, mode="L")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ValueError(f"{name}: {err}") from None
    except (OSError, SyntaxError, ValueError):
        raise ValueError(f"{name}: not an image (PNG, JPEG or DICOM expected)") from None
    check_image_size(*image.size, name, max_pixels, min_size)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: truncated or corrupt image data ({err})") from None
    image = ImageOps.exif_transpose(image)
    return to_grayscale(image)


class SAERadImageProcessor(BitImageProcessorPil):
    """The backbone's resize, centre crop and normalisation (BiT's, as RAD-DINO's), after refusing what no radiograph
    is (more than 10^8 pixels, under 32 px a side, more elongated than 1:10) and stretching 16-bit, 32-bit and float
    images to 8 bits over their own range, as saerad's image loader does for files."""

    def preprocess(self, images, *args, **kwargs):
        listed = images if isinstance(images, (list, tuple)) else [images]
        checked = [_checked_image(im, f"image {i}") for i, im in enumerate(listed)]
        return super().preprocess(checked if isinstance(images, (list, tuple)) else checked[0], *args, **kwargs)


def as_checked_processor(processor):
    """A BiT image processor (RAD-DINO's, saerad's backbones') as an SAERadImageProcessor with the same settings;
    any other processor as it is."""
    if type(processor).__name__ not in ("BitImageProcessor", "BitImageProcessorPil", "BitImageProcessorFast"):
        return processor
    settings = {k: v for k, v in processor.to_dict().items() if k not in ("image_processor_type", "auto_map")}
    return SAERadImageProcessor(**settings)


def default_image_processor(vision_config):
    """An image processor for a backbone config: resize and centre-crop to its image size, grayscale to RGB (a plain
    BiT processor; an SAE-Rad model folder saves it as an SAERadImageProcessor)."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        from transformers import BitImageProcessor as processor_class
    else:
        processor_class = BitImageProcessorPil
    size = getattr(vision_config, "image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return processor_class(
        do_resize=True, size={"shortest_edge": size}, do_center_crop=True, crop_size={"height": size, "width": size},
        do_convert_rgb=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )


SAERadImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "SAERadImageProcessor",
    "as_checked_processor",
    "check_image_size",
    "default_image_processor",
    "load_image",
    "stretch_to_uint8",
    "to_grayscale",
]
