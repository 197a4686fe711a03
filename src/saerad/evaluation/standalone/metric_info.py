"""What every saerad metric module tells `evaluate` about itself: one pair of report strings per example."""

import datasets
import evaluate

PAPER = "https://arxiv.org/abs/2410.03334"
SAERAD_CITATION = """\
@article{abdulaal2024xray,
  title={An X-Ray Is Worth 15 Features: Sparse Autoencoders for Interpretable Radiology Report Generation},
  author={Abdulaal, Ahmed and Fry, Hugo and others},
  journal={arXiv preprint arXiv:2410.03334},
  year={2024}
}
"""


def report_metric_info(description: str, citation: str, inputs_description: str) -> evaluate.MetricInfo:
    """The `MetricInfo` of a metric over generated and reference reports (one string each per example)."""
    return evaluate.MetricInfo(
        description=description, citation=citation, inputs_description=inputs_description,
        features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        reference_urls=[PAPER],
    )
