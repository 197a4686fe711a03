"""`saerad <command>`: one verb per pipeline stage, each imported only when it runs."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .errors import OutputConflict, UserError, first_line, loading
from .options import add_fields, defaults, from_args

# configuration_saerad.POOLINGS, spelled out so that parsing the command line does not import transformers
POOLINGS = ("cls", "mean", "cls_mean", "max")


def _writes(p: argparse.ArgumentParser, kind: str) -> None:
    """Mark a command as writing a folder of `kind` (`--out`, or the demo's `--workdir`), checked by one rule."""
    p.add_argument("--overwrite", action="store_true",
                   help="write into (or replace) a non-empty folder that saerad did not make as this kind of output")
    p.set_defaults(out_kind=kind)


def _say(text: str) -> None:
    """Print once under `accelerate launch` (from the main process), as Accelerate's own messages do."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(text)


def report_parser(p: argparse.ArgumentParser) -> None:
    """Options of `saerad report`."""
    from .generate import load_model

    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or DICOM files")
    p.add_argument("--model", required=True, help="model folder (from `saerad build`) or hub repo id")
    p.add_argument("--json", action="store_true", help="print reports with sentences, feature ids and activations")
    p.add_argument("--heatmap", metavar="OUT.png", help="write where each FINDINGS sentence looks (one tile per "
                                                        "sentence, Grad-CAM) and print the side each map reads")
    p.add_argument("--off", metavar="ID,ID", help="switch these features off and write the report that results")
    p.add_argument("--on-unfamiliar", choices=("warn", "withhold", "ignore"), default="warn",
                   help="an image unlike the model's training images: report it with a warning on stderr (default), "
                        "withhold its report, or report it as any other")
    p.add_argument("--overwrite", action="store_true", help="let --heatmap replace files that exist (never an input "
                                                            "image)")
    p.add_argument("--device", default=defaults(load_model)["device"], help="torch device (cpu, cuda, mps)")



def cmd_report(args: argparse.Namespace) -> int:
    """Print one report per image, as each batch is done (the images are never all held at once)."""
    from .generate import iter_generate, load_model, why_empty

    sheets = _heatmap_paths(args.heatmap, args.images, args.overwrite) if args.heatmap else []  # before any work
    model, processor = load_model(args.model, device=args.device)
    try:
        off = {int(f): 0 for f in args.off.split(",") if f.strip()} if args.off else {}
    except ValueError:
        raise UserError(f"--off takes feature ids separated by commas; got {args.off!r}") from None
    results = iter_generate(model, processor, args.images, feature_overrides=off or None,
                            output_localization=bool(args.heatmap), on_unfamiliar=args.on_unfamiliar)
    for k, (image, result) in enumerate(zip(args.images, results)):
        _warn_unfamiliar(image, result, first=k == 0)
        sheet = _write_heatmap(sheets[k], result) if sheets else None
        if args.json:  # one JSON list, written an element at a time; the maps go to --heatmap, not the JSON
            entry = {**{key: v for key, v in result.items() if key != "image"}, "image": image,
                     "sentences": [{key: v for key, v in s.items() if key != "localization"}
                                   for s in result["sentences"]], **({"heatmap": str(sheet)} if sheet else {})}
            sys.stdout.write(("[\n" if k == 0 else ",\n") + json.dumps(entry, indent=2))
            continue
        print(f"== {image} ==" + (f" (with feature{'s' if len(off) > 1 else ''} {args.off} off)" if off else ""))
        print(result["report"] or why_empty(result))
        if sheet:
            print(f"  heatmap written to {sheet}")
            findings = [s for s in result["sentences"] if s["report_section"] == "findings"]
            for n, sentence in enumerate(findings, 1):
                print(f"  map {n}: {sentence['side'] or 'none'} (features "
                      f"{', '.join(map(str, sentence['feature_ids']))}) {sentence['text']}")
        print()
    if args.json:
        sys.stdout.write("\n]\n")
    return 0



def _warn_unfamiliar(image: str, result: dict, first: bool) -> None:
    """On stderr, as each report is written: the image's warning when it is flagged, and with the first image, once,
    that the model has no familiarity calibration."""
    if result["familiarity"]["warning"]:
        print(f"warning: {image}: {result['familiarity']['warning']}", file=sys.stderr)
    if first and not result["familiarity"]["available"]:
        print(f"note: {result['familiarity']['note']}", file=sys.stderr)


def _heatmap_paths(out: str, images: list, overwrite: bool) -> list:
    """The file each image's heatmap goes to: OUT.png for one image; OUT-1.png, OUT-2.png, ... for several. An input
    image is never overwritten, nor any existing file unless `overwrite`; refused before any work."""
    from pathlib import Path

    path = Path(out)
    if path.suffix.lower() != ".png":
        raise UserError(f"--heatmap writes a PNG; give a file name ending in .png, not {out!r}")
    targets = [path] if len(images) == 1 else [path.with_name(f"{path.stem}-{k}{path.suffix}")
                                               for k in range(1, len(images) + 1)]
    inputs = {Path(i).resolve() for i in images if isinstance(i, str)}
    for target in targets:
        if target.resolve() in inputs or any(target.exists() and Path(i).exists() and target.samefile(i)
                                             for i in images):
            raise UserError(f"--heatmap {out}: {target} is one of the input images; name another file")
        if target.exists() and not overwrite:
            raise OutputConflict(f"--heatmap {out}: {target} already exists; name another file or pass --overwrite")
        if target.is_dir() or not target.parent.is_dir():
            raise UserError(f"--heatmap {out}: cannot write {target} (a folder, or its folder does not exist)")
    return targets


def _write_heatmap(target, result: dict):
    """One tile per FINDINGS sentence, written through a temporary file; the path written."""
    import io

    from .generate import heatmap_sheet
    from .outputs import atomic_write

    buffer = io.BytesIO()
    heatmap_sheet(result).save(buffer, format="PNG")
    return atomic_write(target, buffer.getvalue())



def pretrain_parser(p: argparse.ArgumentParser) -> None:
    """Options of `saerad pretrain`: the run's inputs and outputs, then every PretrainConfig field."""
    from .configs import PretrainConfig

    p.add_argument("--dataset", required=True, help="dataset spec; iu-phantom renders fresh phantom patients")
    p.add_argument("--out", required=True, help="folder for the backbone, its processor, card and pretrain.json")
    p.add_argument("--init", help="existing backbone to adapt (folder or hub id)")
    p.add_argument("--lora", action="store_true", help="adapt --init with a LoRA adapter, merged before export")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT/checkpoint")
    _writes(p, "backbone")
    add_fields(p, PretrainConfig)



def cmd_pretrain(args: argparse.Namespace) -> int:
    """Self-supervised backbone training (or LoRA adaptation of an existing one)."""
    from .configs import PretrainConfig
    from .pretrain import pretrain
    from .sae import TrainingDiverged

    try:
        summary = pretrain(args.dataset, args.out, from_args(PretrainConfig, args), init=args.init, lora=args.lora,
                           command=shlex.join(args.argv), resume=args.resume)
    except TrainingDiverged as err:
        raise UserError(str(err)) from None
    if "stopped_at" in summary:
        _say(f"stopped at step {summary['stopped_at']} of {summary['steps']}; checkpoint in {summary['checkpoint']} "
             "(continue with the same command and --resume)")
    else:
        _say(f"backbone in {args.out}; final losses {summary['final_loss']}")
    return 0



def embed_parser(p: argparse.ArgumentParser) -> None:
    """Options of `saerad embed`."""
    from .embed import embed

    d = defaults(embed)
    p.add_argument("--backbone", required=True, help="transformers vision model folder or hub id")
    p.add_argument("--dataset", required=True, help="dataset spec")
    p.add_argument("--split", default="train", help="split to embed")
    p.add_argument("--out", required=True, help="folder for the embedding shards and manifest.json")
    p.add_argument("--pooling", choices=POOLINGS, default=d["pooling"], help="what one image's vector is")
    p.add_argument("--dtype", choices=["float32", "float16"], default=d["dtype"], help="dtype the shards store")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per forward pass")
    p.add_argument("--shard-size", type=int, default=d["shard_size"], help="rows per shard (the unit of resume)")
    p.add_argument("--num-workers", type=int, default=d["num_workers"], help="DataLoader workers decoding images")
    p.add_argument("--limit", type=int, default=d["limit"], help="embed only the first N rows")
    _writes(p, "embeddings")



def cmd_embed(args: argparse.Namespace) -> int:
    """Embed one split of a dataset with a frozen backbone."""
    from .embed import embed

    folder = embed(args.backbone, args.dataset, args.split, args.out, pooling=args.pooling, dtype=args.dtype,
                   batch_size=args.batch_size, shard_size=args.shard_size, num_workers=args.num_workers,
                   limit=args.limit)
    _say(f"embeddings in {folder}")
    return 0



def train_parser(p: argparse.ArgumentParser) -> None:
    """Options of `saerad train`: the run's files, then every TrainConfig field."""
    from .configs import TrainConfig

    p.add_argument("--embeddings", required=True, help="embedding cache folder, .npy or .safetensors")
    p.add_argument("--out", required=True, help="folder for the SAE, its metrics and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--log-with", help="Accelerate tracker (tensorboard, wandb, ...)")
    _writes(p, "sae")
    add_fields(p, TrainConfig)



def cmd_train(args: argparse.Namespace) -> int:
    """Train an SAE on cached embeddings."""
    from .configs import TrainConfig
    from .sae import TrainingDiverged, train

    try:
        metrics = train(args.embeddings, args.out, from_args(TrainConfig, args), resume=args.resume,
                        log_with=args.log_with)
    except TrainingDiverged as err:
        raise UserError(str(err)) from None
    if metrics:
        _say(" ".join(f"{k}={metrics[k]:.4g}" for k in ("mse", "fvu", "l0", "dead_fraction")))
    return 0



def interpret_parser(p: argparse.ArgumentParser) -> None:
    """Options of `saerad interpret`."""
    from .interpret import interpret

    d = defaults(interpret)
    p.add_argument("--sae", required=True, help="folder written by `saerad train`")
    p.add_argument("--embeddings", required=True, help="embeddings the exemplars are mined from")
    p.add_argument("--reports", required=True, help="dataset spec, or JSONL of {id, findings, impression}")
    p.add_argument("--describer", default=d["describer"],
                   help="extractive; transformers:PATH (a model folder, a GGUF file, or smollm2); openai:URL[#model]")
    p.add_argument("--top-k", type=int, default=d["top_k"], help="exemplars per feature")
    p.add_argument("--score-embeddings", help="held-out embeddings (e.g. the validation split) to score on")
    p.add_argument("--holdout", type=float, help="else score on this fraction of rows, chosen by a hash of the id")
    p.add_argument("--score-threshold", type=float, default=d["score_threshold"],
                   help="AUROC below which a feature is marked")
    p.add_argument("--min-score-support", type=int, default=d["min_score_support"],
                   help="held-out rows a feature must fire on (and be silent on) to be scored")
    p.add_argument("--out", required=True, help="folder for feature_dictionary.json and interpret_metrics.json")
    _writes(p, "interpret")



def cmd_interpret(args: argparse.Namespace) -> int:
    """Mine exemplars, describe and score every feature."""
    from .interpret import interpret

    metrics = interpret(args.sae, args.embeddings, args.reports, args.out, describer=args.describer,
                        top_k=args.top_k, score_embeddings=args.score_embeddings, holdout=args.holdout,
                        score_threshold=args.score_threshold, min_score_support=args.min_score_support)
    print(" ".join(f"{k}={v}" for k, v in metrics.items()))
    return 0



def evaluate_parser(p: argparse.ArgumentParser) -> None:
    """Options of `saerad evaluate`."""
    from .evaluation.runner import run_evaluation

    d = defaults(run_evaluation)
    p.add_argument("--model", help="model folder or hub repo id")
    p.add_argument("--predictions", help="JSONL of {id, report|findings} to score instead of (or beside) a model")
    p.add_argument("--dataset", required=True, help="dataset spec (see `saerad data build`)")
    p.add_argument("--split", default=d["split"], help="split to score")
    p.add_argument("--baselines", default=None,
                   help="comma-separated: normal,retrieval,oracle (default: all three with --model; without one, "
                        "normal,oracle, since retrieval searches the model's embedding space); '' for none")
    p.add_argument("--out", help="folder for results.json, results.md and predictions.jsonl")
    p.add_argument("--limit", type=int, default=d["limit"], help="score only the first N reports")
    p.add_argument("--n-resamples", type=int, default=d["n_resamples"], help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--seed", type=int, default=d["seed"], help="seeds the bootstrap")
    p.add_argument("--positive-only", action="store_true", help="count uncertain labels as negative")
    p.add_argument("--device", default=d["device"], help="torch device for the model")
    p.add_argument("--embeddings", help="the split's embedding cache (from `saerad embed`): the model reads it "
                                        "instead of running its backbone on the images")
    _writes(p, "evaluation")



def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score SAE-Rad and baselines on a split; write results.json and results.md."""
    from .evaluation.runner import markdown_table, run_evaluation

    requested = args.baselines
    if requested is None:
        requested = "normal,retrieval,oracle" if args.model else "normal,oracle"
    baselines = [b for b in requested.split(",") if b]
    results = run_evaluation(
        args.dataset, split=args.split, model=args.model, predictions=args.predictions, baselines=baselines,
        out=args.out, limit=args.limit, n_resamples=args.n_resamples, seed=args.seed,
        uncertain_as_positive=not args.positive_only, device=args.device, embeddings=args.embeddings,
    )
    print(markdown_table(results), end="")
    for metric, reason in results["skipped_metrics"].items():
        print(f"{metric} skipped: {reason}", file=sys.stderr)
    return 0



def build_options(p: argparse.ArgumentParser) -> None:
    """Options of `saerad build`."""
    p.add_argument("--backbone", help="the backbone the SAE was trained on (folder, hub id, or a bundled one: "
                                      "saerad:phantom-resnet, saerad:phantom-dino)")
    p.add_argument("--sae", help="folder written by `saerad train`")
    p.add_argument("--dictionary", help="feature_dictionary.json from `saerad interpret`")
    p.add_argument("--from-record", metavar="FILE", help="rebuild from a model folder's saerad_build.json (its "
                                                         "backbone, SAE, dictionary, results and settings)")
    p.add_argument("--results", help="results.json from `saerad evaluate`, for the card's model-index")
    p.add_argument("--min-feature-score", type=float, help="features scored below this AUROC never write a sentence "
                                                           "(default: the dictionary's score threshold)")
    p.add_argument("--max-report-features", type=int, help="at most this many features per report (default: the "
                                                           "model config's)")
    p.add_argument("--min-activation", type=float, help="a feature writes only above this activation (default: the "
                                                        "model config's)")
    p.add_argument("--title", help="the model card's title")
    p.add_argument("--calibration", metavar="SPEC",
                   help="dataset spec whose train images fit the familiarity statistics and whose validation images "
                        "set its threshold (default: the SAE's dataset and split; never the test split); 'none' to "
                        "build without the check")
    p.add_argument("--calibration-rows", type=int, default=1000, help="training images the statistics are fitted on")
    p.add_argument("--false-flag-rate", type=float, default=0.01,
                   help="share of validation images the familiarity threshold flags")
    p.add_argument("--out", required=True, help="model folder to write")
    _writes(p, "model")



def cmd_build(args: argparse.Namespace) -> int:
    """Assemble the model folder and its card."""
    from .hub import build, build_from_record

    given = [f"--{k.replace('_', '-')}" for k in ("backbone", "sae", "dictionary", "results", "min_feature_score",
                                                  "max_report_features", "min_activation", "title", "calibration")
             if getattr(args, k) is not None]
    if args.from_record:
        if given:
            raise UserError(f"--from-record takes everything from the record; drop {', '.join(given)}")
        folder = build_from_record(args.from_record, args.out, overwrite=args.overwrite)
    elif not (args.backbone and args.sae and args.dictionary):
        raise UserError("build needs --backbone, --sae and --dictionary (or --from-record FILE)")
    else:
        folder = build(args.backbone, args.sae, args.dictionary, args.out, results=args.results,
                       min_feature_score=args.min_feature_score, max_report_features=args.max_report_features,
                       min_activation=args.min_activation, title=args.title, overwrite=args.overwrite,
                       calibration=args.calibration, calibration_rows=args.calibration_rows,
                       false_flag_rate=args.false_flag_rate)
    print(f"model folder {folder}")
    return 0



def push_parser(p: argparse.ArgumentParser) -> None:
    """Options of `saerad push`."""
    p.add_argument("model_dir", nargs="?", help="model folder from `saerad build` (optional with --metrics)")
    p.add_argument("--repo-id", help="model repo to create or update (ORG/NAME); needed with model_dir")
    p.add_argument("--space-id", help="also publish the Space that serves the model (ORG/NAME)")
    p.add_argument("--private", action="store_true", help="make the repos private")
    p.add_argument("--dry-run", action="store_true", help="print exactly the files and settings push would send; "
                                                          "send nothing")
    p.add_argument("--metrics", metavar="ORG", help="also publish the evaluate metric modules as Spaces ORG/<metric>")
    p.add_argument("--include", action="append", default=[], metavar="NAME",
                   help="also upload this file (its path in the folder), which is not part of a saerad model folder "
                        "or Space; repeat for each (anything else unknown is refused)")



def _push_metrics(args: argparse.Namespace) -> int:
    from .evaluation.metric_spaces import push_metrics

    plan = push_metrics(args.metrics, private=args.private, dry_run=args.dry_run)
    for name, part in plan.items():
        print(f"{'would upload' if args.dry_run else 'uploaded'} metric {name} to space {part['repo_id']} "
              f"(sdk=gradio): {part['folder']}")
        print("  " + " ".join(part["files"]))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Publish the model folder (and the Space) to the Hub, or show what would be sent."""
    from .hub import push

    if args.model_dir is None or args.repo_id is None:
        if args.metrics is None or args.model_dir is not None:
            raise UserError("saerad push needs a model folder and --repo-id ORG/NAME, or --metrics ORG, or both")
        return _push_metrics(args)
    plan = push(args.model_dir, args.repo_id, space_id=args.space_id, private=args.private, dry_run=args.dry_run,
                include=tuple(args.include))
    staged = plan.get("staged")
    for key in ("model", "space"):
        if key not in plan:
            continue
        part = plan[key]
        verb = "would upload" if args.dry_run else "uploaded"
        print(f"{verb} to {part['repo_type']} {part['repo_id']} (private={part['private']}"
              + (f", sdk={part['space_sdk']}, models={part['models']}" if part["repo_type"] == "space" else "") + "):")
        for name in part["files"]:
            rewritten = staged and (key == "space" or name == "README.md")
            print(f"  {name}" + (f"  (as staged: {Path(staged) / key / name})" if rewritten else ""))
    if staged:
        print(f"the rewritten files (model card, Space README and app.py) are staged in {staged}")
    return _push_metrics(args) if args.metrics is not None else 0



def serve_parser(p: argparse.ArgumentParser) -> None:
    """Options of `saerad serve`."""
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the model's own code even when it is not this saerad's remote code (read it first)")



def cmd_serve(args: argparse.Namespace) -> int:
    """Run the Space's app locally, exactly as the Hub runs it."""
    import importlib.util

    from .generate import check_remote_code
    from .resources import resource

    if not args.trust_remote_code:  # the Space loads with trust_remote_code=True: only saerad's own code, unasked
        check_remote_code(args.model)
    folder = resource("spaces")
    sys.path.insert(0, str(folder))  # the app imports its sibling inference.py, as on the Hub
    spec = importlib.util.spec_from_file_location("saerad_space_app", folder / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    with loading(args.model, "the model"):
        demo = app.build_demo(args.model)
    app.launch(demo, port=args.port, host=args.host)
    return 0



def demo_parser(p: argparse.ArgumentParser) -> None:
    """Options of `saerad demo`."""
    from .demo import POOLING

    p.add_argument("--workdir", help="where everything goes (default: the saerad cache)")
    p.add_argument("--backbone", help="backbone folder or hub id to embed with (default: the committed phantom one)")
    p.add_argument("--pooling", choices=POOLINGS, default=POOLING, help="what one image's vector is")
    _writes(p, "demo")



def cmd_demo(args: argparse.Namespace) -> int:
    """The offline end-to-end demo on IU-phantom."""
    from .demo import run_demo

    run_demo(args.workdir, backbone=args.backbone, pooling=args.pooling)
    return 0



def data_parser(p: argparse.ArgumentParser) -> None:
    """`saerad data build` and `saerad data gallery`."""
    from .data.phantom import gallery

    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="resolve a dataset spec and save it with save_to_disk")
    b.add_argument("spec", help="mimic-cxr:PATH, iu-xray[:PATH], iu-phantom[:REPORTS], imagefolder:PATH or a folder")
    b.add_argument("--out", help="folder to write")
    b.add_argument("--require-findings", action="store_true", help="drop studies without a FINDINGS section")
    b.add_argument("--all-views", action="store_true", help="keep lateral views (MIMIC-CXR)")
    b.add_argument("--report-unmapped", action="store_true", help="list IU MeSH tags the phantom mapping lacks")
    b.add_argument("--strict", action="store_true", help="make any skipped row (unreadable image, missing file) an "
                                                         "error instead of a count in the manifest")
    _writes(b, "dataset")
    b.set_defaults(func=cmd_data_build)
    g = actions.add_parser("gallery", help="one phantom tile per finding, for the README")
    g.add_argument("--out", required=True, help="PNG file to write")
    g.add_argument("--seed", type=int, default=defaults(gallery)["seed"], help="the phantom patient")
    g.set_defaults(func=cmd_data_gallery)



def cmd_data_build(args: argparse.Namespace) -> int:
    """Build a dataset spec into a save_to_disk folder."""
    from .data.adapters import load_spec, save_dataset

    if args.report_unmapped:
        return _report_unmapped(args.spec)
    if not args.out:
        raise UserError("--out is required (the folder to write the dataset to)")
    dataset = load_spec(args.spec, require_findings=args.require_findings, frontal_only=not args.all_views,
                        strict=args.strict)
    skipped = getattr(dataset, "skipped", {})
    for reason, n in sorted(skipped.items()):
        print(f"skipped {n} rows: {reason}", file=sys.stderr)
    save_dataset(dataset, args.out, overwrite=args.overwrite, report={"spec": args.spec, "skipped": skipped})
    counts = ", ".join(f"{name} {len(split)}" for name, split in dataset.items())
    print(f"wrote {args.out}: {counts}")
    return 0



def _report_unmapped(spec: str) -> int:
    from collections import Counter

    from .data.iu import read_reports
    from .data.mesh import unmapped_tags

    kind, _, path = spec.partition(":")
    if kind not in ("iu-phantom", "iu-xray"):
        raise UserError("--report-unmapped applies to iu-phantom and iu-xray specs")
    reports = read_reports(path or None)
    counts = Counter(tag for r in reports for tag in unmapped_tags(r["mesh"]))
    covered = sum(1 for r in reports if not unmapped_tags(r["mesh"]))
    print(f"reports whose MeSH tags are all mapped: {covered}/{len(reports)} ({covered / len(reports):.1%})")
    for tag, n in counts.most_common():
        print(f"{n:6d}  {tag}")
    return 0



def cmd_data_gallery(args: argparse.Namespace) -> int:
    """Write one labelled phantom tile per finding beside a normal phantom."""
    from .data.phantom import gallery

    print(gallery(args.out, seed=args.seed))
    return 0


# name: (help, options, command); a command's options are built (and its module imported) only when it runs
COMMANDS = {
    "report": ("write a report for each image (PNG, JPEG or DICOM)", report_parser, cmd_report),
    "pretrain": ("train a small DINOv2 self-supervised (or LoRA-adapt one with --init --lora)", pretrain_parser,
                 cmd_pretrain),
    "embed": ("embed a dataset split with a frozen backbone (resumable shards)", embed_parser, cmd_embed),
    "train": ("train a sparse autoencoder on cached embeddings (Accelerate)", train_parser, cmd_train),
    "interpret": ("describe each SAE feature from its exemplars' reports and score it", interpret_parser,
                  cmd_interpret),
    "evaluate": ("score SAE-Rad and baselines with CheXpert F1, BLEU, ROUGE-L, METEOR, CIDEr", evaluate_parser,
                 cmd_evaluate),
    "build": ("assemble a model folder (backbone + SAE + dictionary + processor + card)", build_options, cmd_build),
    "push": ("publish a model folder (and the Space) to the Hugging Face Hub", push_parser, cmd_push),
    "serve": ("run the Space's app locally (the same app the Hub runs)", serve_parser, cmd_serve),
    "demo": ("the offline end-to-end demo on IU-phantom (real report text, phantom images)", demo_parser, cmd_demo),
    "data": ("build datasets and phantom galleries", data_parser, None),
}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The `saerad` argument parser; with `only`, just the options of that one command ("": of none), the others
    listed with their help."""
    parser = argparse.ArgumentParser(prog="saerad", description=__doc__)
    parser.add_argument("--version", action="version", version=f"saerad {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error in the input too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (text, options, command) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        if only is None or only == name:
            options(p)
            if command:
                p.set_defaults(func=command)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `saerad` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    named = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(only=named if named in COMMANDS else "").parse_args(argv)
    args.argv = ["saerad", *argv]  # what pretrain.json records as its command
    try:
        out = getattr(args, "out", None) or getattr(args, "workdir", None)
        if getattr(args, "out_kind", None) and out:
            from .outputs import locked_output, output_folder

            output_folder(out, args.out_kind, args.overwrite)  # before any work: refuse, never delete, a user's folder
            if os.environ.get("RANK", "0") != "0":  # `accelerate launch`: the first process holds the job's lock
                return args.func(args) or 0
            with locked_output(out):  # one job per output folder: a second is refused, not interleaved
                return args.func(args) or 0
        return args.func(args) or 0
    except UserError as err:  # anything else is a bug: it keeps its traceback
        if args.debug:
            raise
        print(f"saerad {args.command}: error: {first_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
