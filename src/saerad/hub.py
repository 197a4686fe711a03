"""Assemble a model folder (`saerad build`), render its card, and publish it and its Space (`saerad push`)."""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Optional

from .data.terms import data_terms
from .errors import MissingInput, NoAccess, Unreachable, UserError, first_line
from .outputs import atomic_write, output_folder, replace_folder
from .resources import BUNDLED, REMOTE_CODE, bundled_name, resolve_backbone, resource

HEADLINE = ("micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5", "bleu_4", "rouge_l", "meteor", "cider")


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def dataset_name(value: Optional[str]) -> Optional[str]:
    """A dataset as a card names it: its spec (`iu-phantom`, `mimic-cxr:NAME`), never a path of the build machine. A
    folder saerad built names the spec it was built from; any other path is named by its last part."""
    if not value:
        return None
    path = Path(value)
    marker = path / "saerad_dataset.json"
    if path.is_dir() and marker.is_file():
        spec = json.loads(marker.read_text()).get("spec")
        if spec and spec != value:
            return dataset_name(spec)
    kind, sep, rest = value.partition(":")
    if sep and "/" not in kind and (os.sep in rest or "/" in rest):
        return f"{kind}:{Path(rest).name}"
    return path.name if (os.sep in value or "/" in value) and not hub_model_id(value) else value


def hub_model_id(name: str) -> Optional[str]:
    """`name` if it is a hub model id (ORG/NAME, not a local folder), else None: the Hub refuses a card whose
    `base_model` is not a model id, and a local path tells a reader nothing."""
    from .generate import REPO_ID

    return name if REPO_ID.match(name) and not os.path.exists(name) else None


def backbone_record_name(backbone: str) -> str:
    """How the build record and the card name a backbone, so that `--backbone` loads it again: a hub id, a bundled
    backbone's `saerad:NAME`, else a local folder by its name (not the build machine's path)."""
    return hub_model_id(backbone) or bundled_name(backbone) or Path(backbone).name


def _backbone_training(pretraining: Optional[dict]) -> str:
    """The card's line on what the backbone learnt from, when saerad pretrained it."""
    if not pretraining:
        return ""
    if pretraining["report_supervised"]:
        how = ("from the train split's (image, report) pairs: " + pretraining["description"] + ". Only the backbone "
               "learnt from the reports; the SAE, the describer and the composer remain unsupervised")
        if "phantom" in (pretraining["dataset"] or ""):
            how += (". It learnt from reports because the self-supervised backbones that train on a CPU spent their "
                    "embedding on the phantom patient and lung volume, not the findings (saerad's "
                    "docs/demo-backbone.md)")
    else:
        how = "self-supervised, from images alone: " + pretraining["description"]
    return f"\n- Backbone pretraining (`saerad pretrain` on `{pretraining['dataset']}`): {how}."


def _backbone_text(base_model: Optional[str], recorded: str) -> str:
    """The card's name for the backbone: a hub id, a bundled backbone, or a local folder by its name."""
    if base_model:
        return f"`{base_model}`"
    if recorded.startswith(BUNDLED):
        return f"`{recorded}`, bundled with saerad"
    return f"`{Path(recorded).name}`, a local folder"


