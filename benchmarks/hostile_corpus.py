"""The hostile corpus (tests/hostile.py) through every entry point: cases per entry point and how many were handled.

    python benchmarks/hostile_corpus.py [--details]

Every case is generated (nothing binary is committed): malformed, huge and odd images and DICOMs (other formats
named .png, deflate bombs, LUTs), feature dictionaries, dataset metadata files, model folders (processor sizes, config
values), the JSONL files of `evaluate --predictions` and `interpret --reports`, embedding arrays and manifests, and
`build`'s inputs. "Handled" means read when valid, and refused in one line that
names the input (the CLI: exit 2, no traceback) when not. `tests/test_hostile.py` asserts every row.
"""

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--details", action="store_true", help="one line per case and entry point")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from hostile import markdown, run_corpus

    with tempfile.TemporaryDirectory() as tmp:
        rows = run_corpus(Path(tmp))
    print(markdown(rows))
    print(f"\n{sum(r['ok'] for r in rows)} of {len(rows)} handled")
    if args.details:
        for r in rows:
            mark = "ok " if r["ok"] else "BAD"
            print(f"{mark} {r['kind']:10} {r['case'][:40]:40} {r['entry point']:38} {r['got'][:90]}")


if __name__ == "__main__":
    main()
