"""Linear probe on a backbone's embeddings of IU-phantom: are the drawn findings linearly readable?

    python benchmarks/linear_probe.py [--backbone src/saerad/assets/phantom-dino] [--pooling cls]

One logistic regression per phantom finding label (train split), AUROC on the test split; macro AUROC over the
labels with at least 5 test positives. No test image is used for training the backbone or the probe.
"""

import argparse
import tempfile

import numpy as np
import torch

from saerad.data.adapters import load_iu_phantom
from saerad.embed import embed, load_embeddings
from saerad.interpret.score import auroc

DEFAULT_BACKBONE = "src/saerad/assets/phantom-dino"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--pooling", default="cls", choices=["cls", "mean", "cls_mean"])
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
    data = load_iu_phantom()
    with tempfile.TemporaryDirectory() as tmp:
        data.save_to_disk(f"{tmp}/data")
        xs, labels = {}, {}
        for split in ("train", "test"):
            embed(args.backbone, f"{tmp}/data", split, f"{tmp}/{split}", pooling=args.pooling, num_workers=2)
            xs[split], _ = load_embeddings(f"{tmp}/{split}")
            labels[split] = [{f["label"] for f in row} for row in data[split]["phantom_findings"]]
    mean, std = xs["train"].mean(0), xs["train"].std(0) + 1e-6
    train, test = (xs["train"] - mean) / std, (xs["test"] - mean) / std
    names = sorted({label for row in labels["train"] for label in row})
    rows = []
    for name in names:
        y = torch.tensor([name in row for row in labels["train"]], dtype=torch.float32)
        y_test = [name in row for row in labels["test"]]
        if sum(y_test) < 5 or y.sum() < 5:
            continue
        w = torch.zeros(train.shape[1], requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        pos_weight = (len(y) - y.sum()) / y.sum()
        for _ in range(args.epochs):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(train @ w + b, y, pos_weight=pos_weight)
            loss = loss + 1e-3 * w.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            rows.append((name, sum(y_test), auroc((test @ w + b).numpy(), y_test)))
    print(f"backbone {args.backbone} ({args.pooling} pooling): linear probe AUROC on the IU-phantom test split\n")
    print("| finding | test positives | AUROC |")
    print("|---|---|---|")
    for name, n, score in rows:
        print(f"| {name} | {n} | {score:.3f} |")
    print(f"\nmacro AUROC over {len(rows)} findings: {np.mean([r[2] for r in rows]):.3f}")


if __name__ == "__main__":
    main()