def render_card(model_dir: str, results: Optional[dict] = None, repo_id: Optional[str] = None) -> str:
    """Write the model card README.md of a built model folder through huggingface_hub's `ModelCard` (the headline
    metrics of `results` as `EvalResult` entries of its model index, when given)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    folder = Path(model_dir)
    info = json.loads((folder / "saerad_build.json").read_text())
    training, interp = info.get("training_metrics", {}), info.get("interpret_metrics", {})
    dataset = dataset_name(info.get("dataset")) or "unknown"
    credentialed = dataset.startswith("mimic")
    # the weights and code are Apache-2.0, but feature_dictionary.json quotes the training reports: their terms rule
    license_ = "cc-by-nc-nd-4.0" if dataset.startswith("iu") else "other"
    base_model = info["base_model"] if "base_model" in info else hub_model_id(info["backbone"])
    meta = ModelCardData(
        license=license_, library_name="transformers", pipeline_tag="image-to-text", base_model=base_model,
        tags=["sae-rad", "saerad", "sparse-autoencoder", "interpretability", "chest-x-ray", "radiology",
              "report-generation"] + (["phantom"] if "phantom" in dataset else []),
        metrics=["f1", "bleu", "rouge", "meteor", "cider"],
    )
    if results:
        system = results["systems"].get("sae-rad", {})
        evaluated = dataset_name(results["dataset"]) or "unknown"
        meta.model_name = repo_id or "ORG/NAME"  # `saerad push` names the repo here, as in the usage snippet
        meta.eval_results = [
            EvalResult(task_type="image-to-text", task_name="Radiology report generation", dataset_name=evaluated,
                       dataset_type=evaluated.split(":")[0], dataset_split=results["split"], metric_type=k,
                       metric_name=k, metric_value=round(system[k]["value"], 4))
            for k in HEADLINE if k in system]
        header = "| system | " + " | ".join(k for k in HEADLINE if k in system) + " |"
        rows = [header, "|---|" + "---|" * sum(k in system for k in HEADLINE)]
        for name, metrics in results["systems"].items():
            rows.append(f"| {name} | " + " | ".join(_fmt(metrics[k]["value"]) for k in HEADLINE if k in system) + " |")
        table = "\n".join(rows)
        results_text = (f"On `{evaluated}` ({results['split']}, n = {results['n']}), FINDINGS against the "
                        f"reference, with bootstrap 95% CIs in `results.json` ({results['labeler']}):\n\n{table}")
    else:
        results_text = "Not evaluated yet: run `saerad evaluate` and rebuild with `--results results.json`."
    phantom = "phantom" in dataset
    fields = {
        "title": info.get("title") or f"SAE-Rad on {dataset}", "repo_id": repo_id or "ORG/NAME",
        "backbone": _backbone_text(base_model, info["backbone"]),
        "architecture": info["architecture"], "d_sae": info["d_sae"], "d_in": info["d_in"], "pooling": info["pooling"],
        "dataset": dataset, "n_train": training.get("n", "n/a"), "data_terms": data_terms(dataset),
        "l0": _fmt(training.get("l0"), 2), "fvu": _fmt(training.get("fvu")), "mse": _fmt(training.get("mse"), 4),
        "dead_fraction": _fmt(training.get("dead_fraction")), "describer": interp.get("describer", "n/a"),
        "n_live": interp.get("n_live", "n/a"), "n_low_support": interp.get("n_low_support", "n/a"),
        "min_score_support": interp.get("min_score_support", "n/a"), "median_auroc": _fmt(interp.get("median_auroc")),
        "frac_good": _fmt(interp.get("frac_live_auroc_ge_0_75")),
        "score_threshold": _fmt(info.get("min_feature_score")),
        "results": results_text, "familiarity": familiarity_card(info.get("familiarity"), results),
        "backbone_training": _backbone_training(info.get("backbone_pretraining")),
        "intended_use": ("This model was trained on phantom radiographs (procedurally drawn images paired with real IU "
                         "X-ray report text) to demonstrate the method offline; it knows nothing of real radiographs."
                         if phantom else "It is a research artefact for studying interpretable report generation."),
        "limitations": ("- The backbone knows only phantoms; the images show what each report's MeSH tags say, "
                        "nothing more.\n" if phantom else "")
                       + ("- Feature descriptions derive from credentialed MIMIC-CXR reports: do not share this "
                          "folder beyond what the PhysioNet data use agreement allows.\n" if credentialed else "")
                       + ("- Feature descriptions quote IU X-ray report text (CC BY-NC-ND 4.0): non-commercial use "
                          "only.\n" if dataset.startswith("iu") else ""),
    }
    body = string.Template(resource("model_card.md").read_text()).substitute(fields)
    card = ModelCard(f"---\n{meta.to_yaml()}\n---\n{body}")  # huggingface_hub writes (and parses) the metadata
    card.save(folder / "README.md")
    return str(card)


def familiarity_card(info: Optional[dict], results: Optional[dict] = None) -> str:
    """The card's paragraph on the familiarity check, from saerad_build.json (older builds have none) and the
    evaluation's count of flagged images."""
    from .familiarity import card_text

    if not info:
        return card_text(None, "built before saerad calibrated familiarity")
    text = card_text(None if info.get("calibrated") is False else info, info.get("reason", ""))
    counts = ((results or {}).get("familiarity") or {}).get("sae-rad")
    if counts and counts["available"]:
        text += (f" On the evaluated `{results['split']}` split it flagged {counts['n_flagged']} of {counts['n']} "
                 "images.")
    return text


