"""`saerad embed` at RAD-DINO's shape: images per second on this machine's CPU, with and without decode workers, and
the FLOPs (hence the time on one GPU) of embedding the paper's 240,000 training images.

    python benchmarks/embed_throughput.py [--images 6] [--size 2048] [--batch-size 2]

The backbone is a randomly initialised DINOv2 ViT-B/14 of RAD-DINO's config (hidden 768, 12 layers, 12 heads,
patch 14, 518 px), built from its config (never downloaded); its speed is the trained model's. The images are
`--size`-pixel grayscale JPEGs (MIMIC-CXR-JPG's are about 2,500 x 3,000) in an imagefolder dataset. Each setting runs
the real `saerad embed` function (`saerad.embed.embed`) on a fresh cache; the time excludes loading the backbone,
measured separately. The FLOP count of one forward pass is torch's (`torch.utils.flop_counter`).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def rad_dino_shaped(folder: Path) -> None:
    """A random DINOv2 ViT-B/14 at 518 px (RAD-DINO's config) and its image processor, saved to `folder`."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          patch_size=14, image_size=518, layerscale_value=1e-5)
    torch.manual_seed(0)
    Dinov2Model(config).save_pretrained(folder, safe_serialization=True)
    BitImageProcessor(size={"shortest_edge": 518}, crop_size={"height": 518, "width": 518}, do_center_crop=True,
                      image_mean=[0.5307] * 3, image_std=[0.2583] * 3).save_pretrained(folder)


def image_folder(folder: Path, n: int, size: int) -> None:
    """`n` noisy grayscale JPEGs of `size` pixels and a metadata.jsonl naming them."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(folder / "metadata.jsonl", "w") as meta:
        for i in range(n):
            pixels = (rng.random((size, size)) * 64 + np.linspace(0, 160, size)[None, :]).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.jpg", quality=90)
            meta.write(json.dumps({"file_name": f"{i}.jpg", "findings": "Lungs are clear.", "id": str(i)}) + "\n")


def forward_flops(backbone: Path) -> float:
    """FLOPs of one 518 px image through the backbone."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(backbone).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(pixel_values=torch.zeros(1, 3, 518, 518))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6, help="images per setting")
    parser.add_argument("--size", type=int, default=2048, help="side of each JPEG")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rows", type=int, default=240_000, help="images the GPU estimate is for")
    parser.add_argument("--gpu-tflops", type=float, default=400.0,
                        help="sustained dense bf16 TFLOPS assumed for the GPU estimate (an H100 peaks near 990)")
    args = parser.parse_args()
    from saerad.embed import embed, load_backbone

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rad_dino_shaped(root / "backbone")
        image_folder(root / "images", args.images, args.size)
        start = time.perf_counter()
        load_backbone(str(root / "backbone"))
        load = time.perf_counter() - start
        rates = {}
        for workers in (0, 2):
            start = time.perf_counter()
            embed(str(root / "backbone"), f"imagefolder:{root / 'images'}", "train", str(root / f"cache-{workers}"),
                  batch_size=args.batch_size, num_workers=workers)
            rates[workers] = args.images / max(1e-9, time.perf_counter() - start - load)
        flops = forward_flops(root / "backbone")
    total = flops * args.rows
    print(f"{torch.get_num_threads()} threads; {args.images} JPEGs of {args.size} px, batch {args.batch_size}; "
          f"backbone load {load:.1f} s (excluded)")
    print("| decode workers | images/s (CPU) | 240,000 images at this rate |")
    print("|---|---|---|")
    for workers, rate in rates.items():
        print(f"| {workers} | {rate:.3f} | {args.rows / rate / 86400:.1f} days |")
    print(f"\none 518 px forward: {flops / 1e9:.0f} GFLOP; {args.rows:,} images: {total / 1e15:.1f} PFLOP = "
          f"{total / (args.gpu_tflops * 1e12) / 60:.1f} min of GPU compute at {args.gpu_tflops:.0f} TFLOPS sustained")


if __name__ == "__main__":
    main()
