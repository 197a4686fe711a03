"""A site-packages folder holding only some distributions and what they require: "an environment without saerad"."""

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    names = []
    for req in dist.requires or []:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue  # optional extras are not installed by a plain `pip install NAME`
        names.append(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
    return names


def closure(roots: list[str]) -> list[metadata.Distribution]:
    """The installed distributions `roots` need, transitively."""
    seen, todo, dists = set(), list(roots), []
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement only for another platform or Python
        dists.append(dist)
        todo.extend(_requirement_names(dist))
    return dists


def make_site(target: Path, roots: list[str]) -> Path:
    """Symlink the top-level entries of the closure of `roots` (code and .dist-info) into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for dist in closure(roots):
        base = Path(dist.locate_file(""))
        for file in dist.files or []:
            top = Path(file).parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            src, dst = base / top, target / top
            if src.exists() and not dst.exists():
                os.symlink(src, dst)
    return target


REMOTE_SCRIPT = r"""
import json, sys, torch
REMOTE = ("composition_saerad", "configuration_saerad", "familiarity_saerad", "image_processing_saerad",
          "localization_saerad", "modeling_saerad", "pipeline_saerad")
for banned in ("saerad", *REMOTE, "datasets", "accelerate", "gradio", "peft"):
    try:
        __import__(banned)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{banned} is importable in the minimal environment")
from transformers import AutoConfig, AutoImageProcessor, AutoModel, pipeline
from PIL import Image
folder, pixels_path, png = sys.argv[1], sys.argv[2], sys.argv[3]
pixels = torch.load(pixels_path)
# From here on every socket and every write is recorded (audit hooks see what any code does, remote code included).
events, phase = [], ["load"]
WRITES = ("w", "a", "x", "+")
def audit(event, args):
    if event == "open" and isinstance(args[0], int):
        return  # os.fdopen of a descriptor whose opening was recorded
    if event.startswith("socket.") and event != "socket.gethostname":
        events.append([phase[0], event, str(args[:2])])
    elif event == "open" and args[1] is not None and isinstance(args[1], str) and any(m in args[1] for m in WRITES):
        events.append([phase[0], "write", str(args[0])])
    elif event == "open" and isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        events.append([phase[0], "write", str(args[0])])
    elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.symlink"):
        events.append([phase[0], event, str(args[0])])
import os
sys.addaudithook(audit)
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
reporter = pipeline("radiology-report", model=folder, trust_remote_code=True)
phase[0] = "generate"
out = model.generate(pixels, return_dict_in_generate=True)
maps = model.localize(pixels)
grounded = model.generate(pixels, return_dict_in_generate=True, output_localization=True)
written = sorted({f for s in out.sentences[0] for f in s["feature_ids"]})
switched = model.generate(pixels[:1], feature_overrides={f: 0 for f in written})
explained = model.explain(pixels)
image = Image.new("L", (40, 50), 128)
processed = list(processor(images=image, return_tensors="pt")["pixel_values"].shape)
# the pipeline: one PIL image, one path, a list; each the model's own report for the processed image
direct = model.generate(processor(images=image, return_tensors="pt")["pixel_values"], return_dict_in_generate=True)
one, listed = reporter(image), reporter([png, image])
assert one["report"] == direct.reports[0] and one["sentences"] == direct.sentences[0], (one, direct.reports)
assert one["familiarity"] == direct.familiarity[0], one["familiarity"]
assert isinstance(listed, list) and listed[1] == one, listed
from_file = model.generate(processor(images=Image.open(png).convert("L"), return_tensors="pt")["pixel_values"])
assert listed[0]["report"] == from_file[0]
loaded = sorted({name.rsplit(".", 1)[-1] for name in sys.modules if name.startswith("transformers_modules.")})
print(json.dumps({
    "events": events,
    "maps_shape": list(maps.shape),
    "sides": [[s["side"] for s in sentences] for sentences in grounded.sentences],
    "switched_off": switched[0],
    "explained": [[row["feature_id"] for row in table] for table in explained],
    "config": config.to_dict(),
    "activations": out.feature_activations.tolist(),
    "reports": out.reports,
    "sentences": out.sentences,
    "processed_shape": processed,
    "pipeline": one,
    "remote_modules": [name for name in loaded if name in REMOTE],
    "familiarity": out.familiarity,
}))
"""


def generate_without_saerad(model_dir: Path, pixels, tmp_path: Path) -> dict:
    """Load `model_dir` with the Auto classes and its pipeline (remote code) in a fresh process that has only torch,
    transformers, safetensors and pillow, run generate on `pixels`, and return what it saw (config, activations,
    reports, the pipeline's output, the remote modules imported...)."""
    import torch

    site = make_site(tmp_path / "site", ["torch", "transformers", "safetensors", "pillow"])
    assert not (site / "saerad").exists() and not (site / "datasets").exists()
    torch.save(pixels, tmp_path / "pixels.pt")
    from PIL import Image

    Image.new("L", (48, 40), 90).save(tmp_path / "image.png")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    run = subprocess.run([sys.executable, "-S", "-c", REMOTE_SCRIPT, str(model_dir), str(tmp_path / "pixels.pt"),
                          str(tmp_path / "image.png")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def requirements_venv(requirements: str, root: Path, extra: tuple = ()) -> Path:
    """A venv holding what `requirements` (a requirements.txt's text) and `extra` list and nothing else, built once
    per requirements under `root` (in a temporary folder, then renamed, so a killed build is never reused). Option
    lines (`--index-url ...`) are left out: this machine reaches PyPI only."""
    import hashlib
    import shutil
    import tempfile

    import pytest

    key = hashlib.sha256((requirements + "".join(extra) + sys.version).encode()).hexdigest()[:16]
    venv = root / key
    if (venv / "bin" / "python").exists():
        return venv
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
    (tmp / "requirements.txt").write_text("\n".join(line for line in requirements.splitlines()
                                                   if not line.startswith("--")))
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True)
    run = subprocess.run([str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
                          "--disable-pip-version-check", *extra, "-r", str(tmp / "requirements.txt")],
                         capture_output=True, text=True)
    if run.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"pip install -r requirements.txt failed:\n{run.stderr[-3000:]}")
    # the venv's scripts hold its path; only `python -m` is used, so the rename is safe
    os.replace(tmp / "venv", venv)
    shutil.rmtree(tmp, ignore_errors=True)
    return venv
