"""One hostile corpus, generated (no binary fixtures), and the entry points it goes through.

`run_corpus(tmp)` writes every case under `tmp`, feeds each to every entry point that takes its kind and returns one
row per (entry point, case): what was expected (read or refused), what happened, and whether that is right. A refusal
is right when it is a one-line error naming the input (the CLI: exit 2, no traceback). `tests/test_hostile.py`
asserts every row; `benchmarks/hostile_corpus.py` prints the table in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from imaging import dicom_variant, gradient, write_deflated_dicom, write_dicom, write_png


@dataclass
class Case:
    kind: str  # image, dictionary, metadata, model
    name: str
    make: Callable[[Path], Path]
    valid: bool
    needle: str = ""  # a refusal's message must hold this (besides the input's name)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height over a few bytes of data (a bomb or a sliver)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _sliver(path: Path) -> Path:
    """A real 37 KB-class PNG of 1,200,000 x 32 pixels (the shortest-edge resize would make it 6.7 GB)."""
    Image.new("L", (1_200_000, 32)).save(path, optimize=True)
    return path


def _dicom_huge_header(path: Path) -> Path:
    """A DICOM whose header claims 20000 x 20000 pixels over a small pixel payload."""
    write_dicom(path, gradient(64, 64, 4095, np.uint16))
    import pydicom

    ds = pydicom.dcmread(str(path))
    ds.Rows, ds.Columns = 20000, 20000
    ds.save_as(str(path))
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _write(data: bytes, suffix: str = ".png") -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / f"case{suffix}"
        path.write_bytes(data)
        return path
    return make


def _at(name: str, make: Callable[[Path], Path]) -> Callable[[Path], Path]:
    def wrapped(folder: Path) -> Path:
        return make(folder / name)
    return wrapped


def _png_bytes(pixels: np.ndarray, fmt: str = "PNG", mode: str = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _voi_lut_short(ds) -> None:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUTDescriptor: 4096 entries
    item.add_new(0x00283006, "US", list(range(100)))  # LUTData: 100 of them
    ds.VOILUTSequence = [item]


def _palette(ds) -> None:
    """PALETTE COLOR: 8-bit indices into a grey ramp stored in the red, green and blue tables."""
    indices = (gradient(96, 80, 255, np.uint16) // 1).astype(np.uint8)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = indices.tobytes()
    ramp = [int(v) for v in np.linspace(65535, 0, 256)]  # inverted: the palette, not the indices, gives the picture
    for colour in ("Red", "Green", "Blue"):
        ds.add_new(f"{colour}PaletteColorLookupTableDescriptor", "US", [256, 0, 16])
        ds.add_new(f"{colour}PaletteColorLookupTableData", "OW", np.array(ramp, np.uint16).tobytes())


def _private(size: int) -> Callable:
    def change(ds) -> None:
        ds.add_new(0x00091010, "OB", bytes(size))
    return change


def _other_format(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient(96, 80)).save(buffer, format=fmt)
    return buffer.getvalue()


# An EPS whose PostScript would touch a file if Ghostscript ever rendered it.
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 96 80\n"
       b"(/tmp/saerad-hostile-eps-ran) (w) file closefile\n0 0 moveto 96 80 lineto stroke\nshowpage\n%%EOF\n")


def image_cases() -> list[Case]:
    ramp = gradient(96, 80)
    png = _png_bytes(ramp)
    return [
        Case("image", "8-bit PNG", _write(png), True),
        Case("image", "16-bit PNG", _at("c16.png", lambda p: write_png(p, gradient(96, 80, 65535, np.uint16))), True),
        Case("image", "JPEG", _write(_png_bytes(ramp, "JPEG"), ".jpg"), True),
        Case("image", "RGBA PNG", _write(_png_bytes(np.dstack([ramp] * 4))), True),
        Case("image", "DICOM MONOCHROME2", _at("c.dcm", lambda p: write_dicom(p, gradient(96, 80, 4095, np.uint16))),
             True),
        Case("image", "DICOM MONOCHROME1", _at("m1.dcm", lambda p: write_dicom(
            p, gradient(96, 80, 4095, np.uint16), photometric="MONOCHROME1")), True),
        Case("image", "1:3 PNG (a stitched long view)", _write(_png_bytes(gradient(300, 100))), True),
        Case("image", "zero bytes", _write(b""), False, "empty"),
        Case("image", "truncated PNG", _write(png[: len(png) // 2]), False, "truncated"),
        Case("image", "text as PNG", _write(b"FINDINGS: no effusion.\n" * 20), False, "not an image"),
        Case("image", "1x1 PNG", _write(_png_bytes(np.zeros((1, 1), np.uint8))), False, "smaller than the minimum"),
        Case("image", "20000x1 PNG", _at("wide.png", lambda p: _png_header_only(p, 20000, 1)), False, "smaller"),
        Case("image", "1,200,000x32 PNG", _at("sliver.png", _sliver), False, "more elongated"),
        Case("image", "60000x60000 PNG bomb", _at("bomb.png", lambda p: _png_header_only(p, 60000, 60000)), False,
             "exceeds"),
        Case("image", "20000x20000 DICOM header", _at("huge.dcm", _dicom_huge_header), False, "exceeds the limit"),
        Case("image", "DICOM without pixel data", _at("np.dcm", lambda p: write_dicom(
            p, gradient(96, 80, 4095, np.uint16), with_pixels=False)), False, "no pixel data"),
        Case("image", "truncated DICOM", lambda f: _write(
            write_dicom(f / "t0.dcm", gradient(96, 80, 4095, np.uint16)).read_bytes()[:400], ".dcm")(f), False,
             "DICOM"),
        Case("image", "a FIFO", _at("pipe.png", _fifo), False, "not a regular file"),
        Case("image", "a folder", lambda f: (f / "dir.png").mkdir() or f / "dir.png", False, "folder"),
        Case("image", "a missing path", lambda f: f / "missing.png", False, "no such file"),
        Case("image", "JPEG named .png (the bytes decide)", _write(_png_bytes(ramp, "JPEG")), True),
        Case("image", "EPS named .png", _write(EPS), False, "not an image"),
        Case("image", "TIFF named .png", _write(_other_format("TIFF")), False, "not an image"),
        Case("image", "BMP named .png", _write(_other_format("BMP")), False, "not an image"),
        Case("image", "GIF named .png", _write(_other_format("GIF")), False, "not an image"),
        Case("image", "WebP named .jpg", _write(_other_format("WEBP"), ".jpg"), False, "not an image"),
        Case("image", "deflated DICOM", _at("deflated.dcm", write_deflated_dicom), True),
        Case("image", "deflate bomb: 64x64 declared, 300 MB inflated", _at("bomb.dcm", lambda p: write_deflated_dicom(
            p, pixel_bytes=300 << 20)), False, "inflates past"),
        Case("image", "deflated DICOM with a 40 MB private element", _at("private.dcm", lambda p: write_deflated_dicom(
            p, private_bytes=40 << 20)), False, "elements other than the pixel data"),
        Case("image", "DICOM with a 20 MB private element", _at("private2.dcm", lambda p: dicom_variant(
            p, _private(20 << 20))), False, "elements other than the pixel data"),
        Case("image", "DICOM whose pixel data is doubled", _at("double.dcm", lambda p: dicom_variant(
            p, lambda ds: setattr(ds, "PixelData", ds.PixelData * 2))), False, "declare"),
        Case("image", "DICOM with 2 MB of excess pixel data", _at("excess.dcm", lambda p: dicom_variant(
            p, lambda ds: setattr(ds, "PixelData", ds.PixelData + bytes(2 << 20)))), False, "declare"),
        Case("image", "DICOM with a VOI LUT shorter than its descriptor", _at("voi.dcm", lambda p: dicom_variant(
            p, _voi_lut_short)), False, "VOI LUT holds"),
        Case("image", "DICOM with WindowWidth 0", _at("ww0.dcm", lambda p: write_dicom(
            p, gradient(96, 80, 4095, np.uint16), window=(2000, 0))), False, "WindowWidth"),
        Case("image", "DICOM PALETTE COLOR", _at("palette.dcm", lambda p: dicom_variant(p, _palette)), True),
    ]


def _dictionary(d_sae: int = 64, **changes) -> dict:
    from conftest import tiny_dictionary

    data = tiny_dictionary(d_sae)
    for key, value in changes.items():
        data["features"][0][key] = value
    return data


def _dict_file(payload) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "feature_dictionary.json"
        path.write_bytes(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        return path
    return make


def dictionary_cases() -> list[Case]:
    nested = {"schema_version": 1, "features": []}
    for _ in range(30):
        nested = {"schema_version": 1, "features": [], "x": nested}
    sides = _dictionary(findings=[{"label": "Pleural Effusion", "status": "positive", "laterality": None},
                                  {"label": "Pleural Effusion", "status": "positive", "laterality": "left"}])
    sides["features"][1]["findings"] = [dict(f) for f in sides["features"][0]["findings"]][::-1]
    return [
        Case("dictionary", "valid", _dict_file(_dictionary()), True),
        Case("dictionary", "one finding with side null and left", _dict_file(sides), True),
        Case("dictionary", "10 MB description", _dict_file(_dictionary(description="Effusion. " * 1_000_000)), False,
             "characters; the limit is"),
        Case("dictionary", "<script> in a description (plain text: read, escaped where shown)", _dict_file(
            _dictionary(description="Effusion. <script>alert(1)</script>")), True),
        Case("dictionary", "a NUL in a description", _dict_file(_dictionary(description="Effusion.\u0000")), False,
             "control characters"),
        Case("dictionary", "line separator in a description", _dict_file(_dictionary(description="A.\u2028B.")),
             False, "control characters"),
        Case("dictionary", "4 KB exemplar id", _dict_file(_dictionary(exemplars=["x" * 4096])), False, "limit"),
        Case("dictionary", "Latin-1 bytes", _dict_file(json.dumps(_dictionary(description="Épanchement."),
                                                                  ensure_ascii=False).encode("latin-1")), False,
             "not UTF-8"),
        Case("dictionary", "deeply nested JSON", _dict_file(b'{"a":' * 100_000 + b"1" + b"}" * 100_000), False,
             "nested deeper"),
        Case("dictionary", "nested 30 levels, valid JSON", _dict_file(nested), False, "nested deeper"),
        Case("dictionary", "description a number", _dict_file(_dictionary(description=7)), False, "must be a string"),
        Case("dictionary", "not JSON", _dict_file(b"{features: oops"), False, "not valid JSON"),
    ]


def _imagefolder(lines, files=None) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        root = folder / "ds"
        root.mkdir()
        write_png(root / "a.png", gradient(64, 64))
        write_png(root / "b.png", gradient(64, 64))
        for name, data in (files or {}).items():
            (root / name).write_bytes(data)
        raw = b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines)
        (root / "metadata.jsonl").write_bytes(raw + b"\n")
        return root
    return make


def metadata_cases() -> list[Case]:
    good = [{"file_name": "a.png", "findings": "No effusion."}, {"file_name": "b.png", "findings": "Cardiomegaly."}]
    return [
        Case("metadata", "valid", _imagefolder(good), True),
        Case("metadata", "broken images, counted", _imagefolder(
            [*good, {"file_name": "zero.png", "findings": "x"}, {"file_name": "text.png", "findings": "y"}],
            {"zero.png": b"", "text.png": b"not an image"}), True),
        Case("metadata", "Latin-1 file", _imagefolder([b'{"file_name": "a.png", "findings": "\xc9panchement."}']),
             False, "not UTF-8"),
        Case("metadata", "report is a list", _imagefolder([{"file_name": "a.png", "report": ["a", "b"]}]), False,
             "'report' must be a string"),
        Case("metadata", "file_name ../", _imagefolder([{"file_name": "../outside.png", "findings": "x"}]), False,
             "outside the dataset folder"),
        Case("metadata", "file_name absolute", _imagefolder([{"file_name": "/etc/passwd", "findings": "x"}]), False,
             "outside the dataset folder"),
        Case("metadata", "duplicate ids", _imagefolder([{**good[0], "id": "1"}, {**good[1], "id": "1"}]), False,
             "ids must be unique"),
        Case("metadata", "a line that is a list", _imagefolder([["a.png"]]), False, "JSON object"),
        Case("metadata", "not JSON", _imagefolder([b"{file_name: a.png"]), False, "not valid JSON"),
        Case("metadata", "deeply nested line", _imagefolder([b'{"a":' * 50_000 + b"1" + b"}" * 50_000]), False,
             "not valid JSON"),
    ]


MARKER = "/tmp/saerad-hostile-pickle-ran"


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _model_folder(change: Callable[[Path], None]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from conftest import tiny_model

        root = folder / "model"
        tiny_model().save_pretrained(root)
        change(root)
        return root
    return make


def _only_pickle(root: Path) -> None:
    import pickle

    (root / "model.safetensors").unlink()
    (root / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Evil()}))


def _index_to_bin(root: Path) -> None:
    import pickle

    (root / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Evil()}))
    (root / "model.safetensors").rename(root / "model-00001.safetensors")
    (root / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"sae.W_enc": "pytorch_model.bin", "sae.b_dec": "model-00001.safetensors"}}))


def _config(**changes) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        config = json.loads((root / "config.json").read_text())
        config.update(changes)
        (root / "config.json").write_text(json.dumps(config))
    return change


def _processor(**changes) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        settings = json.loads((root / "preprocessor_config.json").read_text())
        settings.update(changes)
        (root / "preprocessor_config.json").write_text(json.dumps({k: v for k, v in settings.items() if v is not None}))
    return change


def model_cases() -> list[Case]:
    return [
        Case("model", "valid", _model_folder(lambda root: None), True),
        Case("model", "only a malicious pickle", _model_folder(_only_pickle), False, "pickled weights"),
        Case("model", "index naming a .bin", _model_folder(_index_to_bin), False, "not safetensors"),
        Case("model", "d_sae disagrees with the weights", _model_folder(_config(d_sae=128)), False,
             "do not fit config.json"),
        Case("model", "input_scale \"big\"", _model_folder(_config(input_scale="big")), False, "input_scale"),
        Case("model", "preprocessor shortest_edge 60000", _model_folder(_processor(size={"shortest_edge": 60000})),
             False, "the limit is"),
        Case("model", "preprocessor crop_size 40000x40000", _model_folder(_processor(
            crop_size={"height": 40000, "width": 40000})), False, "the limit is"),
        Case("model", "a plain BitImageProcessor with shortest_edge 60000", _model_folder(_processor(
            size={"shortest_edge": 60000}, image_processor_type="BitImageProcessor", auto_map=None)), False,
             "the limit is"),
        Case("model", "normal_impression of 5 MB", _model_folder(_config(normal_impression="No. " * 1_250_000)),
             False, "normal_impression"),
        Case("model", "normal_impression with an ANSI escape", _model_folder(_config(
            normal_impression="\x1b[2J\x1b[31mNormal.")), False, "normal_impression"),
        Case("model", "input_scale Infinity", _model_folder(_config(input_scale=float("inf"))), False, "input_scale"),
        Case("model", "input_scale NaN", _model_folder(_config(input_scale=float("nan"))), False, "input_scale"),
        Case("model", "min_activation Infinity", _model_folder(_config(min_activation=float("inf"))), False,
             "min_activation"),
        Case("model", "d_sae 10^9 (terabytes of weights)", _model_folder(_config(d_sae=10**9)), False, "d_sae"),
        Case("model", "feature dictionary not UTF-8", _model_folder(
            lambda root: (root / "feature_dictionary.json").write_bytes(b'{"schema_version": 1, "\xff": 1}')),
             False, "not UTF-8"),
    ]


# Shared inputs of the toolkit's cases (a dataset, embeddings, an SAE, a dictionary, a backbone), made once by
# run_corpus: a case copies what it needs into its own folder and spoils one thing.
SHARED: dict = {}


def _jsonl_cases(kind: str, valid: Callable[[], list]) -> list[Case]:
    """One family for every JSONL the user hands a command (`evaluate --predictions`, `interpret --reports`)."""
    def lines(records) -> Callable[[Path], Path]:
        def make(folder: Path) -> Path:
            path = folder / f"{kind}.jsonl"
            rows = records() if callable(records) else records
            path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
            return path
        return make

    def spoiled(first) -> Callable[[Path], Path]:
        return lines(lambda: [first, *valid()[1:]])

    def raw(data: Callable[[], bytes]) -> Callable[[Path], Path]:
        return _at(f"{kind}.jsonl", lambda p: (p.write_bytes(data()), p)[1])

    def text() -> str:
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in valid())

    return [
        Case(kind, "valid", lines(valid), True),
        Case(kind, "valid, UTF-8 with a byte-order mark", raw(lambda: b"\xef\xbb\xbf" + text().encode()), True),
        Case(kind, "binary (a PNG)", raw(lambda: _png_bytes(gradient(40, 40))), False, "not UTF-8"),
        Case(kind, "binary (control bytes)", raw(lambda: bytes(range(256)) * 4), False, ""),
        Case(kind, "Latin-1 text", raw(lambda: text().replace("finding", "épanchement").encode("latin-1")), False,
             "not UTF-8"),
        Case(kind, "cp1252 quotes", raw(lambda: text().replace("finding", "\u201cfinding\u201d").encode("cp1252")),
             False, "not UTF-8"),
        Case(kind, "UTF-16", raw(lambda: text().encode("utf-16")), False, "UTF-16"),
        Case(kind, "a line that is an array", spoiled(["r0", "x"]), False, "JSON object"),
        Case(kind, "a line that is a number", spoiled(7), False, "JSON object"),
        Case(kind, "a line that is a string", spoiled("r0"), False, "JSON object"),
        Case(kind, "100k-deep nesting", spoiled(b"[" * 100_000 + b"]" * 100_000), False, "nested too deeply"),
        Case(kind, "not JSON", spoiled(b"{id: r0"), False, "not valid JSON"),
        Case(kind, "report NaN", spoiled(b'{"id": "r0", "findings": NaN}'), False, "must be a string"),
        Case(kind, "report a number", spoiled({"id": "r0", "findings": 3}), False, "must be a string"),
        Case(kind, "report a bool", spoiled({"id": "r0", "findings": True}), False, "must be a string"),
        Case(kind, "report a list", spoiled({"id": "r0", "findings": ["a"]}), False, "must be a string"),
        Case(kind, "report an object", spoiled({"id": "r0", "findings": {"a": 1}}), False, "must be a string"),
        Case(kind, "id a bool", spoiled({"id": True, "findings": "x"}), False, "'id' must be"),
        Case(kind, "id a list", spoiled({"id": ["r0"], "findings": "x"}), False, "'id' must be"),
        Case(kind, "duplicate ids", lines(lambda: [*valid(), valid()[0]]), False, "already given on line 1"),
        Case(kind, "a missing file", lambda f: f / "missing.jsonl", False, "no such file"),
        Case(kind, "a folder", lambda f: (f / "dir.jsonl").mkdir() or f / "dir.jsonl", False, "is a folder"),
    ]


def prediction_cases() -> list[Case]:
    return _jsonl_cases("predictions", lambda: [{"id": i, "findings": f"Made-up finding {i}."}
                                                for i in SHARED["test_ids"]])


def report_cases() -> list[Case]:
    return _jsonl_cases("reports", lambda: [{"id": i, "findings": f"Made-up finding {i}."}
                                            for i in SHARED["train_ids"]])


def _npy(array_or_bytes, name: str = "x.npy") -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        if isinstance(array_or_bytes, bytes):
            path.write_bytes(array_or_bytes)
        else:
            np.save(path, array_or_bytes(), allow_pickle=True)
        return path
    return make


def _npz_as_npy(folder: Path) -> Path:
    np.savez(folder / "x.npz", x=_rows())
    return (folder / "x.npz").rename(folder / "x.npy")


def _manifest(change: Callable[[dict], object]) -> Callable[[Path], Path]:
    """A copy of the shared embedding cache whose manifest is spoiled by `change` (its return value written, if any)."""
    def make(folder: Path) -> Path:
        import shutil

        root = folder / "emb"
        shutil.copytree(SHARED["emb"], root)
        manifest = json.loads((root / "manifest.json").read_text())
        out = change(manifest)
        data = out if isinstance(out, bytes) else json.dumps(manifest if out is None else out).encode()
        (root / "manifest.json").write_bytes(data)
        return root
    return make


def _rows(n: int = 64, d: int = 8) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)


def embedding_cases() -> list[Case]:
    structured = lambda: np.zeros(64, dtype=[("a", "f4"), ("b", "f4")])  # noqa: E731
    return [
        Case("embeddings", "valid .npy", _npy(_rows), True),
        Case("embeddings", "big-endian float32 (read as such)", _npy(lambda: _rows().astype(">f4")), True),
        Case("embeddings", "int16 rows (read as floats)", _npy(lambda: (_rows() * 100).astype(np.int16)), True),
        Case("embeddings", "valid cache folder", _manifest(lambda m: None), True),
        Case("embeddings", "zero rows", _npy(lambda: np.zeros((0, 8), np.float32)), False, "no embeddings"),
        Case("embeddings", "one row", _npy(lambda: _rows(1)), False, "at least 2"),
        Case("embeddings", "constant rows", _npy(lambda: np.ones((64, 8), np.float32)), False, "identical"),
        Case("embeddings", "all-zero rows", _npy(lambda: np.zeros((64, 8), np.float32)), False, "identical"),
        Case("embeddings", "1e30 values", _npy(lambda: _rows() * 1e30), False, "overflow"),
        Case("embeddings", "NaN values", _npy(lambda: np.where(_rows() > 2, np.nan, _rows())), False, "NaN"),
        Case("embeddings", "complex", _npy(lambda: _rows().astype(np.complex64)), False, "not a real number"),
        Case("embeddings", "structured", _npy(structured), False, "not a real number"),
        Case("embeddings", "bool", _npy(lambda: _rows() > 0), False, "not a real number"),
        Case("embeddings", "strings", _npy(lambda: np.array([["a"] * 8] * 64)), False, "not a real number"),
        Case("embeddings", "object (pickled)", _npy(lambda: np.array([[object()] * 8] * 64, dtype=object)), False,
             "not a readable .npy"),
        Case("embeddings", "text named .npy", _npy(b"0.1 0.2\n0.3 0.4\n"), False, "not a readable .npy"),
        Case("embeddings", "an .npz named .npy", _npz_as_npy, False, ".npz archive"),
        Case("embeddings", "1-D", _npy(lambda: _rows().ravel()), False, "2-D"),
        Case("embeddings", "manifest not JSON", _manifest(lambda m: b"{shards: ["), False, "not valid JSON"),
        Case("embeddings", "manifest a list", _manifest(lambda m: [m]), False, "must be a JSON object"),
        Case("embeddings", "manifest without shards", _manifest(lambda m: m.pop("shards") and None), False,
             "'shards'"),
        Case("embeddings", "manifest complete \"no\"", _manifest(lambda m: m.update(complete="no")), False,
             "'complete'"),
        Case("embeddings", "manifest ids fewer than rows", _manifest(lambda m: m.update(ids=m["ids"][:-3])), False,
             "ids for"),
        Case("embeddings", "manifest lists a shard twice", _manifest(lambda m: m.update(
            shards=m["shards"] + [{**m["shards"][-1], "rows": [m["shards"][-1]["rows"][1], len(m["ids"]) + 4]}],
            ids=m["ids"] + ["x1", "x2", "x3", "x4"])), False, "listed twice"),
        Case("embeddings", "manifest shard outside the folder", _manifest(lambda m: m["shards"][0].update(
            file="../../emb/shard-00000.safetensors")), False, "not the next file"),
        Case("embeddings", "manifest rows that disagree with the shard", _manifest(lambda m: m.update(
            shards=[{**m["shards"][0], "rows": [0, len(m["ids"]) - 1]}], ids=m["ids"][:-1])), False, "rows"),
        Case("embeddings", "a missing file", lambda f: f / "missing.npy", False, "no such file"),
    ]


def _build_inputs(folder: Path, spoil: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Copies of the shared SAE, dictionary and results in `folder`; `spoil(folder)` breaks one, returns its path."""
    import shutil

    shutil.copytree(SHARED["sae"], folder / "sae")
    shutil.copy(SHARED["dictionary"], folder / "feature_dictionary.json")
    (folder / "results.json").write_text(json.dumps(SHARED["results"]))
    return spoil(folder)