def backbone_pretraining(backbone: str) -> Optional[dict]:
    """What a backbone made by `saerad pretrain` learnt from (its pretrain.json), for the card; None otherwise."""
    path = Path(resolve_backbone(backbone)) / "pretrain.json"
    if not path.is_file():
        return None
    from .pretrain import REPORT_SUPERVISED

    summary = json.loads(path.read_text())
    objective = summary.get("config", {}).get("objective", "thumbnail")
    return {"objective": objective, "description": summary.get("objective"), "dataset": summary.get("dataset"),
            "report_supervised": objective in REPORT_SUPERVISED}


def _read_inputs(sae_dir: str, dictionary: str, results: Optional[str]) -> tuple:
    """(SAE config, SAE weights, dictionary, results or None), each checked before any work: a damaged or foreign
    file is one line naming it."""
    from .files import read_json
    from .interpret.mine import read_sae_config, read_sae_weights

    if not (Path(sae_dir) / "sae_config.json").exists():
        raise MissingInput(f"{sae_dir}: no sae_config.json; run `saerad train` first")
    if not Path(dictionary).exists():
        raise MissingInput(f"{dictionary}: no such file; run `saerad interpret` first")
    evaluation = check_results(read_json(results, "evaluation results"), results) if results else None
    return read_sae_config(sae_dir), read_sae_weights(sae_dir), read_json(dictionary, "feature dictionary"), evaluation


