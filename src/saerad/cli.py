"""`saerad <command>`: one verb per pipeline stage, each imported only when it runs."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__

# configuration_saerad.POOLINGS, spelled out so that parsing the command line does not import transformers
POOLINGS = ("cls", "mean", "cls_mean", "max")
# Mistakes a user can make (bad path, bad file, bad value): one line on stderr, exit 2.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
               ConnectionError)


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line."""


def cmd_report(args: argparse.Namespace) -> int:
    """Print one report per image."""
    from .generate import generate, load_model, why_empty

    model, processor = load_model(args.model, device=args.device)
    try:
        off = {int(f): 0 for f in args.off.split(",") if f.strip()} if args.off else {}
    except ValueError:
        raise UserError(f"--off takes feature ids separated by commas; got {args.off!r}") from None
    results = generate(model, processor, args.images, feature_overrides=off or None,
                       output_localization=bool(args.heatmap))
    if args.heatmap:
        _write_heatmaps(args.heatmap, results)
    if args.json:
        payload = [{**{k: v for k, v in result.items() if k != "image"}, "image": image,
                    "sentences": [{k: v for k, v in s.items() if k != "localization"} for s in result["sentences"]]}
                   for image, result in zip(args.images, results)]  # the maps go to --heatmap, not the JSON
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for image, result in zip(args.images, results):
        print(f"== {image} ==" + (f" (with feature{'s' if len(off) > 1 else ''} {args.off} off)" if off else ""))
        print(result["report"] or why_empty(result))
        if args.heatmap:
            findings = [s for s in result["sentences"] if s["report_section"] == "findings"]
            for k, sentence in enumerate(findings, 1):
                print(f"  map {k}: {sentence['side'] or 'none'} (features "
                      f"{', '.join(map(str, sentence['feature_ids']))}) {sentence['text']}")
        print()
    return 0


def _write_heatmaps(out: str, results: list) -> None:
    """OUT.png for one image; OUT-1.png, OUT-2.png, ... for several (one tile per FINDINGS sentence)."""
    import io
    from pathlib import Path

    from .generate import heatmap_sheet
    from .outputs import atomic_write

    path = Path(out)
    if path.suffix.lower() != ".png":
        raise UserError(f"--heatmap writes a PNG; give a file name ending in .png, not {out!r}")
    for k, result in enumerate(results, 1):
        target = path if len(results) == 1 else path.with_name(f"{path.stem}-{k}{path.suffix}")
        buffer = io.BytesIO()
        heatmap_sheet(result).save(buffer, format="PNG")
        atomic_write(target, buffer.getvalue())


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
        uncertain_as_positive=not args.positive_only, device=args.device,
    )
    print(markdown_table(results), end="")
    for metric, reason in results["skipped_metrics"].items():
        print(f"{metric} skipped: {reason}", file=sys.stderr)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed one split of a dataset with a frozen backbone."""
    from .embed import embed

    folder = embed(args.backbone, args.dataset, args.split, args.out, pooling=args.pooling, dtype=args.dtype,
                   batch_size=args.batch_size, shard_size=args.shard_size, num_workers=args.num_workers,
                   limit=args.limit)
    _say(f"embeddings in {folder}")
    return 0


def _say(text: str) -> None:
    """Print once under `accelerate launch` (from the main process), as Accelerate's own messages do."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(text)


def cmd_train(args: argparse.Namespace) -> int:
    """Train an SAE on cached embeddings."""
    from .sae import TrainConfig, TrainingDiverged, train

    config = TrainConfig(
        architecture=args.architecture, expansion_factor=args.expansion_factor, d_sae=args.d_sae, k=args.k,
        target_l0=args.target_l0, sparsity_coef=args.sparsity_coef, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        max_steps=args.max_steps, gate_lr_scale=args.gate_lr_scale,
        magnitude_lr_scale=args.magnitude_lr_scale, decoder_bias=args.decoder_bias,
    )
    try:
        metrics = train(args.embeddings, args.out, config, resume=args.resume, log_with=args.log_with)
    except TrainingDiverged as err:
        raise UserError(str(err)) from None
    if metrics:
        _say(" ".join(f"{k}={metrics[k]:.4g}" for k in ("mse", "fvu", "l0", "dead_fraction")))
    return 0


