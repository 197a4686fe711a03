"""Shared fixtures: tiny SAE-Rad models built from configs, never downloaded."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

TINY_VISION = {
    "model_type": "dinov2",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "patch_size": 8,
    "image_size": 32,
}


def tiny_config(**overrides):
    """A tiny SAE-Rad config: 2-layer ViT with hidden 32, d_in=32, d_sae=64."""
    from configuration_saerad import SAERadConfig

    kwargs = {"vision_config": dict(TINY_VISION), "sae_architecture": "topk", "expansion_factor": 2, "k": 4}
    kwargs.update(overrides)
    return SAERadConfig(**kwargs)


def tiny_dictionary(d_sae=64):
    """A feature dictionary with one made-up lung sentence per feature."""
    return {
        "schema_version": 1,
        "features": [
            {"id": i, "description": f"Made-up finding number {i}.", "section": "lungs", "findings": [],
             "score": 0.9, "frequency": 0.1, "exemplars": [f"study-{i}"]}
            for i in range(d_sae)
        ],
    }


def tiny_model(seed=0, **overrides):
    """A tiny random SAE-Rad model with a dictionary, in eval mode."""
    from modeling_saerad import SAERadModel

    torch.manual_seed(seed)
    model = SAERadModel(tiny_config(**overrides)).eval()
    model.load_feature_dictionary(tiny_dictionary(model.config.d_sae))
    return model


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def model_dir(tmp_path, model):
    path = tmp_path / "model"
    model.save_pretrained(path)
    return path


def tiny_backbone(path, seed=0):
    """A tiny random Dinov2 backbone with its image processor, saved like a hub folder at `path`."""
    from transformers import Dinov2Config, Dinov2Model

    from image_processing_saerad import default_image_processor

    config = Dinov2Config(**{k: v for k, v in TINY_VISION.items() if k != "model_type"})
    torch.manual_seed(seed)
    Dinov2Model(config).save_pretrained(path)
    default_image_processor(config).save_pretrained(path)
    return path


@pytest.fixture
def backbone_dir(tmp_path):
    """A tiny random Dinov2 backbone with its image processor, saved like a hub folder."""
    return tiny_backbone(tmp_path / "backbone")