def build(backbone: str, sae_dir: str, dictionary: str, out: str, results: Optional[str] = None,
          min_feature_score: Optional[float] = None, max_report_features: Optional[int] = None,
          min_activation: Optional[float] = None, title: Optional[str] = None, overwrite: bool = False,
          calibration: Optional[str] = None, calibration_rows: int = 1000, false_flag_rate: float = 0.01) -> Path:
    """Backbone + SAE + dictionary + processor + familiarity calibration (`_calibrate`) -> a model folder that loads
    with AutoModel (remote code); an existing `out` is replaced only when saerad built it as a model folder."""
    from configuration_saerad import SAERadConfig
    from modeling_saerad import SAERadModel

    from .embed import check_same_backbone, load_backbone

    target = output_folder(out, "model", overwrite)
    sae_path = Path(sae_dir)
    sae_config, sae_weights, data, evaluation = _read_inputs(sae_dir, dictionary, results)
    backbone_model, processor = load_backbone(backbone)
    vision = backbone_model.config
    given_score = min_feature_score
    features = data.get("features") if isinstance(data.get("features"), list) else []
    if min_feature_score is None and any(isinstance(f, dict) and f.get("score") is not None for f in features):
        min_feature_score = data.get("score_threshold")
    # the held-out precision a feature needs, chosen by `saerad interpret` (older dictionaries have none)
    min_feature_precision = data.get("precision_threshold") if any(
        f.get("precision") is not None for f in data.get("features", [])) else None
    overrides = {k: v for k, v in (("max_report_features", max_report_features), ("min_activation", min_activation))
                 if v is not None}
    vision_dict = vision.to_dict()
    vision_dict["_name_or_path"] = backbone_record_name(backbone)  # not the build machine's path
    try:  # the remote code validates the values and the dictionary; a refusal there is the user's input
        config = SAERadConfig(vision_config=vision_dict, pooling=sae_config.get("pooling") or "cls",
                              d_in=sae_config["d_in"], sae_architecture=sae_config["architecture"],
                              d_sae=sae_config["d_sae"], k=sae_config["k"] or 1, min_feature_score=min_feature_score,
                              min_feature_precision=min_feature_precision, **overrides)
        model = SAERadModel(config).eval()
        model.vision_model.load_state_dict(backbone_model.state_dict())
        model.sae.load_state_dict(sae_weights)
        model.load_feature_dictionary(dictionary)
    except (ValueError, RuntimeError) as err:  # RuntimeError: weights of other shapes than the config's
        raise UserError(first_line(err)) from None
    check_same_backbone(_embedded_with(sae_config), backbone, backbone_model, sae_dir)  # not silently another one
    model.image_processor = processor
    model.familiarity, familiarity = _calibrate(model, processor, sae_config, calibration, calibration_rows,
                                                false_flag_rate)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        model.save_pretrained(tmp)  # copies modeling_saerad.py and the modules it imports relatively
        missing = [name for name in REMOTE_CODE if not (tmp / name).is_file()]
        assert not missing, f"save_pretrained left out remote code {missing}"
        training = sae_path / "training_metrics.json"
        interp = Path(dictionary).with_name("interpret_metrics.json")
        info = {
            # the name that loads the backbone built in: bundled, else as the SAE's training recorded it
            "backbone": bundled_name(backbone) or backbone_record_name(sae_config.get("backbone") or backbone),
            "base_model": hub_model_id(sae_config.get("backbone") or backbone),
            "architecture": sae_config["architecture"],
            "d_sae": sae_config["d_sae"], "d_in": sae_config["d_in"], "pooling": config.pooling,
            "dataset": dataset_name(sae_config.get("dataset")), "min_feature_score": min_feature_score, "title": title,
            "training_metrics": {k: v for k, v in json.loads(training.read_text()).items()
                                 if k != "feature_density_histogram"} if training.exists() else {},
            "interpret_metrics": json.loads(interp.read_text()) if interp.exists() else {},
            "backbone_pretraining": backbone_pretraining(backbone),
            # what `saerad build --from-record` passes again: names, or paths relative to the model folder
            "build_args": {"backbone": hub_model_id(backbone) or bundled_name(backbone) or _near(backbone, target),
                           "sae": _near(sae_dir, target), "dictionary": _near(dictionary, target),
                           "results": _near(results, target), "min_feature_score": given_score,
                           "max_report_features": max_report_features, "min_activation": min_activation,
                           "title": title, "calibration": _recorded_calibration(calibration, target),
                           "calibration_rows": calibration_rows, "false_flag_rate": false_flag_rate},
            "familiarity": familiarity,
        }
        if "phantom" in (info["dataset"] or ""):  # drawn images: shown as thumbnails; real radiographs never are
            info["exemplar_thumbnails"] = write_thumbnails(sae_config.get("dataset"), data, tmp / THUMBNAILS)
        if captions_allowed(info["dataset"]):
            info["exemplar_captions"] = write_captions(sae_config.get("dataset"), data, tmp / THUMBNAILS)
        (tmp / "saerad_build.json").write_text(json.dumps(info, indent=1))
        render_card(str(tmp), evaluation)
        replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def attach_results(model_dir: str, results_path: str) -> str:
    """Render a built folder's card again with the results in `results_path`, which its build record then names (so
    that `build --from-record` writes the same card)."""
    folder = Path(model_dir)
    record = json.loads((folder / "saerad_build.json").read_text())
    record.setdefault("build_args", {})["results"] = _near(results_path, folder)
    atomic_write(folder / "saerad_build.json", json.dumps(record, indent=1))
    return render_card(model_dir, json.loads(Path(results_path).read_text()))


def _near(path: Optional[str], folder: Path) -> Optional[str]:
    """`path` relative to `folder` when it lies at most two levels up (as the demo's sae/ lies beside its model/);
    None further away, so that a record names no path of the build machine."""
    if path is None or not os.path.exists(path):
        return None
    relative = Path(os.path.relpath(Path(path).resolve(), folder))
    return relative.as_posix() if relative.parts.count("..") <= 2 else None


