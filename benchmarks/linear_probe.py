"""Linear probe on a backbone's embeddings of IU-phantom: are the drawn findings linearly readable?

    python benchmarks/linear_probe.py [--backbone src/saerad/assets/phantom-resnet] [--pooling cls]

One logistic regression per phantom finding label (train split), AUROC on the test split; macro AUROC over the
labels with at least 5 test positives. No test image is used for training the backbone or the probe.

It also probes the labels the evaluation scores (the rule-based labeler on each report's FINDINGS), and splits the
embedding's variance (train split) by what a linear map explains: the phantom patient's parameters (size, position,
diaphragm, exposure, noise) together and one by one, the drawn findings, or both, and the share of its top 3 principal
components. An SAE spends its features on the variance it sees; a backbone whose variance is mostly the patient gives
features that follow the patient.

Last, the report-writing ceiling: micro-F1-14 on the test split (as `saerad evaluate` scores it) of a writer that states
exactly the labels a supervised probe on the embedding calls positive, each probe's threshold chosen on the validation
split (greedily, for micro-F1; no label written is the normal report), beside the normal report and the same writer
reading the drawn findings themselves (a perfect reader of the phantom). SAE-Rad's features are unsupervised, so the
probe's F1 is what the embedding allows at best; if it is below the normal report's, so will SAE-Rad's be.
"""

import argparse
import dataclasses
import tempfile

import numpy as np
import torch

from configuration_saerad import POOLINGS
from saerad.data.adapters import load_iu_phantom, phantom_seed
from saerad.data.phantom import Patient
from saerad.demo import BACKBONE
from saerad.embed import embed, load_embeddings
from saerad.evaluation.metrics import ChexpertF1
from saerad.interpret.score import auroc
from saerad.labeler import OBSERVATIONS