def cmd_interpret(args: argparse.Namespace) -> int:
    """Mine exemplars, describe and score every feature."""
    from .interpret import interpret

    metrics = interpret(args.sae, args.embeddings, args.reports, args.out, describer=args.describer,
                        top_k=args.top_k, score_embeddings=args.score_embeddings, holdout=args.holdout,
                        score_threshold=args.score_threshold, min_score_support=args.min_score_support)
    print(" ".join(f"{k}={v}" for k, v in metrics.items()))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Self-supervised backbone training (or LoRA adaptation of an existing one)."""
    from .pretrain import PretrainConfig, pretrain
    from .sae import TrainingDiverged

    config = PretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            architecture=args.architecture, hidden_size=args.hidden_size,
                            image_size=args.image_size, num_workers=args.num_workers, lora_rank=args.lora_rank,
                            objective=args.objective, projector=args.projector, mim_weight=args.mim_weight,
                            temperature=args.temperature, eval_every=args.eval_every, eval_size=args.eval_size,
                            mixed_precision=args.mixed_precision, checkpoint_every=args.checkpoint_every,
                            max_steps=args.max_steps)
    command = shlex.join(["saerad", *args.argv])
    try:
        summary = pretrain(args.dataset, args.out, config, init=args.init, lora=args.lora, command=command,
                           resume=args.resume)
    except TrainingDiverged as err:
        raise UserError(str(err)) from None
    if "stopped_at" in summary:
        _say(f"stopped at step {summary['stopped_at']} of {summary['steps']}; checkpoint in {summary['checkpoint']} "
             "(continue with the same command and --resume)")
    else:
        _say(f"backbone in {args.out}; final losses {summary['final_loss']}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Assemble the model folder and its card."""
    from .hub import build

    folder = build(args.backbone, args.sae, args.dictionary, args.out, results=args.results,
                   min_feature_score=args.min_feature_score, max_report_features=args.max_report_features,
                   min_activation=args.min_activation, title=args.title, overwrite=args.overwrite)
    print(f"model folder {folder}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Publish the model folder (and the Space) to the Hub, or show what would be sent."""
    from .hub import push

    plan = push(args.model_dir, args.repo_id, space_id=args.space_id, private=args.private, dry_run=args.dry_run)
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
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the Space's app locally, exactly as the Hub runs it."""
    import importlib.util

    from .resources import resource

    folder = resource("spaces")
    sys.path.insert(0, str(folder))  # the app imports its sibling inference.py, as on the Hub
    spec = importlib.util.spec_from_file_location("saerad_space_app", folder / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    try:
        demo = app.build_demo(args.model)
    except OSError as err:
        raise UserError(f"{args.model}: cannot load the model ({str(err).splitlines()[0]})") from None
    app.launch(demo, port=args.port, host=args.host)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The offline end-to-end demo on IU-phantom."""
    from .demo import run_demo

    run_demo(args.workdir, backbone=args.backbone, pooling=args.pooling)
    return 0


def _writes(p: argparse.ArgumentParser, kind: str) -> None:
    """Mark a command as writing a folder of `kind` (`--out`, or the demo's `--workdir`), checked by one rule."""
    p.add_argument("--overwrite", action="store_true",
                   help="write into (or replace) a non-empty folder that saerad did not make as this kind of output")
    p.set_defaults(out_kind=kind)


def build_parser() -> argparse.ArgumentParser:
    """The `saerad` argument parser."""
    parser = argparse.ArgumentParser(prog="saerad", description=__doc__)
    parser.add_argument("--version", action="version", version=f"saerad {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("report", help="write a report for each image (PNG, JPEG or DICOM)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True, help="model folder (from `saerad build`) or hub repo id")
    p.add_argument("--json", action="store_true", help="print reports with sentences, feature ids and activations")
    p.add_argument("--heatmap", metavar="OUT.png", help="write where each FINDINGS sentence looks (one tile per "
                                                        "sentence, Grad-CAM) and print the side each map reads")
    p.add_argument("--off", metavar="ID,ID", help="switch these features off and write the report that results")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("pretrain", help="train a small DINOv2 self-supervised (or LoRA-adapt one with --init --lora)")
    p.add_argument("--dataset", required=True, help="dataset spec; iu-phantom renders fresh phantom patients")
    p.add_argument("--out", required=True)
    p.add_argument("--init", help="existing backbone to adapt (folder or hub id)")
    p.add_argument("--lora", action="store_true", help="adapt --init with a LoRA adapter, merged before export")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--objective", choices=["thumbnail", "vicreg", "labels", "contrastive"], default="thumbnail",
                   help="what trains the CLS token: self-supervised (thumbnail, vicreg; with masked patch prediction) "
                        "or from the train split's paired reports (labels: what the labeler reads in FINDINGS; "
                        "contrastive: the FINDINGS text)")
    p.add_argument("--projector", type=int, default=512, help="vicreg: projector width; 0 applies it to the CLS token")
    p.add_argument("--mim-weight", type=float, default=1.0,
                   help="labels, contrastive: weight of the masked patch term (0: none)")
    p.add_argument("--temperature", type=float, default=0.07, help="contrastive: InfoNCE temperature")
    p.add_argument("--eval-every", type=int, default=0,
                   help="labels, contrastive: validation loss every N steps; the best weights are exported")
    p.add_argument("--eval-size", type=int, default=512, help="validation images for --eval-every")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--architecture", choices=["dinov2", "resnet"], default="dinov2",
                   help="backbone: a ViT (dinov2) or a small ResNet (resnet; report-supervised, --mim-weight 0)")
    p.add_argument("--hidden-size", type=int, default=192, help="token width (dinov2) or last stage width (resnet)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"],
                   help="Accelerate mixed precision (default: Accelerate's setting, else no; fp16 needs a CUDA GPU)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints in OUT/checkpoint")
    p.add_argument("--max-steps", type=int, help="stop early with a checkpoint (continue later with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT/checkpoint")
    _writes(p, "backbone")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("embed", help="embed a dataset split with a frozen backbone (resumable shards)")
    p.add_argument("--backbone", required=True, help="transformers vision model folder or hub id")
    p.add_argument("--dataset", required=True, help="dataset spec")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True)
    p.add_argument("--pooling", choices=POOLINGS, default="cls")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=2048)
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding images")
    p.add_argument("--limit", type=int)
    _writes(p, "embeddings")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("train", help="train a sparse autoencoder on cached embeddings (Accelerate)")
    p.add_argument("--embeddings", required=True, help="embedding cache folder, .npy or .safetensors")
    p.add_argument("--architecture", choices=["gated", "topk", "jumprelu", "relu"], default="gated")
    p.add_argument("--expansion-factor", type=int, default=64)
    p.add_argument("--d-sae", type=int)
    p.add_argument("--k", type=int, help="active features for topk")
    p.add_argument("--target-l0", type=float, help="steer the sparsity coefficient to this mean L0")
    p.add_argument("--sparsity-coef", type=float)
    p.add_argument("--gate-lr-scale", type=float, default=1.0,
                   help="gated: learning-rate multiple of b_gate (try 100 when --target-l0 is missed)")
    p.add_argument("--magnitude-lr-scale", type=float, default=200.0,
                   help="gated: learning-rate multiple of the magnitude path's r_mag and b_mag")
    p.add_argument("--decoder-bias", choices=["median", "mean"], default="median",
                   help="b_dec: trained from the geometric median, or fixed at the mean (the common image, e.g. a "
                        "normal study, then gets features of its own)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: end only)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--max-steps", type=int, help="stop early (resume later with --resume)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--log-with", help="Accelerate tracker (tensorboard, wandb, ...)")
    p.add_argument("--out", required=True)
    _writes(p, "sae")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("interpret", help="describe each SAE feature from its exemplars' reports and score it")
    p.add_argument("--sae", required=True, help="folder written by `saerad train`")
    p.add_argument("--embeddings", required=True, help="embeddings the exemplars are mined from")
    p.add_argument("--reports", required=True, help="dataset spec, or JSONL of {id, findings, impression}")
    p.add_argument("--describer", default="extractive", help="extractive, transformers:PATH or openai:URL[#model]")
    p.add_argument("--top-k", type=int, default=32, help="exemplars per feature")
    p.add_argument("--score-embeddings", help="held-out embeddings (e.g. the validation split) to score on")
    p.add_argument("--holdout", type=float, help="else score on this fraction of rows, chosen by a hash of the id")
    p.add_argument("--score-threshold", type=float, default=0.75, help="AUROC below which a feature is marked")
    p.add_argument("--min-score-support", type=int, default=5,
                   help="held-out rows a feature must fire on (and be silent on) to be scored")
    p.add_argument("--out", required=True)
    _writes(p, "interpret")
    p.set_defaults(func=cmd_interpret)

    p = sub.add_parser("evaluate", help="score SAE-Rad and baselines with CheXpert F1, BLEU, ROUGE-L, METEOR, CIDEr")
    p.add_argument("--model", help="model folder or hub repo id")
    p.add_argument("--predictions", help="JSONL of {id, report|findings} to score instead of (or beside) a model")
    p.add_argument("--dataset", required=True, help="dataset spec (see `saerad data build`)")
    p.add_argument("--split", default="test")
    p.add_argument("--baselines", default=None,
                   help="comma-separated: normal,retrieval,oracle (default: all three with --model; without one, "
                        "normal,oracle, since retrieval searches the model's embedding space); '' for none")
    p.add_argument("--out", help="folder for results.json, results.md and predictions.jsonl")
    p.add_argument("--limit", type=int, help="score only the first N reports")
    p.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--positive-only", action="store_true", help="count uncertain labels as negative")
    p.add_argument("--device", default="cpu")
    _writes(p, "evaluation")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("build", help="assemble a model folder (backbone + SAE + dictionary + processor + card)")
    p.add_argument("--backbone", required=True)
    p.add_argument("--sae", required=True, help="folder written by `saerad train`")
    p.add_argument("--dictionary", required=True, help="feature_dictionary.json from `saerad interpret`")
    p.add_argument("--results", help="results.json from `saerad evaluate`, for the card's model-index")
    p.add_argument("--min-feature-score", type=float, help="default: the dictionary's score threshold")
    p.add_argument("--max-report-features", type=int)
    p.add_argument("--min-activation", type=float)
    p.add_argument("--title")
    p.add_argument("--out", required=True)
    _writes(p, "model")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("push", help="publish a model folder (and the Space) to the Hugging Face Hub")
    p.add_argument("model_dir")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--space-id")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the files and settings; send nothing")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("serve", help="run the Space's app locally (the same app the Hub runs)")
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="the offline end-to-end demo on IU-phantom (real report text, phantom images)")
    p.add_argument("--workdir", help="where everything goes (default: the saerad cache)")
    p.add_argument("--backbone", help="backbone folder or hub id to embed with (default: the committed phantom one)")
    p.add_argument("--pooling", choices=POOLINGS, default="cls")
    _writes(p, "demo")
    p.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="build datasets and phantom galleries").add_subparsers(
        dest="data_command", metavar="ACTION", required=True)
    p = data.add_parser("build", help="resolve a dataset spec and save it with save_to_disk")
    p.add_argument("spec", help="mimic-cxr:PATH, iu-xray[:PATH], iu-phantom[:REPORTS], imagefolder:PATH or a folder")
    p.add_argument("--out", help="folder to write")
    p.add_argument("--require-findings", action="store_true", help="drop studies without a FINDINGS section")
    p.add_argument("--all-views", action="store_true", help="keep lateral views (MIMIC-CXR)")
    p.add_argument("--report-unmapped", action="store_true", help="list IU MeSH tags the phantom mapping lacks")
    p.add_argument("--strict", action="store_true", help="make any skipped row (unreadable image, missing file) an "
                                                         "error instead of a count in the manifest")
    _writes(p, "dataset")
    p.set_defaults(func=cmd_data_build)
    p = data.add_parser("gallery", help="one phantom tile per finding, for the README")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_data_gallery)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `saerad` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what pretrain.json records as its command
    try:
        out = getattr(args, "out", None) or getattr(args, "workdir", None)
        if getattr(args, "out_kind", None) and out:
            from .outputs import output_folder

            output_folder(out, args.out_kind, args.overwrite)  # before any work: refuse, never delete, a user's folder
        return args.func(args) or 0
    except (UserError, *USER_ERRORS) as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"saerad {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
