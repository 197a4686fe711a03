"""Labeler time against input length on one run-on sentence (no full stop), in one run.

    python benchmarks/labeler_scaling.py [--max-chars 70000]

A run-on sentence is the labeler's worst case: every mention looks for triggers, terminators and modifiers in the
whole sentence. Prints seconds per length and the time per 1k characters, which stays flat when labelling is linear
(before the indexes in `_Sentence` it was about cubic: 2.2k characters 0.25 s, 8.8k 8.3 s, 17.6k 62 s).
"""

import argparse
import time

from saerad.labeler import label_report

CLAUSE = ("no pleural effusion or pneumothorax and mild cardiomegaly with left basilar opacity possibly atelectasis "
          "and stable right pacemaker leads and degenerative changes of the spine with ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-chars", type=int, default=70_000)
    args = parser.parse_args()
    print("| characters | seconds | ms per 1k characters |\n|---|---|---|")
    n = 2200
    while n <= args.max_chars:
        text = (CLAUSE * (n // len(CLAUSE) + 1))[:n]
        start = time.perf_counter()
        label_report(text)
        took = time.perf_counter() - start
        print(f"| {n} | {took:.2f} | {1000 * took / (n / 1000):.1f} |")
        n *= 2


if __name__ == "__main__":
    main()
