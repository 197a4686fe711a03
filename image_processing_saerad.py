# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""SAE-Rad's image processor and file reader: PNG, JPEG and DICOM radiographs (recognised by their bytes; nothing else
reaches a decoder) read as saerad reads them, refused by their size before decoding or inflating, and the backbone's
resize, crop and normalisation (BiT's, as RAD-DINO's), its own sizes bounded the same way."""

import io
import math
import os
import stat
import warnings
import zlib
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


# Only these formats reach a decoder, recognised by their first bytes: a file's name says nothing (an EPS named x.png
# went to Ghostscript), and Pillow would otherwise try every format it knows.
IMAGE_FORMATS = ("PNG", "JPEG", "DICOM")
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"))


def image_format(data: bytes, name: str = "") -> Optional[str]:
    """"PNG", "JPEG" or "DICOM" from a file's first bytes (a DICOM by its preamble, or without one by a first tag of
    group 0002 or 0008, or by a .dcm name when the bytes are no PNG or JPEG), else None."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if (data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)
            or data[:2] in (b"\x02\x00", b"\x08\x00") and data[2:4] in (b"\x00\x00", b"\x01\x00", b"\x02\x00",
                                                                    b"\x05\x00", b"\x08\x00", b"\x10\x00")):
        return "DICOM"
    return None


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


# Reading DICOM within bounds: the size of everything is known from the header before it is inflated or decoded.
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
MAX_DICOM_HEADER_BYTES = 16 << 20  # every element but the pixel data: a radiograph's header is a few KB
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_PIXEL_DATA = 0x7FE00010


def _dicom_meta(data: bytes) -> tuple:
    """(where the file meta group starts, where the data set starts, transfer syntax UID), read from group 0002,
    which is explicit VR little endian in every transfer syntax."""
    start = pos = 132 if data[128:132] == b"DICM" else 0
    syntax = ""
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00" and data[pos + 4:pos + 6].isalpha():
        element, vr = int.from_bytes(data[pos + 2:pos + 4], "little"), data[pos + 4:pos + 6]
        long = vr in _LONG_VRS
        header = 12 if long else 8
        length = int.from_bytes(data[pos + 8:pos + 12] if long else data[pos + 6:pos + 8], "little")
        if element == 0x0010:
            syntax = data[pos + header:pos + header + min(length, 64)].rstrip(b"\0 ").decode("ascii", "replace")
        pos += header + length
    return start, pos, syntax


def _dicom_header(head: bytes, name: str, deflated: bool, cut: bool) -> Any:
    """The data set up to its pixel data, parsed from the first bytes of the file (or of the inflated data set); an
    element over MAX_DICOM_HEADER_BYTES, or a header that does not end within it, is refused."""
    filereader = _pydicom(name).filereader

    seen = {}

    def stop(tag, vr, length) -> bool:
        if tag == _PIXEL_DATA:
            seen["pixels"] = True
        elif length != 0xFFFFFFFF and length > MAX_DICOM_HEADER_BYTES:
            seen["large"] = (tag, length)
        return bool(seen)

    buffer = io.BytesIO(head)
    try:
        header = (filereader.read_dataset(buffer, False, True, stop_when=stop) if deflated
                  else filereader.read_partial(buffer, stop, force=True))
    except Exception as err:  # pydicom raises many types for bytes that are no DICOM
        raise ValueError(f"{name}: not a readable DICOM file ({_one_line(err)})") from None
    if "large" in seen:
        tag, length = seen["large"]
        raise ValueError(f"{name}: DICOM element ({tag >> 16:04X},{tag & 0xFFFF:04X}) holds {length} bytes; elements "
                         f"other than the pixel data are limited to {MAX_DICOM_HEADER_BYTES}")
    if "pixels" not in seen:
        if cut:
            raise ValueError(f"{name}: DICOM header runs past {MAX_DICOM_HEADER_BYTES} bytes before any pixel data")
        raise ValueError(f"{name}: DICOM file has no pixel data")
    return header


def _pixel_bytes(ds: Any, name: str, max_pixels: int, min_size: int) -> int:
    """The bytes of pixel data the header declares, after refusing a size out of bounds."""
    try:
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
    return (rows * columns * frames * samples * bits + 7) // 8


def _inflate(inflater: Any, data: Any, limit: int, name: str) -> bytes:
    """At most `limit` bytes inflated from `data`; what is left of it stays in `inflater.unconsumed_tail`."""
    try:
        parts = [inflater.decompress(data, limit)]
        while inflater.unconsumed_tail and sum(map(len, parts)) < limit:
            parts.append(inflater.decompress(inflater.unconsumed_tail, limit - sum(map(len, parts))))
    except zlib.error as err:
        raise ValueError(f"{name}: the deflated DICOM data set is corrupt ({err})") from None
    return b"".join(parts)