def build_from_record(record: str, out: str, overwrite: bool = False) -> Path:
    """Rebuild a model folder from its `saerad_build.json`: the same backbone (by its recorded name), SAE, dictionary,
    results and settings (paths as recorded, relative to the folder the record sits in)."""
    path = Path(record)
    if not path.is_file():
        raise MissingInput(f"{record}: no such file; expected a model folder's saerad_build.json")
    try:
        args = json.loads(path.read_text())["build_args"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{record}: no build_args (not a saerad_build.json, or one from an older saerad); run "
                        "`saerad build` with --backbone, --sae and --dictionary") from None
    missing = [f"--{k}" for k in ("backbone", "sae", "dictionary") if not args.get(k)]
    if missing:
        raise UserError(f"{record}: records no {', '.join(missing)} (it lay far from the model folder); run "
                        "`saerad build` naming them")

    def local(key: str) -> Optional[str]:
        value = args.get(key)
        return None if value is None else str(path.parent / value)

    backbone = args["backbone"]  # a folder recorded relative to the model folder, else a bundled name or hub id
    if not backbone.startswith(BUNDLED) and (path.parent / backbone).is_dir():
        backbone = local("backbone")
    return build(backbone, local("sae"), local("dictionary"), out, results=local("results"),
                 min_feature_score=args.get("min_feature_score"), max_report_features=args.get("max_report_features"),
                 min_activation=args.get("min_activation"), title=args.get("title"), overwrite=overwrite,
                 calibration=local("calibration") if (path.parent / str(args.get("calibration"))).exists()
                 else args.get("calibration"), calibration_rows=args.get("calibration_rows", 1000),
                 false_flag_rate=args.get("false_flag_rate", 0.01))


def _recorded_calibration(calibration: Optional[str], folder: Path) -> Optional[str]:
    """`--calibration` as the record names it: "none", a spec without a path, or a dataset folder near the model."""
    if calibration is None or calibration == "none":
        return calibration
    if os.path.exists(calibration):
        return _near(calibration, folder)
    return None if "/" in calibration or os.sep in calibration else calibration  # a spec with a path: not recorded


def _calibrate(model, processor, sae_config: dict, calibration: Optional[str], rows: int,
               false_flag_rate: float) -> tuple:
    """(calibration or None, its record for saerad_build.json): on the SAE's dataset, or `calibration` (a spec; "none"
    to skip). Explicit `calibration` errors are the user's; when the SAE's own dataset has no validation split (or is
    gone), the model is built without the check and the record (and so the card) says why."""
    import logging

    from .familiarity import calibrate, calibration_spec

    spec, fit_split = calibration_spec(sae_config, calibration)
    if spec is None:
        return None, {"calibrated": False, "reason": fit_split}
    try:
        fitted = calibrate(model, processor, spec, fit_split=fit_split, rows=rows, false_flag_rate=false_flag_rate,
                           name=dataset_name(spec))
    except UserError as err:
        if calibration:
            raise
        reason = str(err).replace(spec, dataset_name(spec) or "the SAE's dataset")  # no path of the build machine
        logging.getLogger(__name__).warning("familiarity check not calibrated: %s", reason)
        return None, {"calibrated": False, "reason": reason}
    return fitted, {k: v for k, v in fitted.items() if k not in ("mean", "precision")}


def check_results(data: dict, path: str) -> dict:
    """`results.json` from `saerad evaluate`, its shape checked before the card reads it."""
    systems = data.get("systems")
    ok = (isinstance(systems, dict) and all(isinstance(data.get(k), str) for k in ("dataset", "split", "labeler"))
          and isinstance(data.get("n"), int) and all(
              isinstance(metrics, dict) and all(isinstance(m, dict) and isinstance(m.get("value"), (int, float))
                                                and not isinstance(m.get("value"), bool) for m in metrics.values())
              for metrics in systems.values()))
    if not ok:
        raise UserError(f"{path}: not the results.json `saerad evaluate` writes (dataset, split, n, labeler, and "
                        "systems of metrics with a numeric value)")
    return data


def _embedded_with(sae_config: dict) -> dict:
    """The backbone and pooling an SAE's embeddings came from: its `sae_config.json`, completed from the embedding
    manifest it names (an SAE trained before the config kept the weights' sha256)."""
    from .embed import read_manifest

    embeddings = sae_config.get("embeddings")
    manifest = read_manifest(embeddings) if embeddings and Path(embeddings).is_dir() else None
    keys = ("backbone", "backbone_revision", "backbone_sha256", "pooling")
    return {k: sae_config.get(k) or (manifest or {}).get(k) for k in keys}


THUMBNAILS = "exemplars"  # the Space shows these beside a feature
THUMBNAIL_SIDE = 256  # the Space shows exemplars large and uncropped: 64 px lost the lung bases' detail
CAPTIONS = "captions.json"


