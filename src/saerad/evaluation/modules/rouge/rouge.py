"""saerad `rouge` metric as an `evaluate` module: `evaluate.load("path/to/rouge")` works offline."""

from saerad.evaluation.evaluate_modules import make_metric

Rouge = make_metric("rouge")