def _spoil(name: str, data) -> Callable[[Path], Path]:
    def spoil(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
        return path
    return spoil


def _linked_weights(folder: Path) -> Path:
    (folder / "sae" / "sae.safetensors").unlink()
    (folder / "sae" / "sae.safetensors").symlink_to("/etc/passwd")
    return folder / "sae" / "sae.safetensors"


def _other_backbone(folder: Path) -> Path:
    """A backbone of the same shape with other weights (phantom-dino for an SAE from phantom-resnet, in miniature)."""
    from conftest import tiny_backbone

    return tiny_backbone(folder / "other-backbone", seed=1)


def build_cases() -> list[Case]:
    results = lambda **c: {**SHARED["results"], **c}  # noqa: E731
    return [
        Case("build", "valid", lambda f: _build_inputs(f, lambda g: g / "sae"), True),
        Case("build", "sae.safetensors a link to a system file", lambda f: _build_inputs(f, _linked_weights), False,
             "not a readable safetensors"),
        Case("build", "sae_config.json a list", lambda f: _build_inputs(f, _spoil("sae/sae_config.json", [1])),
             False, "must be a JSON object"),
        Case("build", "sae_config.json without d_in", lambda f: _build_inputs(f, _spoil(
            "sae/sae_config.json", {"architecture": "topk", "d_sae": 16})), False, "expected d_in"),
        Case("build", "dictionary not JSON", lambda f: _build_inputs(f, _spoil("feature_dictionary.json", b"{x")),
             False, "not valid JSON"),
        Case("build", "dictionary a list", lambda f: _build_inputs(f, _spoil("feature_dictionary.json", [{}])),
             False, "must be a JSON object"),
        Case("build", "dictionary Latin-1", lambda f: _build_inputs(f, _spoil("feature_dictionary.json",
                                                                               b'{"\xe9": 1}')), False, "not UTF-8"),
        Case("build", "results not JSON", lambda f: _build_inputs(f, _spoil("results.json", b"<html>")), False,
             "not valid JSON"),
        Case("build", "results a list", lambda f: _build_inputs(f, _spoil("results.json", [])), False,
             "must be a JSON object"),
        Case("build", "results without systems", lambda f: _build_inputs(f, _spoil("results.json", results(
            systems=None))), False, "not the results.json"),
        Case("build", "results with a metric that is text", lambda f: _build_inputs(f, _spoil("results.json", results(
            systems={"sae-rad": {"bleu_4": {"value": "high"}}}))), False, "not the results.json"),
        Case("build", "an SAE trained on another backbone's embeddings", lambda f: _build_inputs(f, _other_backbone),
             False, "not the backbone"),
    ]


def all_cases() -> list[Case]:
    return (image_cases() + dictionary_cases() + metadata_cases() + model_cases() + prediction_cases()
            + report_cases() + embedding_cases() + build_cases())


# Entry points ----------------------------------------------------------------------------------------------------

def _cli(argv: list) -> tuple[bool, str]:
    """(succeeded, stderr) of `saerad ARGV` in-process; a traceback or an exit other than 0/2 raises."""
    from saerad.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    if code not in (0, 2) or "Traceback" in err.getvalue():
        raise AssertionError(f"saerad {' '.join(argv)}: exit {code}\n{err.getvalue()}")
    lines = [line for line in err.getvalue().splitlines() if line.startswith("saerad ")]
    return code == 0, lines[-1] if lines else ""


def _api(call: Callable[[], object]) -> tuple[bool, str]:
    try:
        call()
    except (ValueError, FileNotFoundError, OSError) as err:
        return False, str(err).splitlines()[0]
    return True, ""


def entry_points(case: Case, path: Path, model_dir: Path) -> dict:
    """{entry point: (succeeded, message)} for one case."""
    if case.kind == "image":
        from image_processing_saerad import SAERadImageProcessor
        from saerad.data.images import load_image

        processor = SAERadImageProcessor.from_pretrained(model_dir)
        out = {"load_image (Python API)": _api(lambda: load_image(path)),
               "saerad report (CLI)": _cli(["report", str(path), "--model", str(model_dir)])}
        png_or_jpeg = path.is_file() and path.read_bytes()[:3] in (b"\x89PN", b"\xff\xd8\xff")
        if png_or_jpeg and path.is_file() and path.stat().st_size:
            try:  # what a Hub user hands the processor: a PIL image opened without saerad's loader
                with Image.open(path) as image:
                    image = image.copy() if image.size[0] * image.size[1] < 10**8 else image
                    out["SAERadImageProcessor (Hub API)"] = _api(lambda: processor(images=image, return_tensors="pt"))
            except (OSError, SyntaxError, Image.DecompressionBombError):
                pass  # PIL itself cannot open it: nothing reaches the processor
        return out
    if case.kind == "dictionary":
        from conftest import tiny_model

        model = tiny_model()
        folder = path.parent
        tiny_model().save_pretrained(folder / "m")
        target = folder / "m" / "feature_dictionary.json"
        target.write_bytes(path.read_bytes())
        return {"load_feature_dictionary (Python API)": _api(lambda: model.load_feature_dictionary(path)),
                "saerad report (CLI)": _cli(["report", str(_first_image(model_dir)), "--model", str(folder / "m")])}
    if case.kind == "metadata":
        from saerad.data.adapters import load_spec

        return {"load_spec (Python API)": _api(lambda: load_spec(f"imagefolder:{path}")),
                "saerad data build (CLI)": _cli(["data", "build", f"imagefolder:{path}", "--out",
                                                 str(path.parent / "built")])}
    if case.kind == "model":
        from saerad.generate import load_model

        return {"load_model (Python API)": _api(lambda: load_model(str(path))),
                "saerad report (CLI)": _cli(["report", str(_first_image(model_dir)), "--model", str(path)])}
    return TOOLKIT_ENTRIES[case.kind](path)


def _predictions_entries(path: Path) -> dict:
    from saerad.evaluation.runner import read_predictions

    return {"read_predictions (Python API)": _api(lambda: read_predictions(str(path))),
            "saerad evaluate --predictions (CLI)": _cli(["evaluate", "--dataset", SHARED["spec"], "--predictions",
                                                         str(path), "--baselines", "", "--n-resamples", "10"])}


def _reports_entries(path: Path) -> dict:
    from saerad.interpret import read_reports

    return {"read_reports (Python API)": _api(lambda: read_reports(str(path), SHARED["train_ids"])),
            "saerad interpret --reports (CLI)": _cli(["interpret", "--sae", str(SHARED["sae"]), "--embeddings",
                                                      str(SHARED["emb"]), "--reports", str(path), "--out",
                                                      str(path.parent / "interp")])}


TRAIN = ["--architecture", "topk", "--k", "2", "--expansion-factor", "2", "--epochs", "1", "--batch-size", "8"]


def _embeddings_entries(path: Path) -> dict:
    from saerad.configs import TrainConfig
    from saerad.sae import train

    config = TrainConfig(architecture="topk", k=2, expansion_factor=2, epochs=1, batch_size=8)
    return {"saerad.sae.train (Python API)": _api(lambda: train(str(path), str(path.parent / "api-sae"), config)),
            "saerad train (CLI)": _cli(["train", "--embeddings", str(path), "--out", str(path.parent / "cli-sae"),
                                        *TRAIN])}


def _build_entries(path: Path) -> dict:
    from saerad.hub import build

    folder = next(p for p in (path.parent, path.parent.parent) if (p / "results.json").exists())
    backbone = str(path if path.name == "other-backbone" else SHARED["backbone"])
    inputs = {"sae": str(folder / "sae"), "dictionary": str(folder / "feature_dictionary.json"),
              "results": str(folder / "results.json")}
    argv = ["build", "--backbone", backbone, *[x for k, v in inputs.items() for x in (f"--{k}", v)]]
    return {"saerad.hub.build (Python API)": _api(lambda: build(backbone, inputs["sae"], inputs["dictionary"],
                                                                str(folder / "api-model"), results=inputs["results"])),
            "saerad build (CLI)": _cli([*argv, "--out", str(folder / "cli-model")])}


TOOLKIT_ENTRIES = {"predictions": _predictions_entries, "reports": _reports_entries,
                   "embeddings": _embeddings_entries, "build": _build_entries}


def make_shared(root: Path) -> None:
    """The toolkit cases' shared inputs: a dataset (a test split of 8), its train split embedded with a tiny
    backbone, an SAE and a feature dictionary, and a results.json."""
    from saerad.cli import main

    from conftest import tiny_backbone
    from fixtures import make_paired_folder

    backbone = tiny_backbone(root / "backbone")
    spec = make_paired_folder(root / "data", n=24, test_every=3)
    assert main(["embed", "--backbone", str(backbone), "--dataset", spec, "--out", str(root / "emb"),
                 "--num-workers", "0"]) == 0
    assert main(["train", "--embeddings", str(root / "emb"), "--out", str(root / "sae"), *TRAIN]) == 0
    assert main(["interpret", "--sae", str(root / "sae"), "--embeddings", str(root / "emb"), "--reports", spec,
                 "--holdout", "0.3", "--out", str(root / "interp")]) == 0
    metric = {"value": 0.5, "ci": [0.4, 0.6]}
    SHARED.update(spec=spec, backbone=backbone, emb=root / "emb", sae=root / "sae",
                  dictionary=root / "interp" / "feature_dictionary.json",
                  train_ids=[f"r{k}" for k in range(24) if k % 3], test_ids=[f"r{k}" for k in range(0, 24, 3)],
                  results={"dataset": spec, "split": "test", "n": 8, "labeler": "rule-based",
                           "systems": {"sae-rad": {"bleu_4": metric}, "normal": {"bleu_4": metric}}})


def _first_image(model_dir: Path) -> Path:
    path = model_dir.parent / "probe.png"
    if not path.exists():
        write_png(path, gradient(96, 80))
    return path


def run_corpus(tmp: Path) -> list[dict]:
    """Every case through every entry point: one row each."""
    from conftest import tiny_model

    model_dir = tmp / "reference-model"
    tiny_model().save_pretrained(model_dir)
    (tmp / "shared").mkdir()
    make_shared(tmp / "shared")
    rows = []
    for i, case in enumerate(all_cases()):
        folder = tmp / f"case-{i:02d}"
        folder.mkdir()
        path = case.make(folder)
        for entry, (succeeded, message) in entry_points(case, path, model_dir).items():
            # the Hub processor has no file name: it names the image by its place in the batch
            named = (str(path) in message or path.name in message or str(path.parent) in message
                     or ("Hub API" in entry and "image 0" in message))
            right = succeeded if case.valid else (not succeeded and case.needle in message and named)
            rows.append({"kind": case.kind, "case": case.name, "entry point": entry, "expected":
                         "read" if case.valid else "refused", "got": "read" if succeeded else message, "ok": right})
    return rows


def markdown(rows: list[dict]) -> str:
    """Cases per entry point and how many were handled as expected."""
    table = {}
    for row in rows:
        key = (row["kind"], row["entry point"])
        cases, handled = table.get(key, (0, 0))
        table[key] = (cases + 1, handled + row["ok"])
    lines = ["| input | entry point | cases | handled |", "|---|---|---|---|"]
    lines += [f"| {kind} | {entry} | {n} | {ok} |" for (kind, entry), (n, ok) in table.items()]
    return "\n".join(lines)
