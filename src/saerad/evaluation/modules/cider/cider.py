"""saerad `cider` metric as an `evaluate` module: `evaluate.load("path/to/cider")` works offline."""

from saerad.evaluation.evaluate_modules import make_metric

Cider = make_metric("cider")
