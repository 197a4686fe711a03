"""The metric modules as the Hub serves them: staged by `saerad push --metrics ORG --dry-run`, loaded with
`evaluate.load` in a fresh venv built from their requirements alone (no saerad, no torch), where they reproduce
`saerad evaluate`'s results.json and label the IU X-ray reports as the toolkit does."""

import ast
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from saerad.cli import main
from saerad.evaluation import METRIC_NAMES
from saerad.evaluation.metric_spaces import SPLITTER_NAMES, STANDALONE, shipped_files, stage_metrics
from saerad.evaluation.runner import run_evaluation
from saerad.paths import cache_dir

from fixtures import image_file
from minimal_env import requirements_venv
from readme import blocks

# Reports with negation, uncertainty ("may", "cannot be excluded"), laterality and de-identification tokens.
REPORTS = ["Small left pleural effusion.", "Mild cardiomegaly. No effusion.", "The lungs are clear. XXXX normal.",
           "Right upper lobe consolidation, possibly pneumonia.", "No pneumothorax. Sternotomy wires.",
           "Heart size is enlarged. Atelectasis cannot be excluded.", "There may be mild pulmonary edema.",
           "No acute cardiopulmonary abnormality."]


def staged_folders(tmp_path: Path, org: str = "my-org") -> dict:
    """`saerad push --metrics ORG --dry-run`, as a user runs it: the folders it prints, by metric."""
    import contextlib
    import io

    out = io.StringIO()
    tempfile.tempdir = str(tmp_path)  # the dry run's staging folder lands in the test's tmp_path
    try:
        with contextlib.redirect_stdout(out):
            assert main(["push", "--metrics", org, "--dry-run"]) == 0
    finally:
        tempfile.tempdir = None
    folders = {}
    for line in out.getvalue().splitlines():
        if line.startswith("would upload metric "):
            name, folder = line.split()[3], line.rsplit(": ", 1)[1]
            assert f"space {org}/{name} " in line
            folders[name] = Path(folder)
    return folders


def test_push_metrics_dry_run_stages_a_hub_metric_space_per_metric(tmp_path):
    from huggingface_hub import RepoCard
    from huggingface_hub.repocard import metadata_load

    folders = staged_folders(tmp_path)
    assert sorted(folders) == sorted(METRIC_NAMES)
    for name, folder in folders.items():
        meta = metadata_load(folder / "README.md")
        assert {"evaluate", "metric"} <= set(meta["tags"]) and meta["sdk"] == "gradio"
        assert (folder / meta["app_file"]).is_file() and RepoCard.load(folder / "README.md").data.title
        card = (folder / "README.md").read_text()
        assert f'evaluate.load("my-org/{name}")' in card and "## Limitations" in card and "## Citation" in card
        assert "launch_gradio_widget" in (folder / "app.py").read_text()
        assert "evaluate" in (folder / "requirements.txt").read_text()
        script = ast.parse((folder / f"{name}.py").read_text())
        absolute = {a.name.split(".")[0] for n in ast.walk(script) if isinstance(n, ast.Import) for a in n.names}
        absolute |= {n.module.split(".")[0] for n in ast.walk(script)
                     if isinstance(n, ast.ImportFrom) and not n.level}
        assert absolute <= {"datasets", "evaluate", "nltk", "pathlib"}, absolute
        # one owner: the standalone files ship byte for byte as the toolkit runs them
        for file in shipped_files(name):
            if file != "report_text.py":
                assert (folder / file).read_bytes() == (STANDALONE / file).read_bytes(), file


def test_staged_report_text_is_the_remote_codes_splitter(tmp_path):
    import composition_saerad

    folder = stage_metrics("o", str(tmp_path))["bleu"]
    spec = importlib.util.spec_from_file_location("staged_report_text", folder / "report_text.py")
    staged = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(staged)
    for name in SPLITTER_NAMES:
        ours, theirs = getattr(staged, name), getattr(composition_saerad, name)
        if callable(ours):
            assert inspect.getsource(ours) == inspect.getsource(theirs)
        else:
            assert ours == theirs
    text = "1. Dr. ___ noted a 2.5 cm nodule. XXXX x-XXXX unremarkable.\n\nNo effusion!"
    assert staged.split_sentences(text) == composition_saerad.split_sentences(text)


