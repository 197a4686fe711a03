"""What a user installs: the built wheel (not the editable checkout) runs `saerad build` and `saerad push --dry-run`,
with the model card template and the Space folder read from its package data."""

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from fixtures import run_pipeline
from minimal_env import _requirement_names, make_site

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_wheel_builds_and_stages_a_push(tmp_path):
    wheels = tmp_path / "wheels"
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (wheel,) = wheels.glob("saerad-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "spaces"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert tracked and {f"saerad/_data/{f}" for f in tracked} <= names, "a Space file is missing from the wheel"
    from saerad.resources import REMOTE_CODE

    assert {"saerad/_data/model_card.md", *REMOTE_CODE} <= names
    assert {"saerad/assets/phantom-resnet/model.safetensors", "saerad/assets/phantom-dino/model.safetensors"} <= names
    assert not any("__pycache__" in n for n in names)

    # a fresh environment: the wheel installed on its own, beside the installed dependencies (not the checkout)
    installed = tmp_path / "installed"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(installed),
                          str(wheel)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    deps = make_site(tmp_path / "deps", _requirement_names(metadata.distribution("saerad")))
    assert not (deps / "saerad").exists()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{installed}{os.pathsep}{deps}", "HOME": str(tmp_path),
           "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def saerad(*args: str) -> str:
        done = subprocess.run([sys.executable, "-S", "-m", "saerad", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    where = subprocess.run([sys.executable, "-S", "-c", "import saerad; print(saerad.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(installed)), where

    # the SAE trained on the bundled demo backbone, which the installed wheel loads by the name its record gives
    run_pipeline(tmp_path, "saerad:phantom-resnet", epochs=3)
    # the pipeline's folder has no validation split to calibrate familiarity on (and datasets cannot fingerprint an
    # in-memory dataset under `python -S` with these symlinked dependencies: pyarrow's MonthDayNano)
    saerad("build", "--backbone", "saerad:phantom-resnet", "--sae", str(tmp_path / "sae"), "--dictionary",
           str(tmp_path / "interp" / "feature_dictionary.json"), "--out", str(tmp_path / "model"),
           "--calibration", "none")
    card = (tmp_path / "model" / "README.md").read_text()
    assert "## Data and license" in card and str(tmp_path) not in card and "--calibration none" in card
    record = json.loads((tmp_path / "model" / "saerad_build.json").read_text())
    assert record["backbone"] == record["build_args"]["backbone"] == "saerad:phantom-resnet"
    saerad("build", "--from-record", str(tmp_path / "model" / "saerad_build.json"), "--out", str(tmp_path / "again"))
    for name in ("model.safetensors", "config.json", "feature_dictionary.json", "README.md", *REMOTE_CODE):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "model" / name).read_bytes(), name
    assert json.loads((tmp_path / "model" / "config.json").read_text())["d_sae"] > 0
    out = saerad("push", str(tmp_path / "model"), "--repo-id", "me/sae-rad", "--space-id", "me/sae-rad-space",
                 "--dry-run")
    staged = Path(out.strip().splitlines()[-1].rsplit(" ", 1)[-1])
    assert all(f"  {name}" in out for name in ("app.py", "inference.py", "handlers.py", "page.py", "views.py",
                                                 "words.py", "requirements.txt"))
    assert '"me/sae-rad"' in (staged / "space" / "app.py").read_text()
    assert 'from_pretrained("me/sae-rad"' in (staged / "model" / "README.md").read_text()
    # the metric Spaces stage from the wheel's package data too (scripts, cards, requirements, standalone files)
    out = saerad("push", "--metrics", "me", "--dry-run")
    folders = [Path(line.rsplit(": ", 1)[1]) for line in out.splitlines() if line.startswith("would upload metric")]
    assert len(folders) == 5 and all((f / "README.md").is_file() and (f / "requirements.txt").is_file()
                                     for f in folders)
    assert {"chexpert_f1.py", "chexpert_labeler.py", "chexpert_phrases.py", "report_text.py", "app.py"} <= {
        p.name for p in folders[-1].iterdir()}
