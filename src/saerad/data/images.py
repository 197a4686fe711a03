"""One loader for chest X-ray images: PNG and JPEG (8/16-bit, any mode) and DICOM -> grayscale 8-bit PIL image.

It lives in the remote code (image_processing_saerad.py), so the Space and Hub users read files exactly as saerad
does; the toolkit's `load_image` only says which of its failures are the user's input."""

from typing import Any

import image_processing_saerad
from image_processing_saerad import (  # noqa: F401  (re-exported)
    DICOM_SUFFIXES,
    MAX_ASPECT,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    MIN_SIZE,
    ImageSource,
    to_grayscale,
)
from image_processing_saerad import check_image_size as check_size  # noqa: F401
from image_processing_saerad import stretch_to_uint8 as to_uint8  # noqa: F401

from ..errors import MissingInput, UserError


def load_image(source: ImageSource, **kw: Any) -> Any:
    """The remote code's `load_image`, its refusals (no such file, not an image, too large) raised as `UserError`."""
    try:
        return image_processing_saerad.load_image(source, **kw)
    except (FileNotFoundError, IsADirectoryError) as err:
        raise MissingInput(str(err)) from None
    except ValueError as err:
        raise UserError(str(err)) from None