@pytest.fixture(scope="module")
def metric_venv(tmp_path_factory) -> Path:
    """One venv for every metric module: the union of their requirements.txt, cached by its hash."""
    folders = stage_metrics("o", str(tmp_path_factory.mktemp("reqs")))
    lines = sorted({line.strip() for f in folders.values() for line in (f / "requirements.txt").read_text().split("\n")
                    if line.strip()})
    return requirements_venv("\n".join(lines) + "\n", cache_dir("metric-venvs"))


def run_without_saerad(venv: Path, code: str, tmp_path: Path, *args: str) -> str:
    """Run `code` with the venv's Python, offline, where neither saerad nor torch is importable; its last line."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    run = subprocess.run([str(venv / "bin" / "python"), "-c", code, *args], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


SCORE = r"""
import json, sys
for banned in ("saerad", "torch", "modeling_saerad", "composition_saerad"):
    try:
        __import__(banned)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{banned} is importable")
import evaluate
staged, predictions = sys.argv[1], json.load(open(sys.argv[2]))
modules = {n: evaluate.load(f"{staged}/{n}") for n in ("bleu", "rouge", "meteor", "cider", "chexpert_f1")}
combined = evaluate.combine([modules[n] for n in ("bleu", "rouge", "meteor", "cider")])
out = {}
for system in predictions["systems"]:
    preds = [row[system] for row in predictions["rows"]]
    refs = [row["reference"] for row in predictions["rows"]]
    out[system] = {**combined.compute(predictions=preds, references=refs),
                   **modules["chexpert_f1"].compute(predictions=preds, references=refs,
                                                    uncertain_as_positive=predictions["uncertain_as_positive"])}
