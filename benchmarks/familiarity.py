"""Which signal tells an image unlike the training images? Familiarity signals of a built model, on familiar and
unfamiliar sets, each thresholded at validation's 99th percentile (a 1% false-flag rate), as `saerad build` does.

    python benchmarks/familiarity.py [--model ~/.cache/saerad/demo-v3/model] [--data ~/.cache/saerad/demo-v3/data]
    python benchmarks/familiarity.py --backbone src/saerad/assets/phantom-dino    # a bare backbone's stages alone

Familiar: the dataset's test split and fresh phantom patients (new seeds; 0 to 3 drawn findings). Unfamiliar: the
adult PA chest CR that pydicom-data ships (MIT; as read, flipped, a third the size), its other DICOMs (CT, MR, US, NM,
a CR of a tibia, secondary captures), scikit-image's sample photographs and documents (BSD), both fetched with
`pip download --no-deps` into saerad's cache; noise, constant images, drawings and text pages made here. Signals are
fitted on `--fit-rows` training images (the validation split only sets thresholds; test is only scored):

- stageK: squared Mahalanobis distance of the per-channel mean and std of backbone hidden state K (the shipped
  signal is the model folder's own calibration, `model`);
- pooled: Mahalanobis distance of the pooled embedding; pca32: its residual off the top 32 principal directions
  (ViM-like); recon and l0: the SAE's relative reconstruction error and active-feature count.
"""

import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from demo_model import model_parser, parse_model_args

FRESH_CASES = {
    "0 findings": [], "cardiomegaly": [{"label": "cardiomegaly"}],
    "left pneumothorax": [{"label": "pneumothorax", "laterality": "left"}],
    "effusion + edema": [{"label": "pleural_effusion", "laterality": "right"}, {"label": "edema"}],
    "3 findings": [{"label": "consolidation", "laterality": "left"}, {"label": "pacemaker"},
                   {"label": "hiatal_hernia"}],
}


def made_images() -> dict:
    """Noise (gray and colour), constant images, drawings and text pages, seeded."""
    def noise(seed):
        g = np.random.default_rng(seed)
        return Image.fromarray(g.integers(0, 256, (300, 300, 3) if seed % 2 else (300, 300), dtype=np.uint8))

    def drawing(seed):
        g = np.random.default_rng(seed)
        im = Image.new("L", (320, 320), int(g.integers(180, 256)))
        d = ImageDraw.Draw(im)
        for _ in range(12):
            x, y = (int(v) for v in g.integers(0, 300, 2))
            d.ellipse([x, y, x + int(g.integers(10, 120)), y + int(g.integers(10, 120))],
                      outline=int(g.integers(0, 100)), width=3)
        return im

    def document(seed):
        g = np.random.default_rng(seed)
        im = Image.new("L", (400, 520), 250)
        d = ImageDraw.Draw(im)
        for line in range(30):
            d.text((20, 10 + 16 * line), "".join(chr(int(g.integers(97, 123))) for _ in range(40)), fill=10)
        return im

    return {"noise": [noise(s) for s in range(20)],
            "constant": [Image.new("L", (256, 256), v) for v in (0, 64, 128, 200, 255)],
            "drawing": [drawing(s) for s in range(10)], "document": [document(s) for s in range(10)]}


