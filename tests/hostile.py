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

from imaging import gradient, write_dicom, write_png


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


def model_cases() -> list[Case]:
    return [
        Case("model", "valid", _model_folder(lambda root: None), True),
        Case("model", "only a malicious pickle", _model_folder(_only_pickle), False, "pickled weights"),
        Case("model", "index naming a .bin", _model_folder(_index_to_bin), False, "not safetensors"),
        Case("model", "d_sae disagrees with the weights", _model_folder(_config(d_sae=128)), False,
             "do not fit config.json"),
        Case("model", "input_scale \"big\"", _model_folder(_config(input_scale="big")), False, "input_scale"),
        Case("model", "feature dictionary not UTF-8", _model_folder(
            lambda root: (root / "feature_dictionary.json").write_bytes(b'{"schema_version": 1, "\xff": 1}')),
             False, "not UTF-8"),
    ]


def all_cases() -> list[Case]:
    return image_cases() + dictionary_cases() + metadata_cases() + model_cases()


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
        if path.is_file() and path.stat().st_size and not path.name.endswith(".dcm"):
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
    from saerad.generate import load_model

    return {"load_model (Python API)": _api(lambda: load_model(str(path))),
            "saerad report (CLI)": _cli(["report", str(_first_image(model_dir)), "--model", str(path)])}


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