print(json.dumps(out))
"""


@pytest.fixture
def varied_dataset(tmp_path):
    root = tmp_path / "data"
    lines = []
    for k in range(24):
        image_file(root / f"{k}.png", k)
        lines.append(json.dumps({"file_name": f"{k}.png", "findings": REPORTS[k % len(REPORTS)] * (1 + k % 3),
                                 "split": "test" if k % 3 == 0 else "train", "id": f"r{k}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return f"imagefolder:{root}"


@pytest.mark.parametrize("uncertain_as_positive", [True, False])
def test_modules_reproduce_saerad_evaluate_without_saerad(metric_venv, varied_dataset, model_dir, tmp_path,
                                                         uncertain_as_positive):
    from saerad.evaluation.wordnet import wordnet_available

    out = tmp_path / "eval"
    results = run_evaluation(varied_dataset, model=str(model_dir), out=str(out), n_resamples=10,
                             uncertain_as_positive=uncertain_as_positive)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert list(results["systems"]) == ["sae-rad", "normal", "retrieval", "oracle"]
    payload = tmp_path / "predictions.json"
    payload.write_text(json.dumps({"systems": list(results["systems"]), "rows": rows,
                                   "uncertain_as_positive": uncertain_as_positive}))
    staged = staged_folders(tmp_path)
    theirs = json.loads(run_without_saerad(metric_venv, SCORE, tmp_path, str(next(iter(staged.values())).parent),
                                           str(payload)))
    saved = json.loads((out / "results.json").read_text())
    for system, metrics in saved["systems"].items():
        assert len(metrics) == 24 + wordnet_available()  # bleu 4, rouge, cider, chexpert 4 + 14 (+ meteor)
        assert {key: entry["value"] for key, entry in metrics.items()} == {
            key: value for key, value in theirs[system].items() if key in metrics}, system


LABEL = r"""
import json, sys
sys.path.insert(0, sys.argv[1])  # the staged Space folder's parent: its files import each other relatively
from chexpert_f1.chexpert_labeler import aggregate, label_mentions
mentions = [label_mentions(t) for t in json.load(open(sys.argv[2]))]
print(json.dumps({"labels": [aggregate(m) for m in mentions], "mentions": mentions}))  # label_report, in two steps
"""


def test_staged_labeler_labels_every_iu_report_as_the_toolkit(metric_venv, tmp_path):
    from saerad.data.iu import read_reports
    from saerad.labeler import aggregate, label_mentions

    try:
        reports = read_reports()
    except FileNotFoundError as err:
        pytest.skip(f"IU X-ray reports unavailable here: {err}")
    assert len(reports) == 3955
    texts = ["\n\n".join(r[k] for k in ("findings", "impression") if r[k]) for r in reports]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    staged = stage_metrics("o", str(tmp_path / "staged"))["chexpert_f1"]
    theirs = json.loads(run_without_saerad(metric_venv, LABEL, tmp_path, str(staged.parent),
                                           str(tmp_path / "texts.json")))
    mentions = [label_mentions(t) for t in texts]
    assert theirs["mentions"] == mentions
    assert theirs["labels"] == [aggregate(m) for m in mentions]
    assert sum(bool(labels) for labels in theirs["labels"]) > 3500  # the reports were read, and labelled


def test_toolkit_load_metric_runs_the_staged_module():
    from saerad.evaluation import chexpert_f1, load_metric

    module = load_metric("chexpert_f1")
    assert Path(inspect.getfile(type(module))).name == "chexpert_f1.py"
    preds, refs = ["Possible left effusion.", "No pneumothorax."], ["Left pleural effusion.", "Right pneumothorax."]
    assert module.compute(predictions=preds, references=refs, uncertain_as_positive=False) == chexpert_f1(
        preds, refs, uncertain_as_positive=False)
    assert sys.modules.get("saerad.evaluation.evaluate_modules") is None


def test_readme_evaluate_example_runs_without_saerad(metric_venv, tmp_path):
    (example,) = [block for block in blocks("python") if "evaluate.combine" in block]
    staged = next(iter(stage_metrics("o", str(tmp_path / "staged")).values())).parent
    printed = run_without_saerad(metric_venv, example.replace('"ORG/', f'"{staged}/'), tmp_path)
    result = ast.literal_eval(printed)  # the example prints the dict
    assert {"bleu_4", "rouge_l", "cider", "micro_f1_14", "f1_pleural_effusion"} <= set(result)


def test_push_without_a_model_or_metrics_or_with_a_bad_org_is_one_clear_line(capsys):
    assert main(["push", "--dry-run"]) == 2
    assert "needs a model folder and --repo-id ORG/NAME, or --metrics ORG" in capsys.readouterr().err
    assert main(["push", "--metrics", "org/name", "--dry-run"]) == 2
    assert "--metrics takes the Hub user or organisation" in capsys.readouterr().err


APP = r"""
import json, runpy, sys
import evaluate.utils
shown = []
evaluate.utils.launch_gradio_widget = shown.append  # Gradio 3 is the Hub's business; here: what app.py would show
for folder in sys.argv[1:]:
    runpy.run_path(f"{folder}/app.py", run_name="__main__")
print(json.dumps([[m.name, m.compute(predictions=["No effusion."], references=["No effusion."])] for m in shown]))
"""


def test_each_space_app_loads_its_own_script_beside_it(metric_venv, tmp_path):
    from saerad.evaluation.wordnet import wordnet_available

    folders = stage_metrics("o", str(tmp_path / "staged"))
    shown = json.loads(run_without_saerad(metric_venv, APP, tmp_path, *map(str, folders.values())))
    assert [name for name, _ in shown] == list(folders)
    assert all(result for name, result in shown if name != "meteor" or wordnet_available())  # each computed
