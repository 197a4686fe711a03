"""Fresh phantom patients through a built model folder: does the report state the one drawn finding, on its side?

    python benchmarks/fresh_phantoms.py [--model ~/.cache/saerad/demo-v3/model] [--n 24]

Per case, `--n` phantoms of new patients (seeds outside every IU-phantom split and the pretraining stream) with that
one finding drawn, and normal ones; each through `model.generate`, its FINDINGS read by the labeler. For a
lateralised finding, "on the drawn side" counts mentions with that side (PA view: the patient's left is on the image's
right). For normal patients, "report states any finding" is the false-alarm rate.
"""

import argparse
import logging
from pathlib import Path

from saerad.demo import WORKDIR
from saerad.evaluation.fresh import fresh_phantom_rows, markdown
from saerad.generate import load_model
from saerad.paths import cache_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(cache_dir(WORKDIR) / "model"), help="model folder (saerad build)")
    parser.add_argument("--n", type=int, default=24, help="patients per case")
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").exists():
        parser.error(f"{args.model}: no model folder; run `make demo` (or `saerad build`) first")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    model, processor = load_model(args.model)
    print(f"model {args.model}, {args.n} fresh patients per case\n")
    print(markdown(fresh_phantom_rows(model, processor, n=args.n)), end="")


if __name__ == "__main__":
    main()