def write_thumbnails(dataset: Optional[str], dictionary: dict, folder: Path, per_feature: int = 8) -> int:
    """Small PNGs of the top exemplars of every described feature (`folder/ID.png`), read from the dataset the SAE
    was trained on; how many were written (0 when that dataset is no longer there)."""
    if not dataset or not Path(dataset).is_dir():
        return 0
    from datasets import load_from_disk

    wanted = {str(e) for f in dictionary.get("features", []) if f.get("description")
              for e in f.get("exemplars", [])[:per_feature]}
    data = load_from_disk(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for split in (data.values() if hasattr(data, "values") else [data]):
        ids = [str(i) for i in split["id"]]
        for row in [k for k, i in enumerate(ids) if i in wanted]:
            image = split[row]["image"].convert("L")
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            image.save(folder / f"{ids[row]}.png", optimize=True)
            wanted.discard(ids[row])
            written += 1
    return written


def captions_allowed(dataset: Optional[str]) -> bool:
    """Whether the Space may quote a line of an exemplar's report beside it: phantom and imagefolder data, whose
    terms the dictionary already quotes under; never credentialed data (MIMIC-CXR), shown by id only."""
    name = (dataset or "").lower()
    return ("phantom" in name or name.startswith("imagefolder")) and not name.startswith("mimic")


def write_captions(dataset: Optional[str], dictionary: dict, folder: Path, per_feature: int = 8) -> int:
    """`folder/captions.json`: {exemplar id: the first whole sentence of its report's FINDINGS (else IMPRESSION)} for
    the top exemplars of every described feature; how many were written (0 when the dataset is no longer there)."""
    if not dataset or not Path(dataset).is_dir():
        return 0
    from datasets import load_from_disk

    from .data.reports import split_sentences

    wanted = {str(e) for f in dictionary.get("features", []) if f.get("description")
              for e in f.get("exemplars", [])[:per_feature]}
    data = load_from_disk(dataset)
    captions = {}
    for split in (data.values() if hasattr(data, "values") else [data]):
        columns = [c for c in ("findings", "impression") if c in split.column_names]
        for row in split.select_columns(["id", *columns]):
            if str(row["id"]) in wanted and str(row["id"]) not in captions:
                texts = [t for c in columns for t in split_sentences(row[c] or "")]
                # a fragment a splitter cut from its sentence ("and lateral chest ...") reads worse than a whole one
                text = next((t for t in texts if t[:1].isupper() and len(t.split()) >= 3), texts[0] if texts else None)
                if text:
                    captions[str(row["id"])] = text[:300]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CAPTIONS).write_text(json.dumps(captions, indent=0, sort_keys=True))
    return len(captions)


# What `saerad build` writes (besides the remote code): anything else in a folder is pushed only when named.
MODEL_FILES = ("config.json", "preprocessor_config.json", "feature_dictionary.json", "README.md", "saerad_build.json",
               "model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors",
               "generation_config.json", "familiarity.safetensors", f"{THUMBNAILS}/*.png", f"{THUMBNAILS}/{CAPTIONS}")


def _files_to_push(folder: Path, allowed: list, include: tuple = (), skip: tuple = ()) -> list[str]:
    """Every file under `folder` (relative names, sorted), after refusing a symbolic link anywhere in it (its
    target's contents would be uploaded), anything not a regular file, and files matching no `allowed` pattern
    unless named in `include`."""
    import fnmatch

    files, unknown = [], []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in sorted(dirs + names):
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise UserError(f"{path}: a symbolic link (to {os.readlink(path)}); push uploads no links, since their "
                                "target's contents would be sent: remove it or copy the file in")
            if name in names and not path.is_file():
                raise UserError(f"{path}: not a regular file; push uploads regular files only")
            if name in names:
                known = relative in include or any(fnmatch.fnmatchcase(relative, p) for p in allowed)
                (files if known else unknown).append(relative)
    if unknown:
        raise UserError(f"{folder}: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                        f"({len(unknown)} file{'s' * (len(unknown) > 1)}) not part of a saerad model folder or Space; "
                        "remove them, or name each with --include NAME to upload it")
    return sorted(files)