def read_dicom(data: bytes, name: str, max_pixels: int = MAX_PIXELS, min_size: int = MIN_SIZE) -> Any:
    """A DICOM's data set, read within bounds: the header (every element but the pixel data, at most 16 MiB) first,
    then the rest only up to what its Rows, Columns, frames, samples and bits declare: a deflated data set
    (1.2.840.10008.1.2.1.99) is inflated with that cap (a 1.5 MB file inflated to 10.8 GB before), a plain one
    longer than that is refused, and the pixel data must have the declared length before anything is decoded."""
    pydicom = _pydicom(name)
    read_dataset, UID = pydicom.filereader.read_dataset, pydicom.uid.UID

    start, end, syntax = _dicom_meta(data[:1 << 16])
    view = memoryview(data)
    deflated = syntax == DEFLATED_SYNTAX
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflated else None
    head = _inflate(inflater, view[end:], MAX_DICOM_HEADER_BYTES + 1, name) if deflated else bytes(
        view[:end + MAX_DICOM_HEADER_BYTES + 1])
    cut = len(head) > MAX_DICOM_HEADER_BYTES + (0 if deflated else end)
    header = _dicom_header(head, name, deflated, cut)
    expected = _pixel_bytes(header, name, max_pixels, min_size)
    # encapsulated pixel data (JPEG, RLE...) has no fixed length: it is bounded at twice the decoded size; a private
    # or unknown transfer syntax is treated so too
    known = bool(syntax) and UID(syntax).is_transfer_syntax
    compressed = bool(syntax) and not deflated and (not known or UID(syntax).is_compressed)
    limit = MAX_DICOM_HEADER_BYTES + (2 * expected + (1 << 16) if compressed else expected + 16)
    try:
        if deflated:
            body = head + _inflate(inflater, inflater.unconsumed_tail, limit + 1 - len(head), name)
            if len(body) > limit or inflater.unconsumed_tail:
                raise ValueError(f"{name}: the deflated DICOM inflates past {limit} bytes, while its header declares "
                                 f"{expected} bytes of pixel data")
            ds = read_dataset(io.BytesIO(body), False, True)
            ds.file_meta = pydicom.dataset.FileMetaDataset(read_dataset(io.BytesIO(data[start:end]), False, True))
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian  # the data set as inflated
        else:
            if len(data) - end > limit:
                raise ValueError(f"{name}: the DICOM holds {len(data) - end} bytes, while its header declares "
                                 f"{expected} bytes of pixel data")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError, KeyError, TypeError) as err:
        raise ValueError(f"{name}: not a readable DICOM file ({_one_line(err)})") from None
    length = len(ds.PixelData) if "PixelData" in ds else 0
    if not compressed and length not in (expected, expected + 1):
        raise ValueError(f"{name}: the pixel data holds {length} bytes; Rows x Columns x frames x samples x bits "
                         f"declare {expected}")
    return ds


def _check_luts(ds: Any, name: str) -> None:
    """Refuse a LUT shorter than its descriptor (pydicom raised IndexError) or a window no wider than 0."""
    for keyword, what in (("ModalityLUTSequence", "modality LUT"), ("VOILUTSequence", "VOI LUT")):
        for item in (ds[keyword].value[:1] if keyword in ds else []):
            descriptor = list(item.get("LUTDescriptor") or [])
            data = item.get("LUTData")
            if isinstance(data, (bytes, bytearray)):
                entries = len(data) // (2 if len(descriptor) == 3 and descriptor[2] > 8 else 1)
            else:
                entries = 1 if isinstance(data, int) else len(data or [])
            declared = (descriptor[0] or 65536) if descriptor else 0
            if len(descriptor) != 3 or entries < declared:
                raise ValueError(f"{name}: the {what} holds {entries} entries; its descriptor {descriptor} declares "
                                 f"{declared}")
    widths = ds.get("WindowWidth")
    if widths is not None:
        width = float(widths[0] if hasattr(widths, "__len__") and not isinstance(widths, str) else widths)
        if not (width > 0 and math.isfinite(width)):
            raise ValueError(f"{name}: WindowWidth {width:g} must be a positive number")


