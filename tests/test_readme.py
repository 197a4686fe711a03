"""Every command the README shows runs, or (where it needs data this machine cannot have) parses."""

import os
import subprocess
import sys

from saerad.cli import COMMANDS, build_parser
from saerad.data.adapters import SPLITS

from imaging import write_dicom
from readme import README, blocks, shell_commands

ROOT = README.parent


def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) < 200
    assert {"## Install", "## Quick start"} <= {line.strip() for line in lines}


def test_every_readme_shell_command_is_a_real_command_with_real_options():
    commands = shell_commands()
    assert len(commands) >= 8
    for words in commands:
        if words[0] == "make":  # a target of the Makefile, as `make -n` (which runs nothing) finds it
            run = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
            assert run.returncode == 0, (words, run.stderr)
            continue
        if words[:3] == ["accelerate", "launch", "-m"]:
            words = words[3:]
        assert words[0] == "saerad" and words[1] in COMMANDS, words
        args = build_parser(only=words[1]).parse_args(words[1:])  # argparse exits on an unknown option or value
        if hasattr(args, "split"):
            assert args.split in SPLITS, words


def test_readme_python_example_runs(model_dir, tmp_path):
    import numpy as np

    (example,) = [block for block in blocks("python") if "AutoModel" in block]
    dicom = write_dicom(tmp_path / "cxr.dcm", (np.random.default_rng(0).random((64, 64)) * 4000).astype(np.uint16),
                        "MONOCHROME2")
    code = example.replace('"path/or/org-name"', repr(str(model_dir))).replace('"cxr.dcm"', repr(str(dicom)))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    assert "FINDINGS:" in run.stdout