def push_plan(model_dir: str, repo_id: str, space_id: Optional[str] = None, private: bool = False,
              space_dir: Optional[str] = None, include: tuple = ()) -> dict:
    """What `push` would send: repos, their settings and the exact files (refused: links, unknown files)."""
    from .resources import remote_code_files

    folder = Path(model_dir)
    if not (folder / "config.json").exists():
        raise MissingInput(f"{model_dir}: not a model folder (no config.json); run `saerad build` first")
    files = _files_to_push(folder, [*MODEL_FILES, *remote_code_files()], tuple(include))
    plan = {"model": {"repo_id": repo_id, "repo_type": "model", "private": private, "folder": str(folder),
                      "files": files}}
    if space_id:
        packaged = resource("spaces")
        space = Path(space_dir) if space_dir else packaged
        if not (space / "app.py").exists():
            raise MissingInput(f"{space}: no Space app.py to push")
        known = [p.relative_to(packaged).as_posix() for p in packaged.rglob("*") if p.is_file()]
        plan["space"] = {"repo_id": space_id, "repo_type": "space", "space_sdk": "gradio", "private": private,
                         "models": [repo_id], "folder": str(space),
                         "files": _files_to_push(space, known, tuple(include), skip=("__pycache__",))}
    return plan


def _stage_space(plan: dict, staged: Optional[str] = None) -> str:
    """A copy of the Space folder whose README metadata points at the model and whose app loads it."""
    staged = staged or tempfile.mkdtemp(prefix="saerad-space-")
    for name in plan["files"]:  # exactly the planned files, never the folder's whole contents
        (Path(staged) / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(plan["folder"]) / name, Path(staged) / name)
    readme = Path(staged) / "README.md"
    text = readme.read_text()
    readme.write_text(text.replace("models: []", f"models:\n  - {plan['models'][0]}"))
    app = Path(staged) / "app.py"
    app.write_text(app.read_text().replace('"ORG/NAME"', json.dumps(plan["models"][0])))
    return staged


def staged_card(model_dir: str, repo_id: str) -> str:
    """The model card as it is uploaded: its usage snippet and model index name the repo it is pushed to."""
    return (Path(model_dir) / "README.md").read_text().replace("ORG/NAME", repo_id)


def stage(plan: dict, into: Optional[str] = None) -> str:
    """The rewritten files of a push, as they will be uploaded: `model/README.md` and the whole `space/` folder."""
    root = Path(into or tempfile.mkdtemp(prefix="saerad-push-"))
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / "README.md").write_text(staged_card(plan["model"]["folder"], plan["model"]["repo_id"]))
    if "space" in plan:
        _stage_space(plan["space"], str(root / "space"))
    return str(root)


def push(model_dir: str, repo_id: str, space_id: Optional[str] = None, private: bool = False,
         dry_run: bool = False, token: Optional[str] = None, space_dir: Optional[str] = None,
         include: tuple = ()) -> dict:
    """Create the repos and upload exactly the planned files of the model folder (and the Space)."""
    plan = push_plan(model_dir, repo_id, space_id, private, space_dir, include)
    if dry_run:  # the rewritten files are left where the user can read them
        plan["staged"] = stage(plan)
        return plan
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise NoAccess("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then push again")
    build_info = Path(model_dir) / "saerad_build.json"
    dataset = json.loads(build_info.read_text()).get("dataset") or "" if build_info.exists() else ""
    if dataset.startswith("mimic") and not private:
        raise NoAccess("this model's descriptions derive from MIMIC-CXR reports: push it with --private")
    api = HfApi(token=token)
    staged = stage(plan)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.create_commit(repo_id, _operations(plan["model"], Path(staged) / "model"),
                          commit_message="Upload SAE-Rad model (saerad push)")
        if space_id:
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            api.create_commit(space_id, _operations(plan["space"], Path(staged) / "space", staged_all=True),
                              repo_type="space", commit_message="Upload SAE-Rad Space (saerad push)")
    except PermissionError:
        raise
    except Exception as err:  # offline mode, DNS, refused connection, HTTP errors: one sentence for the user
        raise Unreachable(f"cannot reach the Hugging Face Hub to push {repo_id} ({first_line(err)})") from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return plan


def _operations(part: dict, staged: Path, staged_all: bool = False) -> list:
    """One upload per planned file (the card, or the whole Space, from its staged rewrite): nothing else is sent."""
    from huggingface_hub import CommitOperationAdd

    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(
        (staged if staged_all or name == "README.md" else Path(part["folder"])) / name)) for name in part["files"]]
