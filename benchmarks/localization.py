"""Where the sentence that states a lateralised finding looks, on fresh phantom patients: Grad-CAM against pixel
gradients, measured side by side in one run.

    python benchmarks/localization.py [--model ~/.cache/saerad/demo-v3/model] [--n 24]

Per case (one lateralised finding drawn on fresh patients, seeds outside every split), the images whose report
states the finding; for each, the map of the sentences that state it: "sentence gradcam" is what
`generate(output_localization=True)` attaches (Grad-CAM of the sentence's activation-weighted score), "gradcam" and
"gradient" the activation-weighted sum of `localize`'s per-feature maps. "mass
on the drawn side": the map puts more of its mass on the drawn side of the image than on the other (PA view: the
patient's left is the image's right); "side statement agrees": `map_side` reads the drawn side (or bilateral).
"""


import torch

from localization_saerad import map_side
from saerad.evaluation.fresh import OBSERVATION_OF, fresh_seed
from saerad.generate import load_model

from demo_model import model_parser, parse_model_args

CASES = (("pleural_effusion", "left"), ("pleural_effusion", "right"), ("pneumothorax", "left"),
         ("pneumothorax", "right"), ("consolidation", "left"), ("consolidation", "right"), ("central_line", "right"),
         ("opacity", "right"))


def side_mass(saliency: torch.Tensor, side: str) -> float:
    """Share of the map's mass on the patient's `side` (the image's right half is the patient's left)."""
    columns = saliency.sum(0)
    half = columns.numel() // 2
    left, right = float(columns[columns.numel() - half:].sum()), float(columns[:half].sum())
    return (left if side == "left" else right) / max(left + right, 1e-12)


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--n", type=int, default=24)
    args = parse_model_args(parser)
    from saerad.data.phantom import render
    from saerad.labeler import label_mentions

    model, processor = load_model(args.model)
    print("| drawn finding | images stating it | method | mass on the drawn side (share of images) | "
          "mean share on the drawn side | side statement agrees |\n|---|---|---|---|---|---|")
    for label, side in CASES:
        name = f"{side} {label}"
        images = [render([{"label": label, "laterality": side}], seed=fresh_seed(name, i)) for i in range(args.n)]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        out = model.generate(pixels, return_dict_in_generate=True, output_localization=True)
        stating = []  # (image index, feature ids, their activations, the sentence maps generate attached)
        for i, sentences in enumerate(out.sentences):
            ids, acts, maps = [], [], []
            for s in sentences:
                if any(m["label"] == OBSERVATION_OF[label] and m["status"] != "negative"
                       for m in label_mentions(s["text"])):
                    maps.append(s["localization"] * max(s["activations"]))
                    for f, a in zip(s["feature_ids"], s["activations"]):
                        if f not in ids:
                            ids.append(f)
                            acts.append(a)
            if ids:
                stating.append((i, ids, acts, torch.stack(maps).sum(0)))
        for method in ("sentence gradcam", "gradcam", "gradient"):
            if not stating:
                print(f"| {name} | 0 | {method} | – | – | – |")
                continue
            correct, shares, agrees = 0, [], 0
            for i, ids, acts, sentence_map in stating:
                if method == "sentence gradcam":
                    combined = sentence_map
                else:
                    maps = model.localize(pixels[i : i + 1], feature_ids=ids, method=method)[0]
                    combined = (torch.tensor(acts)[:, None, None] * maps).sum(0)
                share = side_mass(combined, side)
                shares.append(share)
                correct += share > 0.5
                agrees += map_side(combined) in (side, "bilateral")
            k = len(stating)
            print(f"| {name} | {k} | {method} | {correct / k:.0%} | {sum(shares) / k:.2f} | {agrees / k:.0%} |")

if __name__ == "__main__":
    main()
