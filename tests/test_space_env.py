"""The Space as the Hub builds it: a fresh virtual environment from spaces/requirements.txt alone, app.py started
from a copy of the Space folder, a report through gradio_client equal to model.generate."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_model
from minimal_env import requirements_venv

SPACE = Path(__file__).resolve().parents[1] / "spaces"
TORCH = os.environ.get("SAERAD_SPACE_TORCH", "torch==2.13.0")  # the CPU wheel on this machine's disk


def space_venv() -> Path:
    """A venv holding what requirements.txt lists and nothing else, built once per requirements file (cached under
    ~/.cache/saerad)."""
    # The Hub reads the index line (PyTorch's CPU wheels); this machine reaches PyPI only, so the line is left out
    # and torch is pinned to the CPU wheel on disk, which the requirement's range admits.
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "saerad" / "space-venvs"
    return requirements_venv((SPACE / "requirements.txt").read_text(), root, (TORCH,))


def test_the_space_runs_from_its_requirements_alone(tmp_path):
    from gradio_client import Client, handle_file
    from transformers import AutoImageProcessor, AutoModel

    venv = space_venv()
    python = venv / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import saerad"], capture_output=True, text=True)
    assert check.returncode != 0 and "No module named 'saerad'" in check.stderr  # the toolkit is not there
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    space = tmp_path / "space"
    shutil.copytree(SPACE, space, ignore=shutil.ignore_patterns("__pycache__"))
    port = 7000 + os.getpid() % 2000
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "SAERAD_MODEL": str(model_dir)}
    server = subprocess.Popen([str(python), "app.py", "--port", str(port), "--host", "127.0.0.1"], cwd=space,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client, deadline = None, time.time() + 240
        while client is None:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:
                if server.poll() is not None or time.time() > deadline:
                    server.kill()
                    pytest.fail(f"the Space did not start:\n{server.stdout.read()[-3000:]}")
                time.sleep(1)
        image = tmp_path / "chest.png"
        Image.fromarray((np.random.default_rng(3).random((80, 120)) * 255).astype(np.uint8)).save(image)
        text, result = client.predict(handle_file(str(image)), api_name="/report")
        model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)
        pixels = processor(images=Image.open(image).convert("L"), return_tensors="pt")["pixel_values"]
        expected = model.generate(pixels, return_dict_in_generate=True)
        assert text == expected.reports[0]
        assert [s["feature_ids"] for s in result["sentences"]] == [s["feature_ids"] for s in expected.sentences[0]]
    finally:
        server.terminate()
        server.wait(30)
