"""Dataset specs -> `datasets.DatasetDict` with the common columns
`id`, `image`, `findings`, `impression`, `indication`, `study_id`, `view` (plus adapter extras).

Specs: `mimic-cxr:PATH`, `iu-xray[:PATH]`, `iu-phantom[:REPORTS]`, `imagefolder:PATH`, or a folder written by
`save_to_disk`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

from ..errors import MissingInput, UserError
from .reports import parse_sections

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
COMMON_COLUMNS = ("id", "image", "findings", "impression", "indication", "study_id", "view")
SPEC_FORMS = "mimic-cxr:PATH, iu-xray[:PATH], iu-phantom[:REPORTS], imagefolder:PATH, or a save_to_disk folder"
IU_PHANTOM_VERSION = 1


def stable_hash(key: str) -> int:
    """A 32-bit integer from a string, the same in every process and on every machine (unlike `hash`)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


def stable_split(key: str) -> str:
    """About 80/10/10 train/validation/test by a hash of the id alone, so a test id never moves."""
    bucket = stable_hash(key) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def _features(extra: Optional[dict] = None):
    from datasets import Features, Image, Value

    features = {name: Value("string") for name in COMMON_COLUMNS if name != "image"}
    features["image"] = Image()
    features.update(extra or {})
    return Features({name: features[name] for name in (*COMMON_COLUMNS, *(extra or {}))})


def _to_dataset_dict(rows: dict, extra: Optional[dict] = None):
    from datasets import Dataset, DatasetDict

    features = _features(extra)
    out = {}
    for split in SPLITS:
        split_rows = rows.get(split) or []
        if split_rows:
            columns = {name: [r.get(name) for r in split_rows] for name in features}
            out[split] = Dataset.from_dict(columns, features=features)
    if not out:
        raise UserError("the dataset has no rows (check the path and the filters)")
    return DatasetDict(out)


