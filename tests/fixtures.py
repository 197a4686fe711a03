"""Miniature copies of the dataset layouts the adapters read, with made-up text and generated images."""

import csv
import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <uId id="CXR{id}"/>
   <IUXRId id="{id}"/>
   <MedlineCitation><Article><Abstract>
      <AbstractText Label="COMPARISON">{comparison}</AbstractText>
      <AbstractText Label="INDICATION">Made-up indication {id}.</AbstractText>
      <AbstractText Label="FINDINGS">{findings}</AbstractText>
      <AbstractText Label="IMPRESSION">Made-up impression {id}.</AbstractText>
   </Abstract></Article></MedlineCitation>
   <MeSH>{mesh}</MeSH>
   <parentImage id="CXR{id}_1_IM-00{id}-1001"><caption>Xray Chest PA and Lateral</caption></parentImage>
   <parentImage id="CXR{id}_1_IM-00{id}-2001"><caption>Xray Chest PA and Lateral</caption></parentImage>
</eCitation>
"""

IU_REPORTS = [
    (1, "Made-up: the lungs are clear. No effusion.", ["normal"]),
    (2, "Made-up: small left pleural effusion.", ["Pleural Effusion/left/small"]),
    (3, "", ["Cardiomegaly/mild"]),
    (4, "Made-up: right basilar opacity.", ["Opacity/lung/base/right", "Cardiomegaly"]),
    (5, "Made-up: calcified granuloma.", ["Calcified Granuloma/lung/upper lobe/left"]),
    (6, "Made-up: the heart is enlarged.", ["Cardiomegaly/moderate", "Kyphosis"]),
]


def image_file(path: Path, seed: int, size: int = 64, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_iu(root: Path, with_images: bool = False) -> Path:
    """`root/ecgen-radiology/N.xml` (+ `root/png/*.png` for the first image of each report)."""
    xml_dir = root / "ecgen-radiology"
    xml_dir.mkdir(parents=True)
    for rid, findings, mesh in IU_REPORTS:
        tags = "".join(f"<major>{t}</major>" for t in mesh)
        (xml_dir / f"{rid}.xml").write_text(IU_XML.format(id=rid, findings=findings, mesh=tags, comparison="None."))
        if with_images:
            image_file(root / "png" / f"CXR{rid}_1_IM-00{rid}-1001.png", rid)
    return root


def _write_csv_gz(path: Path, header: list, rows: list) -> None:
    with gzip.open(path, "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_mimic(root: Path) -> Path:
    """MIMIC-CXR-JPG in miniature: 4 studies (one lateral-only, one without findings), official split file."""
    studies = [
        # subject, study, split, [(dicom_id, view)], report
        ("10000001", "50000001", "train", [("d1a", "AP"), ("d1b", "PA"), ("d1c", "LATERAL")],
         "FINDINGS: Made-up clear lungs.\nIMPRESSION: Made-up normal."),
        ("10000002", "50000002", "validate", [("d2a", "AP")], "FINDINGS: Made-up effusion.\nIMPRESSION: Effusion."),
        ("10000003", "50000003", "test", [("d3a", "LATERAL")], "FINDINGS: Made-up lateral only."),
        ("10000004", "50000004", "train", [("d4a", "PA")], "IMPRESSION: Made-up impression only."),
    ]
    meta_rows, split_rows = [], []
    for subject, study, split, images, report in studies:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        for k, (dicom_id, view) in enumerate(images):
            image_file(folder / f"s{study}" / f"{dicom_id}.jpg", k, fmt="JPEG")
            meta_rows.append([dicom_id, subject, study, view])
            split_rows.append([dicom_id, study, subject, split])
        (folder / f"s{study}.txt").write_text(" FINAL REPORT\n " + report)
    _write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
                  meta_rows)
    _write_csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    return root


def make_imagefolder(root: Path) -> Path:
    """Images plus metadata.jsonl with `report` (sectioned or plain) or `findings`, and explicit splits."""
    records = [
        {"file_name": "a.png", "report": "FINDINGS: Made-up A. IMPRESSION: Imp A.", "split": "train"},
        {"file_name": "b.png", "findings": "Made-up B.", "split": "test", "id": "case-b"},
        {"file_name": "c.png", "report": "Made-up plain text without headers.", "split": "train"},
    ]
    for k, record in enumerate(records):
        image_file(root / record["file_name"], k)
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return root


def make_paired_folder(root: Path, n: int = 10, test_every: int = 0) -> str:
    """An imagefolder spec of `n` random images with made-up findings (every `test_every`-th in the test split)."""
    lines = []
    for k in range(n):
        image_file(root / f"{k}.png", k)
        split = "test" if test_every and k % test_every == 0 else "train"
        lines.append(json.dumps({"file_name": f"{k}.png", "findings": f"Made-up finding {k}.", "id": f"r{k}",
                                 "split": split}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return f"imagefolder:{root}"


def run_pipeline(tmp_path: Path, backbone_dir: Path, epochs: int = 5) -> str:
    """embed -> train -> interpret on a paired folder of 24 images, in `tmp_path` (emb/, sae/, interp/); the spec."""
    from saerad.cli import main

    spec = make_paired_folder(tmp_path / "data", n=24)
    assert main(["embed", "--backbone", str(backbone_dir), "--dataset", spec, "--out", str(tmp_path / "emb"),
                 "--num-workers", "0"]) == 0
    assert main(["train", "--embeddings", str(tmp_path / "emb"), "--architecture", "topk", "--k", "3",
                 "--expansion-factor", "2", "--epochs", str(epochs), "--batch-size", "8",
                 "--out", str(tmp_path / "sae")]) == 0
    assert main(["interpret", "--sae", str(tmp_path / "sae"), "--embeddings", str(tmp_path / "emb"), "--reports",
                 spec, "--holdout", "0.3", "--out", str(tmp_path / "interp")]) == 0
    return spec
