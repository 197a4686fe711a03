"""The metric Spaces against `saerad evaluate`: every number of a run's results.json, recomputed from its
predictions.jsonl by the staged `evaluate` modules, in an environment that may lack saerad (it imports only evaluate).

    saerad push --metrics ORG --dry-run             # prints the staged folders, e.g. /tmp/saerad-metrics-xxxx/bleu
    VENV/bin/python benchmarks/metric_modules.py /tmp/saerad-metrics-xxxx ~/.cache/saerad/demo-v3

VENV: any environment with the modules' requirements.txt installed (tests/test_metric_spaces.py builds one, without
saerad or torch, under `$SAERAD_CACHE/metric-venvs/`). Prints each system's headline numbers, then how many of the
results.json numbers the modules reproduce bit for bit and the largest difference.
"""

import argparse
import json
from pathlib import Path

import evaluate

NAMES = ("bleu", "rouge", "meteor", "cider", "chexpert_f1")
HEADLINE = ("micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5", "bleu_1", "bleu_4", "rouge_l", "meteor", "cider")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("staged", help="the folder holding the staged metric folders (bleu/, rouge/, ...)")
    parser.add_argument("run", help="a `saerad evaluate --out` folder: results.json and predictions.jsonl")
    args = parser.parse_args()
    run = Path(args.run)
    results = json.loads((run / "results.json").read_text())
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines() if line.strip()]
    modules = [evaluate.load(str(Path(args.staged) / name)) for name in NAMES]
    uncertain = results["labeler"].endswith("uncertain as positive")
    references = [row["reference"] for row in rows]
    compared, different, largest = 0, 0, 0.0
    for system, saved in results["systems"].items():
        predictions = [row[system] for row in rows]
        ours = {}
        for module in modules:
            kwargs = {"uncertain_as_positive": uncertain} if module.name == "chexpert_f1" else {}
            ours.update(module.compute(predictions=predictions, references=references, **kwargs))
        print(f"{system:10s}", " ".join(f"{k}={ours[k]:.4f}" for k in HEADLINE if k in ours))
        for key, entry in saved.items():
            compared += 1
            different += ours[key] != entry["value"]
            largest = max(largest, abs(ours[key] - entry["value"]))
    print(f"{compared} numbers of results.json ({len(rows)} reports, {len(results['systems'])} systems): "
          f"{compared - different} reproduced bit for bit, largest difference {largest:.3g}")


if __name__ == "__main__":
    main()
