"""Fresh phantom patients whose findings are known, through a built model folder: is what the report says there, on its
side, and nothing else?

    python benchmarks/phantom_truth.py [--model ~/.cache/saerad/demo-v3/model] [--json truth.json]
        [--namespace truth] [--n-single 8] [--n-combo 48] [--n-normal 48] [--localization]

Patients (seeds outside every IU-phantom split and the pretraining stream; `--namespace` draws others) with no
finding; each drawable finding alone, each lateralised one on both sides; 2 and 3 listed findings together; and 1, 2
and 3 findings as the training split's phantoms hold them (read from the demo's data folder next to the model). Each
report's FINDINGS read by the labeler and scored by saerad.evaluation.truth: recall (a stated parent, such as lung
opacity for a drawn consolidation, counts), precision (a stated finding that was not drawn is false), side right,
false findings per report, normal patients with no finding; per drawn finding; the confusion table (drawn -> stated)
in the JSON.
"""

import json
from collections import defaultdict
from pathlib import Path

from saerad.evaluation import truth
from saerad.evaluation.fresh import drawable_findings, run_cases, truth_cases
from saerad.generate import load_model

from demo_model import model_parser, parse_model_args


def train_findings(data: str) -> list:
    """The drawn findings of each training row of a saved IU-phantom (the demo's data folder)."""
    from datasets import load_from_disk

    return load_from_disk(data)["train"].remove_columns("image")["phantom_findings"]


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--data", help="IU-phantom folder (default: data/ beside the model folder)")
    parser.add_argument("--namespace", default="truth", help="another namespace draws other patients")
    parser.add_argument("--n-single", type=int, default=8, help="patients per drawable finding alone")
    parser.add_argument("--n-combo", type=int, default=48, help="patients per group of 2-3 findings")
    parser.add_argument("--n-normal", type=int, default=48)
    parser.add_argument("--json", help="write every number and report here")
    parser.add_argument("--localization", action="store_true",
                        help="also map each sentence and count the sides the map-side check dropped")
    args = parse_model_args(parser)
    model, processor = load_model(args.model)
    data = args.data or str(Path(args.model).parent / "data")
    cases = truth_cases(train_findings(data), args.n_single, args.n_combo, args.n_normal, args.namespace)
    results = run_cases(model, processor, cases, output_localization=args.localization)
    scored = [truth.score_report(r["findings"], r["drawn"]) for r in results]
    groups = defaultdict(list)
    for r, s in zip(results, scored):
        groups[r["group"]].append(s)
    summaries = {"all": truth.summarize(scored), **{g: truth.summarize(v) for g, v in groups.items()}}
    rows, confused = truth.per_finding(scored), truth.confusion(scored)
    print(f"model {args.model}, {len(cases)} fresh patients (namespace {args.namespace!r})\n")
    print(truth.summary_markdown(summaries))
    listed = [truth.finding_name(f["label"], f["laterality"]) for f in drawable_findings()]
    print(truth.findings_markdown(rows, confused, names=listed))
    print(truth.observations_markdown(truth.per_observation(scored)))
    sides = truth.map_sides(results) if args.localization else None
    if sides:
        print(f"map-side check: {sides}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "namespace": args.namespace, "summary": summaries, "per_finding": rows,
            "per_observation": truth.per_observation(scored), "confusion": confused, "map_sides": sides,
            "reports": [{**r, "score": s} for r, s in zip(results, scored)]}, indent=1))


if __name__ == "__main__":
    main()
