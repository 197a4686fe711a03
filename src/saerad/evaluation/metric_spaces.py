"""The metric modules as `evaluate` metric Spaces: staged folders that run without saerad, and `push --metrics`.

A staged folder holds the module script (`modules/<name>/<name>.py`), its README (metric card) and requirements,
an `app.py` with evaluate's Gradio widget, and the standalone files the script imports, copied byte for byte from
`standalone/` (the files the toolkit itself runs). The one exception is `report_text.py`: the toolkit's re-exports
the remote code's splitter, and the staged one is that splitter's source, cut from `composition_saerad.py`.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import NoAccess, Unreachable, UserError, first_line
from ..paths import cache_dir

STANDALONE = Path(__file__).parent / "standalone"
MODULES = Path(__file__).parent / "modules"
METRIC_NAMES = ("bleu", "rouge", "meteor", "cider", "chexpert_f1")
# What report_text.py holds on the Hub: these top-level names of composition_saerad.py, in its order (stdlib `re` only).
SPLITTER_NAMES = ("_IU_XRAY", "_DEID", "_ABBREVIATIONS", "_BOUNDARY", "normalize_deid", "_ends_sentence",
                  "split_sentences")
APP = '''from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load(str(Path(__file__).with_name("{name}.py")))
launch_gradio_widget(module)
'''
_RELATIVE = re.compile(r"^from \.(\w+) import", re.M)


def report_text_source() -> str:
    """`report_text.py` as the metric Spaces ship it: the remote code's splitter, cut from `composition_saerad.py`."""
    source = Path(importlib.util.find_spec("composition_saerad").origin).read_text()
    chunks = {}
    for node in ast.parse(source).body:
        names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else [
            t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        for name in set(names) & set(SPLITTER_NAMES):
            chunks[name] = ast.get_source_segment(source, node)
    missing = [n for n in SPLITTER_NAMES if n not in chunks]
    assert not missing, f"composition_saerad.py no longer defines {missing}"
    header = ('"""The report splitter and de-identification cleaner of saerad\'s remote code (composition_saerad.py), '
              'cut from it\nby `saerad push --metrics`: do not edit here."""\n\nimport re\n\n')
    functions = ("normalize_deid", "_ends_sentence", "split_sentences")
    return (header + "".join(chunks[n] + "\n" for n in SPLITTER_NAMES if n not in functions)
            + "".join(f"\n\n{chunks[n]}\n" for n in functions))


def shipped_files(name: str) -> list[str]:
    """The standalone files the module script of `name` imports (evaluate copies exactly these next to it)."""
    script = (MODULES / name / f"{name}.py").read_text()
    return sorted(f"{m}.py" for m in _RELATIVE.findall(script))


def stage_metric(name: str, folder: Path, org: str = "ORG") -> Path:
    """Write the metric Space of `name` into `folder` (created): script, app, card, requirements, standalone files."""
    if name not in METRIC_NAMES:
        raise UserError(f"unknown metric {name!r}; saerad ships {list(METRIC_NAMES)}")
    folder.mkdir(parents=True, exist_ok=True)
    source = MODULES / name
    shutil.copyfile(source / f"{name}.py", folder / f"{name}.py")
    shutil.copyfile(source / "requirements.txt", folder / "requirements.txt")
    (folder / "README.md").write_text((source / "README.md").read_text().replace("ORG/", f"{org}/"))
    (folder / "app.py").write_text(APP.format(name=name))
    for file in shipped_files(name):
        if file == "report_text.py":
            (folder / file).write_text(report_text_source())
        else:
            shutil.copyfile(STANDALONE / file, folder / file)
    return folder


def stage_metrics(org: str = "ORG", into: Optional[str] = None) -> dict[str, Path]:
    """One staged metric Space per metric under `into` (default: a new temporary folder)."""
    root = Path(into or tempfile.mkdtemp(prefix="saerad-metrics-"))
    return {name: stage_metric(name, root / name, org) for name in METRIC_NAMES}


def local_module(name: str) -> Path:
    """The staged folder of metric `name` in saerad's cache (content-addressed, so a stale copy is never loaded)."""
    digest = hashlib.sha256()
    for path in sorted((MODULES / name).iterdir()) + sorted(STANDALONE.glob("*.py")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    digest.update(report_text_source().encode())
    folder = cache_dir("metric-modules") / f"{name}-{digest.hexdigest()[:12]}" / name
    if not folder.exists():
        tmp = Path(tempfile.mkdtemp(dir=cache_dir("metric-modules"), prefix=".stage-"))
        stage_metric(name, tmp / name)
        folder.parent.mkdir(exist_ok=True)
        try:
            os.replace(tmp / name, folder)
        except OSError:  # another process staged it first: the same bytes
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def push_metrics(org: str, private: bool = False, dry_run: bool = False, token: Optional[str] = None,
                 into: Optional[str] = None) -> dict:
    """Stage every metric Space and (unless `dry_run`) create and upload them as Spaces `ORG/<metric>`."""
    if not org or "/" in org:
        raise UserError(f"--metrics takes the Hub user or organisation to publish under (e.g. my-org); got {org!r}")
    staged = stage_metrics(org, into)
    plan = {name: {"repo_id": f"{org}/{name}", "repo_type": "space", "space_sdk": "gradio", "private": private,
                   "folder": str(folder), "files": sorted(p.name for p in folder.iterdir())}
            for name, folder in staged.items()}
    if dry_run:
        return plan
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise NoAccess("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then push again")
    api = HfApi(token=token)
    try:
        for part in plan.values():
            api.create_repo(part["repo_id"], repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            api.upload_folder(folder_path=part["folder"], repo_id=part["repo_id"], repo_type="space",
                              commit_message="Upload saerad metric module (saerad push --metrics)")
    except PermissionError:
        raise
    except Exception as err:  # offline mode, DNS, refused connection, HTTP errors: one sentence for the user
        raise Unreachable(f"cannot reach the Hugging Face Hub to push metrics to {org} ({first_line(err)})") from None
    return plan
