"""saerad `chexpert_f1` metric as an `evaluate` module: `evaluate.load("path/to/chexpert_f1")` works offline."""

from saerad.evaluation.evaluate_modules import make_metric

ChexpertF1 = make_metric("chexpert_f1")
