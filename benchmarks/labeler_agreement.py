"""Rule-based labeler vs the IU X-ray curated MeSH tags, and its speed over all 3,955 IU reports.

    python benchmarks/labeler_agreement.py [--reports PATH] [--split heldout|tuning|all]

Tuning used only reports with id % 5 != 0; the held-out figures (id % 5 == 0) are the ones to quote.
"""

import argparse
import time

from saerad.data.iu import read_reports
from saerad.labeler import label_report
from saerad.labeler.agreement import agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", help="NLMCXR_reports.tgz or a folder of XML (default: the cached archive)")
    parser.add_argument("--split", choices=["heldout", "tuning", "all"], default="heldout")
    args = parser.parse_args()
    reports = read_reports(args.reports)
    start = time.perf_counter()
    for r in reports:
        label_report(" ".join(x for x in (r["findings"], r["impression"]) if x))
    elapsed = time.perf_counter() - start
    print(f"labelled {len(reports)} reports in {elapsed:.2f} s on one core")
    result = agreement(reports, held_out={"heldout": True, "tuning": False, "all": None}[args.split])
    print(f"\n{args.split}: {result['n_reports']} reports, labeler positives vs MeSH-derived positives\n")
    print("| observation | precision | recall | F1 | MeSH positives |")
    print("|---|---|---|---|---|")
    for obs, v in result["observations"].items():
        print(f"| {obs} | {v['precision']:.2f} | {v['recall']:.2f} | {v['f1']:.2f} | {v['support']} |")


if __name__ == "__main__":
    main()
