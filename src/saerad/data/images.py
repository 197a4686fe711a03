"""One loader for chest X-ray images: PNG and JPEG (8/16-bit, any mode) and DICOM -> grayscale 8-bit PIL image.

It lives in the remote code (modeling_saerad.py), so the Space and Hub users read files exactly as saerad does."""

from modeling_saerad import (  # noqa: F401  (re-exported)
    DICOM_SUFFIXES,
    MAX_ASPECT,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    MIN_SIZE,
    ImageSource,
    load_image,
    to_grayscale,
)
from modeling_saerad import check_image_size as check_size  # noqa: F401
from modeling_saerad import stretch_to_uint8 as to_uint8  # noqa: F401
