"""Upload to report in the Space's own handlers, for a 2,000 x 2,000 16-bit DICOM, on 2 CPU threads.

    python benchmarks/space_upload.py [--model ~/.cache/saerad/demo-v3/model] [--repeats 7] [--threads 1 2]

Times what the page runs after an upload, in one process (no browser, no network): the preview (file read, DICOM
decode, display copy), then the report with the Features tab filled in (`on_report`: generate with localisation,
explain, the tables), then the first sentence's overlay (`on_sentence`). Side by side, the same path for a 128 x 128
PNG shows what the large file costs, and each torch thread count is run in turn (on a busy machine two threads
wait for each other at every barrier). Prints medians (and the load average: the machine is shared) and the share of
the 1 s budget."""

import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from demo_model import model_parser, parse_model_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "spaces"))


def dicom(path: Path, side: int = 2000, seed: int = 0) -> Path:
    """A `side` x `side` 16-bit (12 stored) MONOCHROME2 DICOM with a chest-like gradient and noise."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    pixels = (2000 + 1500 * np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) * 8) + 1500 * np.exp(
        -((x - 0.7) ** 2 + (y - 0.5) ** 2) * 8) + rng.normal(0, 60, (side, side))).clip(0, 4095).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = side, side, 1, 16, 12, 11
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())
    return path


def timed(h, path: str) -> dict:
    """Seconds for the preview, preview + report, and preview + report + first overlay of one upload."""
    start = time.perf_counter()
    _, image, _ = h.on_preview(path)
    preview = time.perf_counter()
    out = h.on_report(image)
    report = time.perf_counter()
    if out[2]["result"]["sentences"]:
        h.on_sentence(0, 0.6, out[2])
    return {"preview": preview - start, "report": report - start, "overlay": time.perf_counter() - start}


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to compare")
    args = parse_model_args(parser)
    from PIL import Image

    from handlers import Handlers
    from inference import Loaded

    h = Handlers(Loaded(args.model))
    folder = Path(tempfile.mkdtemp())
    files = {"2000x2000 DICOM": dicom(folder / "large.dcm"),
             "128x128 PNG": folder / "small.png"}
    Image.fromarray((np.random.default_rng(1).random((128, 128)) * 255).astype(np.uint8)).save(files["128x128 PNG"])
    print(f"model {args.model}, {os.cpu_count()} CPUs, median of {args.repeats}, load average "
          f"{os.getloadavg()[0]:.1f} at the start\n")
    print("| torch threads | upload | file MB | preview s | upload to report s | + first overlay s | share of 1 s |")
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for path in files.values():
            timed(h, str(path))  # warm-up: first calls pay for lazy imports and allocator growth
        runs = {name: [timed(h, str(path)) for _ in range(args.repeats)] for name, path in files.items()}
        for name, path in files.items():
            med = {k: statistics.median(r[k] for r in runs[name]) for k in ("preview", "report", "overlay")}
            print(f"| {threads} | {name} | {path.stat().st_size / 2**20:.1f} | {med['preview']:.3f} | "
                  f"{med['report']:.3f} | {med['overlay']:.3f} | {med['report']:.2f} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