def _dicom_pixels(ds: Any, name: str) -> Any:
    """The first frame of a checked DICOM as 8-bit grayscale: the modality LUT and window or VOI LUT applied to a
    monochrome image (MONOCHROME1 inverted), a PALETTE COLOR image through its palette, colour to luminance."""
    import numpy as np
    from PIL import Image
    pixels_module = _pydicom(name).pixels

    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for truncated or unsupported pixel data
        raise ValueError(f"{name}: cannot decode the DICOM pixel data ({_one_line(err)})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    _check_luts(ds, name)
    try:
        if photometric == "PALETTE COLOR":
            pixels = pixels_module.apply_color_lut(pixels, ds)
        elif photometric.startswith("MONOCHROME"):
            pixels = pixels_module.apply_modality_lut(pixels, ds)
            if "VOILUTSequence" in ds or "WindowCenter" in ds:
                pixels = pixels_module.apply_voi_lut(pixels, ds, index=0)
    except Exception as err:  # a malformed LUT or window pydicom cannot apply: the file's fault, named
        raise ValueError(f"{name}: cannot apply the DICOM's lookup table or window ({_one_line(err)})") from None
    if pixels.ndim == 3:  # colour (a palette applied, or a secondary capture)
        return np.asarray(Image.fromarray(stretch_to_uint8(pixels)).convert("L"))
    pixels = stretch_to_uint8(np.asarray(pixels))
    return 255 - pixels if photometric == "MONOCHROME1" else pixels  # MONOCHROME1: high values are dark


def _pydicom(name: str) -> Any:
    """pydicom with the submodules the reader uses; a ValueError naming the file when it is not installed."""
    try:  # optional: transformers' remote-code check skips imports guarded like this
        import pydicom
        import pydicom.dataset
        import pydicom.errors
        import pydicom.filereader
        import pydicom.pixels
        import pydicom.uid
    except ImportError:
        raise ValueError(f"{name}: reading DICOM needs pydicom (pip install pydicom)") from None
    return pydicom


def _load_dicom(data: bytes, name: str, max_pixels: int = MAX_PIXELS, min_size: int = MIN_SIZE) -> Any:
    return _dicom_pixels(read_dicom(data, name, max_pixels, min_size), name)


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
    kind = image_format(data, name)
    if kind is None:  # nothing else reaches a decoder (an EPS named x.png went to Ghostscript)
        raise ValueError(f"{name}: not an image (PNG, JPEG or DICOM expected)")
    if kind == "DICOM":
        pixels = _load_dicom(data, name, max_pixels, min_size)
        check_image_size(pixels.shape[1], pixels.shape[0], name, max_pixels, min_size)
        return Image.fromarray(pixels, mode="L")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
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


def check_processor_size(size: Any, name: str = "size") -> None:
    """Refuse a resize or crop setting that makes an image of more pixels than the loader admits (a folder's
    `preprocessor_config.json` asking `shortest_edge: 60000` took the whole machine): a shortest edge s admits images
    up to s x (MAX_ASPECT s)."""
    if size is None:
        return
    if isinstance(size, int) and not isinstance(size, bool):
        size = {"shortest_edge": size}
    elif not isinstance(size, dict):  # transformers' SizeDict
        size = {k: v for k, v in vars(size).items() if not k.startswith("_")} if hasattr(size, "__dict__") else {
            k: getattr(size, k, None) for k in ("height", "width", "shortest_edge", "longest_edge", "max_pixels")}
    edges = {k: v for k, v in size.items() if v is not None}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in edges.values()):
        raise ValueError(f"{name} must be positive whole numbers of pixels; got {edges!r}")
    height, width = edges.get("height"), edges.get("width")
    shortest, longest = edges.get("shortest_edge"), edges.get("longest_edge")
    pixels = (height * width if height and width else shortest * min(longest or shortest * MAX_ASPECT,
                                                                      shortest * MAX_ASPECT) if shortest
              else longest * longest if longest else 0)
    if "max_pixels" in edges:
        pixels = min(pixels or edges["max_pixels"], edges["max_pixels"])
    if pixels > MAX_PIXELS:
        raise ValueError(f"{name} {edges} makes images of up to {pixels} pixels; the limit is {MAX_PIXELS}")


def check_processor_sizes(processor: Any, name: str = "image processor") -> Any:
    """`processor` after checking its `size` and `crop_size` with `check_processor_size`."""
    for key in ("size", "crop_size"):
        check_processor_size(getattr(processor, key, None), f"{name} {key}")
    return processor


class SAERadImageProcessor(BitImageProcessorPil):
    """The backbone's resize, centre crop and normalisation (BiT's, as RAD-DINO's), after refusing what no radiograph
    is (more than 10^8 pixels, under 32 px a side, more elongated than 1:10) and stretching 16-bit, 32-bit and float
    images to 8 bits over their own range, as saerad's image loader does for files. Its own `size` and `crop_size`
    are bounded the same way (`check_processor_size`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        check_processor_sizes(self, "preprocessor_config.json")

    def preprocess(self, images, *args, **kwargs):
        for key in ("size", "crop_size"):
            check_processor_size(kwargs.get(key), key)
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
    "check_processor_size",
    "check_processor_sizes",
    "default_image_processor",
    "image_format",
    "load_image",
    "read_dicom",
    "stretch_to_uint8",
    "to_grayscale",
]
