# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""`pipeline("radiology-report", model=..., trust_remote_code=True)`: an image (PIL image, path or bytes of a PNG,
JPEG or DICOM), or a list of them, to its report with each sentence's provenance."""

import os
from typing import Any

from transformers import Pipeline

try:  # as remote code (transformers_modules) the files are siblings in a package
    from .image_processing_saerad import load_image
except ImportError:  # installed with saerad, they are top-level modules
    from image_processing_saerad import load_image

TASK = "radiology-report"
# config.json's `custom_pipelines`, as transformers reads it for a model folder or repo
CUSTOM_PIPELINES = {TASK: {"impl": "pipeline_saerad.SAERadReportPipeline", "pt": ["AutoModel"], "tf": [],
                           "type": "image"}}
GENERATE_KWARGS = ("output_localization", "feature_overrides", "on_unfamiliar", "min_activation",
                   "max_report_features", "min_feature_score", "min_feature_precision", "normal_impression")


class SAERadReportPipeline(Pipeline):
    """Image(s) -> `{"report", "findings", "impression", "sentences", "omitted", "familiarity"}` per image (the
    familiarity entry warns when the image is unlike the training images): the model's
    `generate(..., return_dict_in_generate=True)` for one image at a time; keyword arguments go to `generate`."""

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, **kwargs) -> tuple:
        unknown = sorted(set(kwargs) - set(GENERATE_KWARGS))
        if unknown:
            raise TypeError(f"{TASK} pipeline got unknown arguments {unknown}; allowed: {list(GENERATE_KWARGS)}")
        return {}, kwargs, {}

    def preprocess(self, image: Any) -> dict:
        if isinstance(image, (str, os.PathLike, bytes, bytearray)):
            image = load_image(image)
        return self.image_processor(images=image, return_tensors="pt")

    def _forward(self, model_inputs: dict, **generate_kwargs) -> Any:
        return self.model.generate(model_inputs["pixel_values"], return_dict_in_generate=True, **generate_kwargs)

    def postprocess(self, outputs: Any) -> dict:
        return {"report": outputs.reports[0], "findings": outputs.findings[0], "impression": outputs.impressions[0],
                "sentences": outputs.sentences[0], "omitted": outputs.omitted[0],
                "familiarity": (outputs.familiarity or [None])[0]}


__all__ = ["CUSTOM_PIPELINES", "SAERadReportPipeline", "TASK"]
