import json

import pytest

from saerad.cli import main
from saerad.data.adapters import COMMON_COLUMNS, build_iu_phantom, load_spec, stable_split

from fixtures import make_imagefolder, make_iu, make_mimic


def test_mimic_cxr_official_splits_frontal_one_image_per_study(tmp_path):
    ds = load_spec(f"mimic-cxr:{make_mimic(tmp_path)}")
    assert set(ds) == {"train", "validation"}  # the test study has only a lateral view
    train = ds["train"]
    assert list(train.column_names[:7]) == list(COMMON_COLUMNS)
    assert sorted(train["id"]) == ["d1b", "d4a"]  # PA preferred over AP; lateral dropped
    row = train.filter(lambda r: r["id"] == "d1b")[0]
    assert row["view"] == "PA" and row["study_id"] == "s50000001" and row["subject_id"] == "p10000001"
    assert row["findings"] == "Made-up clear lungs." and row["impression"] == "Made-up normal."
    assert row["image"].size == (64, 64)
    assert ds["validation"]["findings"] == ["Made-up effusion."]


def test_mimic_cxr_filters(tmp_path):
    root = make_mimic(tmp_path)
    assert load_spec(f"mimic-cxr:{root}", require_findings=True)["train"]["id"] == ["d1b"]
    all_views = load_spec(f"mimic-cxr:{root}", frontal_only=False)
    assert all_views["test"]["view"] == ["LATERAL"]


def test_iu_xray_from_folder_with_images_and_stable_splits(tmp_path):
    ds = load_spec(f"iu-xray:{make_iu(tmp_path, with_images=True)}")
    rows = {r["id"]: (split, r) for split in ds for r in ds[split]}
    assert len(rows) == 6
    for rid, (split, row) in rows.items():
        assert split == stable_split(f"iu:{rid}")
        assert row["image"] is not None and row["image"].size == (64, 64)
    assert rows["2"][1]["mesh"] == ["Pleural Effusion/left/small"] and rows["3"][1]["findings"] is None
    assert sum(len(ds[s]) for s in ds) - len(load_spec(f"iu-xray:{tmp_path}", require_findings=True)["train"]) >= 1
    kept = load_spec(f"iu-xray:{tmp_path}", require_findings=True)
    assert kept.skipped == {"without findings": 6 - sum(len(kept[s]) for s in kept)} and ds.skipped == {}


def test_iu_xray_from_tgz(tmp_path):
    import tarfile

    make_iu(tmp_path / "src")
    with tarfile.open(tmp_path / "NLMCXR_reports.tgz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "ecgen-radiology", arcname="ecgen-radiology")
    ds = load_spec(f"iu-xray:{tmp_path / 'NLMCXR_reports.tgz'}")
    assert sum(len(ds[s]) for s in ds) == 6 and all(i is None for s in ds for i in ds[s]["image"])


def test_iu_phantom_pairs_real_text_with_phantoms_of_its_tags(tmp_path):
    ds = build_iu_phantom(str(make_iu(tmp_path)), size=128, num_proc=1)
    rows = {r["id"]: r for split in ds for r in ds[split]}
    assert set(rows) == {"1", "2", "4", "5", "6"}  # report 3 has no FINDINGS
    assert rows["2"]["phantom_findings"] == [
        {"label": "pleural_effusion", "laterality": "left", "zone": None, "severity": "small"}]
    assert rows["1"]["phantom_findings"] == [] and rows["2"]["image"].size == (128, 128)
    again = build_iu_phantom(str(tmp_path), size=128, num_proc=1)
    assert [r["image"].tobytes() for r in again["train"]] == [r["image"].tobytes() for r in ds["train"]]


def test_imagefolder_reads_reports_and_splits(tmp_path):
    ds = load_spec(f"imagefolder:{make_imagefolder(tmp_path)}")
    assert len(ds["train"]) == 2 and ds["test"]["id"] == ["case-b"]
    train = {r["id"]: r for r in ds["train"]}
    assert train["a"]["findings"] == "Made-up A." and train["a"]["impression"] == "Imp A."
    assert train["c"]["findings"] == "Made-up plain text without headers."


def test_save_to_disk_folder_round_trips_through_the_cli(tmp_path, capsys):
    out = tmp_path / "built"
    assert main(["data", "build", f"imagefolder:{make_imagefolder(tmp_path / 'src')}", "--out", str(out)]) == 0
    assert "train 2" in capsys.readouterr().out
    ds = load_spec(str(out))
    assert len(ds["train"]) == 2 and ds["test"][0]["findings"] == "Made-up B."


@pytest.mark.parametrize("spec,message", [("nonsense:x", "not understood"), ("mimic-cxr:/no/such", "no such folder"),
                                          ("imagefolder:/no/such", "no metadata.jsonl")])
def test_bad_specs_are_clear(spec, message, capsys):
    assert main(["data", "build", spec, "--out", "/tmp/never-written"]) == 2
    assert message in capsys.readouterr().err


def test_imagefolder_bad_line_names_file_and_line(tmp_path):
    make_imagefolder(tmp_path)
    with open(tmp_path / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "a.png"}) + "\n")
    with pytest.raises(ValueError, match=r"metadata.jsonl:4: needs"):
        load_spec(f"imagefolder:{tmp_path}")


def test_gallery_and_unmapped_report(tmp_path, capsys):
    out = tmp_path / "gallery.png"
    assert main(["data", "gallery", "--out", str(out)]) == 0 and out.stat().st_size > 10_000
    assert main(["data", "build", f"iu-phantom:{make_iu(tmp_path / 'iu')}", "--report-unmapped"]) == 0
    printed = capsys.readouterr().out
    assert "5/6" in printed and "Kyphosis" in printed
