import inspect
import re

import pytest
from transformers import Dinov2Config

from configuration_saerad import SAERadConfig

from conftest import TINY_VISION, tiny_config


def test_docstring_documents_exactly_the_signature():
    documented = re.findall(r"^\s{8}(\w+) \(`", SAERadConfig.__doc__, flags=re.M)
    signature = [p for p in inspect.signature(SAERadConfig.__init__).parameters if p not in ("self", "kwargs")]
    assert documented == signature


def test_default_vision_config_has_rad_dino_geometry():
    config = SAERadConfig()
    vc = config.vision_config
    assert isinstance(vc, Dinov2Config)
    assert (vc.hidden_size, vc.num_hidden_layers, vc.num_attention_heads, vc.patch_size, vc.image_size) == (
        768, 12, 12, 14, 518)
    assert config.d_in == 768 and config.d_sae == 768 * 64 and config.sae_architecture == "gated"


@pytest.mark.parametrize("pooling,d_in", [("cls", 32), ("mean", 32), ("cls_mean", 64), ("max", 32)])
def test_d_in_follows_backbone_and_pooling(pooling, d_in):
    assert tiny_config(pooling=pooling).d_in == d_in


def test_vision_config_accepts_object_and_dict():
    from_obj = tiny_config(vision_config=Dinov2Config(**{k: v for k, v in TINY_VISION.items() if k != "model_type"}))
    assert from_obj.vision_config.to_dict() == tiny_config().vision_config.to_dict()


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"d_in": 33}, "d_in"),
        ({"sae_architecture": "batchtopk-ish"}, "sae_architecture"),
        ({"k": -1}, "k"),
        ({"k": 65}, "k"),
        ({"pooling": "gem"}, "pooling"),
        ({"d_sae": 0}, "d_sae"),
        ({"max_report_features": 0}, "max_report_features"),
        ({"min_activation": -0.5}, "min_activation"),
        ({"input_scale": 0.0}, "input_scale"),
        ({"vision_config": {"hidden_size": 8}}, "vision_config"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"^{field}"):
        tiny_config(**overrides)


def test_config_from_older_version_loads_with_defaults(tmp_path):
    old = {"model_type": "sae_rad", "vision_config": dict(TINY_VISION), "sae_architecture": "relu", "d_sae": 48}
    config = SAERadConfig.from_dict(old)
    assert config.d_sae == 48 and config.pooling == "cls" and config.min_activation == 0.0
    assert config.max_report_features == 15 and config.min_feature_score is None


def test_config_round_trips_through_json(tmp_path):
    config = tiny_config(pooling="cls_mean", min_activation=0.25, center_inputs=True, input_scale=2.5)
    config.save_pretrained(tmp_path)
    loaded = SAERadConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()


def test_the_command_line_offers_exactly_the_poolings_the_model_knows():
    from configuration_saerad import POOLINGS
    from saerad import cli

    assert cli.POOLINGS == POOLINGS
