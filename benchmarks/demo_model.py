"""What the benchmarks that measure a built model share: the `--model` option (the demo's by default) and its check."""

import argparse
import logging
from pathlib import Path


def model_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the script's docstring as help and `--model` (default: the demo's model folder)."""
    from saerad.demo import WORKDIR
    from saerad.paths import cache_dir

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(cache_dir(WORKDIR) / "model"), help="model folder (default: the demo's)")
    return parser


def parse_model_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, after refusing a `--model` that is no model folder; transformers' loading chatter silenced."""
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").exists():
        parser.error(f"{args.model}: no model folder; run `make demo` (or `saerad build`) first")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return args
