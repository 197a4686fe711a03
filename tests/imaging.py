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
