"""Per-image time of `generate()` without and with localisation, as ratios to the backbone forward alone, in one run.

    python benchmarks/generate.py [--model ~/.cache/saerad/demo-v3/model] [--batch 8] [--repeats 5]

Each of the three is timed on the same batch of fresh phantom images, interleaved over `--repeats` rounds; the
median per image is reported beside its ratio to the backbone's forward pass. Composition is what `generate` adds
to the forward (the SAE and the composer); localisation is `output_localization=True` on top (Grad-CAM: one backward
through the last stage per distinct sentence of each image, the pairs stacked into one batch).
"""

import statistics
import time

import torch

from saerad.generate import load_model

from demo_model import model_parser, parse_model_args


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parse_model_args(parser)
    from saerad.data.phantom import render
    from saerad.evaluation.fresh import fresh_seed

    model, processor = load_model(args.model)
    images = [render([{"label": "pleural_effusion", "laterality": "left"}], seed=fresh_seed("bench", i))
              for i in range(args.batch)]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]

    def backbone():
        with torch.no_grad():
            model.vision_model(pixel_values=pixels)

    runs = {"backbone forward": backbone,
            "generate": lambda: model.generate(pixels, return_dict_in_generate=True),
            "generate with localisation": lambda: model.generate(pixels, return_dict_in_generate=True,
                                                                 output_localization=True)}
    times = {name: [] for name in runs}
    for name, run in runs.items():
        run()  # warm-up
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / args.batch)
    base = statistics.median(times["backbone forward"])
    print(f"model {args.model}, batch {args.batch}, {torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| step | ms per image | ratio to the backbone forward |\n|---|---|---|")
    for name in runs:
        median = statistics.median(times[name])
        print(f"| {name} | {1000 * median:.1f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