def _read_csv(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def _find(root: Path, names: Iterable[str]) -> Optional[Path]:
    for name in names:
        for candidate in (root / name, *root.glob(f"*/{name}")):
            if candidate.exists():
                return candidate
    return None


def load_mimic_cxr(path: str, frontal_only: bool = True, require_findings: bool = False, strict: bool = False):
    """MIMIC-CXR-JPG: official splits, frontal views, one image per study preferring PA."""
    root = Path(path)
    if not root.is_dir():
        raise MissingInput(f"{path}: no such folder (expected the MIMIC-CXR-JPG root with files/)")
    metadata = _find(root, ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv"))
    split_file = _find(root, ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv"))
    if metadata is None or split_file is None:
        raise MissingInput(f"{path}: needs mimic-cxr-2.0.0-metadata.csv(.gz) and mimic-cxr-2.0.0-split.csv(.gz)")
    views = {r["dicom_id"]: r.get("ViewPosition") or "" for r in _read_csv(metadata)}
    studies: dict = defaultdict(list)
    for r in _read_csv(split_file):
        view = views.get(r["dicom_id"], "")
        if frontal_only and view not in ("PA", "AP"):
            continue
        studies[(r["subject_id"], r["study_id"], r["split"])].append((r["dicom_id"], view))
    rows: dict = defaultdict(list)
    missing = 0
    for (subject, study, split), images in sorted(studies.items()):
        dicom_id, view = min(images, key=lambda d: ({"PA": 0, "AP": 1}.get(d[1], 2), d[0]))
        folder = Path("files", f"p{subject[:2]}", f"p{subject}")
        image = root / folder / f"s{study}" / f"{dicom_id}.jpg"
        report = next((p for p in (root / folder / f"s{study}.txt",
                                   root / "mimic-cxr-reports" / folder / f"s{study}.txt") if p.exists()), None)
        if not image.exists() or report is None:
            missing += 1
            continue
        sections = parse_sections(report.read_text(errors="replace"))
        if require_findings and not sections["findings"]:
            continue
        rows["validation" if split == "validate" else split].append({
            "id": dicom_id, "image": str(image), "findings": sections["findings"],
            "impression": sections["impression"], "indication": sections["indication"],
            "study_id": f"s{study}", "view": view or None, "subject_id": f"p{subject}",
        })
    if missing:
        logger.warning("mimic-cxr: %d studies skipped for a missing image or report", missing)
    if strict and missing:
        raise UserError(f"{path}: {missing} studies have no image or report; build without --strict to skip them")
    from datasets import Value

    dataset = _to_dataset_dict(rows, {"subject_id": Value("string")})
    dataset.skipped = {"missing image or report": missing} if missing else {}
    return dataset


def load_iu_xray(path: Optional[str] = None, require_findings: bool = False):
    """IU X-ray reports (from PATH, else the cached archive), with images from PNGs under PATH when present."""
    from datasets import Sequence, Value

    from .iu import read_reports

    images = {}
    if path is not None and Path(path).is_dir():
        images = {p.stem: str(p) for p in Path(path).rglob("*.png")}
    rows: dict = defaultdict(list)
    skipped: dict = defaultdict(int)
    for report in read_reports(path):
        if require_findings and not report["findings"]:
            skipped["without findings"] += 1
            continue
        image = next((images[i] for i in report["images"] if i in images), None)
        rows[stable_split(f"iu:{report['id']}")].append({
            **report, "image": image, "study_id": report["id"], "view": None,
        })
    dataset = _to_dataset_dict(rows, {"comparison": Value("string"), "mesh": Sequence(Value("string"))})
    dataset.skipped = dict(skipped)
    return dataset


def phantom_seed(report_id: str) -> int:
    """The phantom patient drawn for an IU report in IU-phantom."""
    return stable_hash(f"iu-phantom:{report_id}")


def _phantom_row(report: dict, size: int) -> dict:
    from .mesh import findings_from_mesh
    from .phantom import render

    findings = findings_from_mesh(report["mesh"])
    buf = io.BytesIO()
    render(findings, seed=phantom_seed(report["id"]), size=size).save(buf, format="PNG")
    return {**report, "image": {"bytes": buf.getvalue(), "path": None}, "study_id": report["id"], "view": "PA",
            "phantom_findings": findings}


def build_iu_phantom(reports: Optional[str] = None, size: int = 256, num_proc: Optional[int] = None):
    """IU-phantom: each IU report with FINDINGS, paired with a phantom drawn from its MeSH tags."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from datasets import Sequence, Value
    from tqdm.auto import tqdm

    from .iu import read_reports

    selected = [r for r in read_reports(reports) if r["findings"]]
    num_proc = num_proc or min(os.cpu_count() or 1, 8)
    with ProcessPoolExecutor(num_proc) as pool:
        built = list(tqdm(pool.map(partial(_phantom_row, size=size), selected, chunksize=32),
                          total=len(selected), desc="rendering IU-phantom", unit="image"))
    rows: dict = defaultdict(list)
    for row in built:
        rows[stable_split(f"iu:{row['id']}")].append(row)
    finding = {k: Value("string") for k in ("label", "laterality", "zone", "severity")}
    return _to_dataset_dict(rows, {"comparison": Value("string"), "mesh": Sequence(Value("string")),
                                   "phantom_findings": [finding]})


def load_iu_phantom(reports: Optional[str] = None, size: int = 256):
    """IU-phantom from the cache, built on first use (never inside the repository: the reports are licensed)."""
    from datasets import load_from_disk

    from ..paths import cache_dir

    folder = cache_dir("datasets") / f"iu-phantom-v{IU_PHANTOM_VERSION}-{size}"
    if reports is None and (folder / "dataset_dict.json").exists():
        return load_from_disk(str(folder))
    dataset = build_iu_phantom(reports, size=size)
    if reports is None:
        _save_atomically(dataset, folder)
    return dataset


IMAGEFOLDER_TEXT_FIELDS = ("report", "findings", "impression", "indication", "split", "view")


def probe_image(path: Path) -> Optional[str]:
    """Why an image file cannot be a radiograph, read from its header alone (None when it looks readable)."""
    from PIL import Image, UnidentifiedImageError

    from .images import DICOM_SUFFIXES, check_size

    if not path.is_file():
        return "not a regular file"
    if path.stat().st_size == 0:
        return "empty file"
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM" or path.name.lower().endswith(DICOM_SUFFIXES):
        return None  # DICOM headers are checked when the image is decoded (the loader refuses in one line)
    # only PNG and JPEG reach Pillow, told which: an EPS named x.png would go to Ghostscript, a TIFF to libtiff
    formats = ["PNG"] if head.startswith(b"\x89PNG\r\n\x1a\n") else ["JPEG"] if head.startswith(b"\xff\xd8\xff") else []
    if not formats:
        return "not an image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=formats) as image:
                check_size(*image.size, str(path))
    except (UnidentifiedImageError, OSError, SyntaxError):
        return "not an image"
    except Image.DecompressionBombError:
        return "too many pixels"
    except ValueError:
        return "size out of bounds"
    return None


def _skips_line(skipped: dict) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))


def load_imagefolder(path: str, require_findings: bool = False, strict: bool = False):
    """Images plus `metadata.jsonl` (`file_name` and `report` or `findings`; optional `split`, `id`, ...). Rows whose
    image cannot be read are skipped and counted by reason in the result's `skipped` (with `strict`, an error)."""
    root = Path(path)
    files = sorted(root.rglob("metadata.jsonl")) if root.is_dir() else []
    if not files:
        raise MissingInput(f"{path}: no metadata.jsonl found (imagefolder:PATH needs one)")
    inside = root.resolve()
    rows: dict = defaultdict(list)
    seen: dict = {}  # id -> where it was first given
    skipped: dict = defaultdict(int)
    examples: dict = {}
    for meta in files:
        folder_split = meta.parent.name if meta.parent != root and meta.parent.name in SPLITS else None
        try:
            text = meta.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{meta}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as err:
                raise UserError(f"{meta}:{n}: not valid JSON ({err})") from None
            if not isinstance(record, dict):
                raise UserError(f"{meta}:{n}: each line must be a JSON object; got {type(record).__name__}")
            if "file_name" not in record or not ({"report", "findings"} & set(record)):
                raise UserError(f"{meta}:{n}: needs 'file_name' and a 'report' or 'findings' field")
            for field in ("file_name", *IMAGEFOLDER_TEXT_FIELDS):
                if record.get(field) is not None and not isinstance(record[field], str):
                    raise UserError(f"{meta}:{n}: '{field}' must be a string; got {type(record[field]).__name__}")
            for field in ("id", "study_id"):
                value = record.get(field)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
                    raise UserError(f"{meta}:{n}: '{field}' must be a string or an integer; got "
                                    f"{type(value).__name__}")
            image = (meta.parent / record["file_name"]).resolve()
            if os.path.isabs(record["file_name"]) or not image.is_relative_to(inside):
                raise UserError(f"{meta}:{n}: file_name {record['file_name']!r} is outside the dataset folder "
                                f"{root}; give a path relative to the metadata file")
            sections = parse_sections(record["report"]) if record.get("report") else {}
            findings = record.get("findings") or sections.get("findings")
            if record.get("report") and not (sections.get("findings") or sections.get("impression")):
                findings = findings or " ".join(record["report"].split())  # no headers: the text is the findings
            rid = str(record.get("id") if record.get("id") is not None else Path(record["file_name"]).stem)
            if rid in seen:
                raise UserError(f"{meta}:{n}: id {rid!r} repeats {seen[rid]}; ids must be unique")
            seen[rid] = f"{meta.name}:{n}"
            if require_findings and not findings:
                skipped["without findings"] += 1
                continue
            if not image.exists():
                raise MissingInput(f"{meta}:{n}: image {record['file_name']} not found")
            problem = probe_image(image)
            if problem:
                skipped[problem] += 1
                examples.setdefault(problem, f"{meta.name}:{n} {record['file_name']}")
                continue
            split = record.get("split") or folder_split or "train"
            if split not in SPLITS:
                raise UserError(f"{meta}:{n}: split must be one of {SPLITS}; got {split!r}")
            rows[split].append({
                "id": rid, "image": str(image), "findings": findings,
                "impression": record.get("impression") or sections.get("impression"),
                "indication": record.get("indication") or sections.get("indication"),
                "study_id": str(record.get("study_id") or rid), "view": record.get("view"),
            })
    unreadable = {k: v for k, v in skipped.items() if k != "without findings"}
    if strict and unreadable:
        first = "; ".join(f"{reason}: {where}" for reason, where in sorted(examples.items()))
        raise UserError(f"{path}: skipped rows ({_skips_line(unreadable)}; first: {first}); fix or remove them, "
                        "or build without --strict")
    dataset = _to_dataset_dict(rows)
    dataset.skipped = dict(skipped)
    return dataset


def load_spec(spec: str, require_findings: bool = False, frontal_only: bool = True, strict: bool = False):
    """Resolve a dataset spec string to a `DatasetDict` (its `skipped` attribute counts the rows left out, by
    reason, where the adapter reports them; `strict` makes an unreadable row an error)."""
    kind, _, path = spec.partition(":")
    if kind == "mimic-cxr" and path:
        return load_mimic_cxr(path, frontal_only=frontal_only, require_findings=require_findings, strict=strict)
    if kind == "iu-xray":
        return load_iu_xray(path or None, require_findings=require_findings)
    if kind == "iu-phantom":
        return load_iu_phantom(path or None)
    if kind == "imagefolder" and path:
        return load_imagefolder(path, require_findings=require_findings, strict=strict)
    if os.path.isdir(spec) and ({"dataset_dict.json", "state.json"} & set(os.listdir(spec))):
        from datasets import Dataset, DatasetDict, load_from_disk

        loaded = load_from_disk(spec)
        return DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded
    raise UserError(f"dataset spec {spec!r} not understood; expected {SPEC_FORMS}")


def load_split(spec: str, split: str, **options):
    """One split of a dataset spec, with a clear error when it is absent."""
    dataset = load_spec(spec, **options)
    if split not in dataset:
        raise UserError(f"{spec}: no split {split!r}; it has {sorted(dataset)}")
    return dataset[split]


def _save_atomically(dataset, folder: Path, report: Optional[dict] = None) -> None:
    import shutil
    import tempfile

    from ..outputs import MARKERS, atomic_write, replace_folder

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        dataset.save_to_disk(str(tmp))
        splits = {name: len(split) for name, split in dataset.items()} if hasattr(dataset, "items") else {}
        atomic_write(tmp / MARKERS["dataset"], json.dumps({"splits": splits, **(report or {})}, indent=1))
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_dataset(dataset, out: str, overwrite: bool = False, report: Optional[dict] = None) -> Path:
    """`save_to_disk` into `out` via a temporary folder, so nothing half-written is left on failure; an existing
    `out` is replaced only when saerad built it as a dataset (or `overwrite`); `report` goes into its manifest."""
    from ..outputs import output_folder

    folder = output_folder(out, "dataset", overwrite)
    _save_atomically(dataset, folder, report)
    return folder
