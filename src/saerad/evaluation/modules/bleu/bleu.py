"""saerad `bleu` metric as an `evaluate` module: `evaluate.load("path/to/bleu")` works offline."""

from saerad.evaluation.evaluate_modules import make_metric

Bleu = make_metric("bleu")