def outside_images() -> dict:
    """The real images of other projects: pydicom-data's DICOMs and scikit-image's sample pictures."""
    from image_processing_saerad import load_image
    from saerad.familiarity import fetch_wheel_files

    dicoms = fetch_wheel_files("pydicom-data", "data_store/data/")
    pictures = fetch_wheel_files("scikit-image", "skimage/data/", (".png", ".jpg"))
    real, others = [], []
    for path in dicoms:
        try:
            image = load_image(str(path))
        except Exception as err:  # compressed syntaxes without a decoder, multi-frame, broken files: left out
            print(f"left out {path.name}: {str(err).splitlines()[0][:80]}", file=sys.stderr)
            continue
        (real if path.name.startswith("RG1_") else others).append(image)
    real += [im.transpose(Image.FLIP_LEFT_RIGHT) for im in real] + [im.resize((im.width // 3, im.height // 3))
                                                                     for im in real]
    photos = [load_image(str(p)) for p in pictures if os.path.getsize(p) > 2000]
    return {"real_cxr": real, "other_dicom": others, "photos": photos}


@torch.no_grad()
def features(model, processor, images: list, batch_size: int = 32) -> dict:
    """Per image: the statistics of every hidden state, the pooled embedding, and the SAE's recon error and L0."""
    from familiarity_saerad import statistics
    from modeling_saerad import pool_backbone_output
    from saerad.data.images import to_grayscale

    out = {}
    for start in range(0, len(images), batch_size):
        batch = [to_grayscale(im) for im in images[start : start + batch_size]]
        px = processor(images=batch, return_tensors="pt")["pixel_values"]
        o = model.vision_model(pixel_values=px, output_hidden_states=True)
        row = {f"stage{k}": statistics(h, model.config.vision_config) for k, h in enumerate(o.hidden_states) if k}
        row["pooled"] = pool_backbone_output(o, model.config.pooling, model.config.vision_config).float()
        if model.sae is not None:
            x = model.sae.normalize(row["pooled"])
            a = model.sae.encode(x)
            row.update(recon=(x - model.sae.decode(a)).norm(dim=1) / x.norm(dim=1).clamp_min(1e-8),
                       l0=(a > 0).sum(1).float())
        for k, v in row.items():
            out.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def scorers(model, fit: dict) -> dict:
    """`{signal: f(features) -> scores}`, fitted on the training features."""
    from familiarity_saerad import fit as fit_statistics
    from familiarity_saerad import mahalanobis

    def maha(key, shrinkage=1e-2):
        mean, precision = fit_statistics(fit[key], shrinkage)
        return lambda f: mahalanobis(f[key], mean, precision)

    both = {k: torch.cat([fit["stage1"], fit["stage2"]], 1) for k in ("s12",)}
    m12, p12 = fit_statistics(both["s12"], 1e-2)
    centre = fit["pooled"].mean(0)
    _, _, v = torch.linalg.svd(fit["pooled"] - centre, full_matrices=False)
    top = v[:32]

    def pca(f):
        c = f["pooled"] - centre
        return (c - (c @ top.T) @ top).norm(dim=1) / c.norm(dim=1).clamp_min(1e-6)

    signals = {f"{k}": maha(k) for k in fit if k.startswith("stage")}
    signals["stage1+2"] = lambda f: mahalanobis(torch.cat([f["stage1"], f["stage2"]], 1), m12, p12)
    signals.update(pooled=maha("pooled", 1e-3), pca32=pca)
    if "recon" in fit:
        signals.update(recon=lambda f: f["recon"], l0=lambda f: f["l0"])
    cal = model.familiarity
    if cal is not None:  # the shipped calibration, as generate applies it
        signals["model"] = lambda f: mahalanobis(f[f"stage{cal['layer']}"], cal["mean"], cal["precision"])
    return signals


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """P(an unfamiliar image scores above a familiar one), ties counted half."""
    return float((positive[:, None] > negative[None]).mean() + 0.5 * (positive[:, None] == negative[None]).mean())


def sets_of(model, processor, data, fit_rows: int) -> tuple:
    """(training features, {set name: features}), every set through the same forward."""
    from image_processing_saerad import load_image
    from saerad.data.phantom import render
    from saerad.evaluation.fresh import fresh_seed
    from saerad.familiarity import sample_rows

    def images(split, rows=None):
        column = (data[split] if rows is None else data[split].select(rows))["image"]
        return [x if isinstance(x, Image.Image) else load_image(x) for x in column]

    fit = features(model, processor, images("train", sample_rows(len(data["train"]), fit_rows)))
    named = {"validation": images("validation"), "test": images("test")}
    for name, case in FRESH_CASES.items():
        named[f"fresh: {name}"] = [render(case, seed=fresh_seed(f"familiarity:{name}", i), size=256)
                                   for i in range(40)]
    named.update(outside_images())
    named.update(made_images())
    return fit, {k: features(model, processor, v) for k, v in named.items()}


def table(signals: dict, sets: dict) -> str:
    """Markdown: per signal, AUROC familiar vs unfamiliar, flag rates per set, the least unfamiliar image's ratio."""
    familiar = [k for k in sets if k == "test" or k.startswith("fresh")]
    unfamiliar = [k for k in sets if k not in familiar and k != "validation"]
    head = ["signal", "AUROC", "min unfamiliar / thr", "real CXR median / thr"] + [
        f"{k} (n={len(next(iter(sets[k].values())))})" for k in sets]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, score in signals.items():
        s = {k: score(v).double().numpy() for k, v in sets.items()}
        threshold = float(np.quantile(s["validation"], 0.99))
        fam, unf = np.concatenate([s[k] for k in familiar]), np.concatenate([s[k] for k in unfamiliar])
        rates = [f"{(s[k] > threshold).mean():.1%}" for k in sets]
        lines.append(f"| {name} | {auroc(fam, unf):.4f} | {unf.min() / threshold:.2f}x | "
                     f"{np.median(s['real_cxr']) / threshold:.1f}x | " + " | ".join(rates) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from datasets import load_from_disk

    from saerad.demo import WORKDIR
    from saerad.generate import load_model
    from saerad.paths import cache_dir

    parser = model_parser(__doc__)
    parser.add_argument("--data", default=str(cache_dir(WORKDIR) / "data"), help="the dataset folder the model's "
                        "SAE was trained on (train, validation and test splits)")
    parser.add_argument("--fit-rows", type=int, default=1000, help="training images the signals are fitted on")
    parser.add_argument("--backbone", help="measure a bare backbone's hidden states and pooled output instead")
    args = parser.parse_args() if "--backbone" in sys.argv else parse_model_args(parser)
    if args.backbone:
        from types import SimpleNamespace

        from saerad.embed import load_backbone

        vision_model, processor = load_backbone(args.backbone)
        model = SimpleNamespace(vision_model=vision_model.eval(), sae=None, familiarity=None,
                                config=SimpleNamespace(vision_config=vision_model.config, pooling="cls"))
    else:
        model, processor = load_model(args.model)
    fit, sets = sets_of(model, processor, load_from_disk(args.data), args.fit_rows)
    print(f"{args.backbone or args.model}; signals fitted on {len(fit['pooled'])} training images; threshold: "
          "validation's 99th percentile; flag rates per set (familiar: test and fresh phantoms)\n")
    print(table(scorers(model, fit), sets), end="")


if __name__ == "__main__":
    main()