DEFAULT_BACKBONE = str(BACKBONE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--pooling", default="cls", choices=POOLINGS)
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
    data = load_iu_phantom()
    with tempfile.TemporaryDirectory() as tmp:
        data.save_to_disk(f"{tmp}/data")
        xs, labels, reported = {}, {}, {}
        for split in ("train", "validation", "test"):
            embed(args.backbone, f"{tmp}/data", split, f"{tmp}/{split}", pooling=args.pooling, num_workers=2)
            xs[split], _ = load_embeddings(f"{tmp}/{split}")
            labels[split] = [{f["label"] for f in row} for row in data[split]["phantom_findings"]]
            # the observations the evaluation's CheXpert F1 scores, binarised the same way
            reported[split] = [{o for o, v in zip(OBSERVATIONS, ChexpertF1.binarize(text)) if v}
                               for text in data[split]["findings"]]
    explained = variance_explained(xs["train"], data["train"])
    mean, std = xs["train"].mean(0), xs["train"].std(0) + 1e-6
    train, test = (xs["train"] - mean) / std, (xs["test"] - mean) / std
    validation = (xs["validation"] - mean) / std
    print(f"backbone {args.backbone} ({args.pooling} pooling): linear probe AUROC on the IU-phantom test split")
    tables = (("phantom finding (drawn)", labels), ("reported label (labeler, uncertain as positive)", reported))
    for title, lab in tables:
        rows = probe(train, lab["train"], test, lab["test"], args.epochs)
        print(f"\n| {title} | test positives | AUROC |")
        print("|---|---|---|")
        for name, n, score in rows:
            print(f"| {name} | {n} | {score:.3f} |")
        print(f"\nmacro AUROC over {len(rows)} labels: {np.mean([r[2] for r in rows]):.3f}")
    print("\nshare of the train embeddings' variance explained linearly by: " +
          ", ".join(f"{k} {v:.3f}" for k, v in explained.items()))
    drawn_names = sorted({label for row in labels["train"] for label in row})
    drawn = {s: torch.tensor([[n in row for n in drawn_names] for row in labels[s]], dtype=torch.float32)
             for s in labels}
    normal = micro_f1_14([set()] * len(reported["test"]), reported["test"])
    probed = report_ceiling((train, validation, test), reported, args.epochs)
    perfect = report_ceiling((drawn["train"], drawn["validation"], drawn["test"]), reported, args.epochs)
    print(f"\nreport-writing ceiling, micro-F1-14 on the test split: normal report {normal:.3f}; supervised probe on "
          f"the embedding {probed:.3f}; perfect reader of the drawn findings {perfect:.3f}")


def fit_probe(train: torch.Tensor, y: torch.Tensor, epochs: int):
    """One class-balanced, L2-regularised logistic regression; returns its scoring function."""
    w = torch.zeros(train.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    pos_weight = (len(y) - y.sum()) / y.sum()
    for _ in range(epochs):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(train @ w + b, y, pos_weight=pos_weight)
        loss = loss + 1e-3 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda x: (x @ w + b).detach().numpy()


def probe(train: torch.Tensor, train_labels: list, test: torch.Tensor, test_labels: list, epochs: int) -> list:
    """(label, test positives, test AUROC) of one logistic regression per label with >= 5 positives in each split."""
    rows = []
    for name in sorted({label for row in train_labels for label in row}):
        y = torch.tensor([name in row for row in train_labels], dtype=torch.float32)
        y_test = [name in row for row in test_labels]
        if sum(y_test) < 5 or y.sum() < 5:
            continue
        rows.append((name, sum(y_test), auroc(fit_probe(train, y, epochs)(test), y_test)))
    return rows


def micro_f1_14(written: list, reported: list) -> float:
    """Micro-F1 over the 14 observations of reports that state exactly `written` labels (No Finding when they state
    nothing but support devices, the labeler's rule) against the reported label sets."""
    tp = fp = fn = 0
    for labels, truth in zip(written, reported):
        labels = set(labels) | ({"No Finding"} if not set(labels) - {"Support Devices"} else set())
        tp, fp, fn = tp + len(labels & truth), fp + len(labels - truth), fn + len(truth - labels)
    return 2 * tp / max(1, 2 * tp + fp + fn)


def report_ceiling(xs: tuple, reported: dict, epochs: int, rounds: int = 2) -> float:
    """Test micro-F1-14 of a writer stating the labels whose probe (fit on train) clears a threshold chosen greedily on
    validation for micro-F1; a label whose every threshold lowers validation F1 is never written."""
    train, validation, test = xs
    scores = {}
    for name in OBSERVATIONS:
        y = torch.tensor([name in row for row in reported["train"]], dtype=torch.float32)
        if name != "No Finding" and y.sum() >= 5:
            f = fit_probe(train, y, epochs)
            scores[name] = (f(validation), f(test))

    truths = (reported["validation"], reported["test"])

    def written(split: int, thresholds: dict) -> list:
        return [{n for n, t in thresholds.items() if scores[n][split][i] > t} for i in range(len(truths[split]))]

    thresholds: dict = {}
    for _ in range(rounds):
        for name, (val, _) in scores.items():
            thresholds.pop(name, None)
            best, best_t = micro_f1_14(written(0, thresholds), truths[0]), None
            for t in np.quantile(val, np.linspace(0.5, 0.995, 50)):
                f1 = micro_f1_14(written(0, {**thresholds, name: t}), truths[0])
                if f1 > best:
                    best, best_t = f1, t
            if best_t is not None:
                thresholds[name] = best_t
    return micro_f1_14(written(1, thresholds), truths[1])


def variance_explained(x: torch.Tensor, rows) -> dict:
    """R^2 of least-squares fits of the embeddings on the patient parameters (together and each alone), the findings,
    and both; and the variance share of the top 3 principal components."""
    x = x.double().numpy()
    x = x - x.mean(0)
    patients = np.array([dataclasses.astuple(Patient.from_seed(phantom_seed(i))) for i in rows["id"]])
    found = [{f["label"] for f in row} for row in rows["phantom_findings"]]
    names = sorted(set().union(*found))
    findings = np.array([[name in row for name in names] for row in found], dtype=np.float64)
    designs = [("patient", patients), ("findings", findings), ("both", np.c_[patients, findings])]
    designs += [(f"patient.{f.name} alone", patients[:, [j]]) for j, f in enumerate(dataclasses.fields(Patient))]
    out = {}
    for key, design in designs:
        design = np.c_[design, np.ones(len(x))]
        coef, *_ = np.linalg.lstsq(design, x, rcond=None)
        out[key] = float(1 - ((x - design @ coef) ** 2).sum() / (x**2).sum())
    spectrum = np.linalg.svd(x, compute_uv=False) ** 2
    out["top 3 principal components"] = float(spectrum[:3].sum() / spectrum.sum())
    return out


if __name__ == "__main__":
    main()
