"""Test images written on the fly: PNGs of any depth and mode, DICOMs with any photometric interpretation."""

from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image


def gradient(height: int = 64, width: int = 48, maximum: int = 255, dtype=np.uint8) -> np.ndarray:
    """A left-to-right ramp from 0 to `maximum`."""
    row = np.linspace(0, maximum, width)
    return np.tile(row, (height, 1)).round().astype(dtype)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: Optional[float] = None,
    intercept: Optional[float] = None,
    window: Optional[tuple[float, float]] = None,
    with_pixels: bool = True,
) -> Path:
    """Write a minimal secondary-capture DICOM file."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_png(path: Path, pixels: np.ndarray, mode: Optional[str] = None) -> Path:
    """Write a PNG from an array (uint16 arrays become 16-bit PNGs)."""
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def write_deflated_dicom(path: Path, rows: int = 64, columns: int = 64, pixel_bytes: Optional[int] = None,
                         private_bytes: int = 0) -> Path:
    """A deflated DICOM (1.2.840.10008.1.2.1.99) declaring rows x columns 16-bit pixels, whose data set holds
    `pixel_bytes` of pixel data (default: what it declares; more makes a bomb) and a private element of
    `private_bytes` before it; zeros compress ~1000:1, so a 1.2 GB data set is a ~1.2 MB file."""
    import zlib

    import pydicom
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    plain = write_dicom(path, gradient(rows, columns, 4095, np.uint16))
    ds = pydicom.dcmread(plain)
    del ds.PixelData
    buffer = pydicom.filebase.DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False  # the data set a deflated file wraps
    write_dataset(buffer, ds)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflate.compress(buffer.getvalue())]

    def element(tag: int, vr: bytes, length: int) -> bytes:
        return (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") + vr + b"\0\0" + \
            length.to_bytes(4, "little")

    zeros = bytes(1 << 24)
    for tag, length in ((0x00091010, private_bytes), (0x7FE00010, pixel_bytes)):
        if tag == 0x7FE00010 and length is None:
            parts.append(deflate.compress(element(tag, b"OW", rows * columns * 2)))
            parts.append(deflate.compress(gradient(rows, columns, 4095, np.uint16).tobytes()))
            continue
        if not length:
            continue
        parts.append(deflate.compress(element(tag, b"OB", length)))
        for start in range(0, length, len(zeros)):
            parts.append(deflate.compress(zeros[: min(len(zeros), length - start)]))
    parts.append(deflate.flush())
    meta = pydicom.dcmread(plain).file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = pydicom.filebase.DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    path.write_bytes(out.getvalue() + b"".join(parts))
    return path


def dicom_variant(path: Path, change) -> Path:
    """A valid 96x80 MONOCHROME2 DICOM, then `change(ds)` applied and saved (a pydicom Dataset)."""
    import pydicom

    write_dicom(path, gradient(96, 80, 4095, np.uint16))
    ds = pydicom.dcmread(str(path))
    change(ds)
    ds.save_as(str(path))
    return path
