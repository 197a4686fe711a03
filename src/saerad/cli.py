"""`saerad <command>`: one verb per pipeline stage, each imported only when it runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from . import __version__

# Mistakes a user can make (bad path, bad file, bad value): one line on stderr, exit 2.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line."""


def cmd_report(args: argparse.Namespace) -> int:
    """Print one report per image."""
    from .generate import generate, load_model

    model, processor = load_model(args.model, device=args.device)
    results = generate(model, processor, args.images)
    if args.json:
        payload = [{"image": image, **result} for image, result in zip(args.images, results)]
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for image, result in zip(args.images, results):
        print(f"== {image} ==")
        print(result["report"] or "(no described feature fired on this image)")
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `saerad` argument parser."""
    parser = argparse.ArgumentParser(prog="saerad", description=__doc__)
    parser.add_argument("--version", action="version", version=f"saerad {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("report", help="write a report for each image (PNG, JPEG or DICOM)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True, help="model folder (from `saerad build`) or hub repo id")
    p.add_argument("--json", action="store_true", help="print reports with sentences, feature ids and activations")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `saerad` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (UserError, *USER_ERRORS) as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"saerad {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
