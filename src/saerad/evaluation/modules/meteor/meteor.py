"""saerad `meteor` metric as an `evaluate` module: `evaluate.load("path/to/meteor")` works offline."""

from saerad.evaluation.evaluate_modules import make_metric

Meteor = make_metric("meteor")
