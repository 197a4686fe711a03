import pytest
import torch

from modeling_saerad import SAERadModel, SparseAutoencoder

from conftest import tiny_config


def random_sae(architecture, seed=0, **overrides):
    torch.manual_seed(seed)
    model = SAERadModel(tiny_config(sae_architecture=architecture, **overrides))
    sae = model.sae
    with torch.no_grad():  # spread biases and thresholds so that some features are off and some on
        for name, p in sae.named_parameters():
            if name.startswith("b_") or name == "r_mag":
                p.normal_(0, 0.5)
        if architecture == "jumprelu":
            sae.threshold.uniform_(0.2, 1.0)
    return sae


@pytest.mark.parametrize("architecture", ["gated", "topk", "jumprelu", "relu"])
def test_inactive_features_are_exact_zeros(architecture):
    sae = random_sae(architecture)
    x = torch.randn(256, sae.W_enc.shape[0])
    f = sae.encode(x)
    assert f.shape == (256, 64)
    assert (f >= 0).all()
    inactive = f == 0
    assert inactive.any() and (~inactive).any()
    assert torch.equal(f[inactive], torch.zeros(int(inactive.sum())))


def test_jumprelu_zeroes_below_threshold_and_keeps_value_above():
    sae = random_sae("jumprelu")
    x = torch.randn(64, 32)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    f = sae.encode(x)
    assert torch.equal(f, torch.where(pre > sae.threshold, pre, torch.zeros_like(pre)))


def test_gated_gate_decides_and_magnitude_sets_value():
    sae = random_sae("gated")
    x = torch.randn(64, 32)
    gate = ((x - sae.b_dec) @ sae.W_enc + sae.b_gate) > 0
    f = sae.encode(x)
    assert not (f[~gate] != 0).any()
    mag = torch.relu((x - sae.b_dec) @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
    assert torch.allclose(f[gate], mag[gate])


def test_topk_keeps_exactly_k_latents():
    sae = random_sae("topk", k=4)
    sae.b_enc.data.fill_(1.0)  # the k largest pre-activations are then positive
    f = sae.encode(torch.randn(512, 32))
    assert ((f != 0).sum(-1) == 4).all()


def test_decode_is_affine_in_activations():
    sae = random_sae("relu")
    f = torch.rand(8, 64)
    assert torch.allclose(sae.decode(f), f @ sae.W_dec + sae.b_dec)
    assert sae.W_dec.shape == (64, 32) and sae.b_dec.shape == (32,)


def test_forward_reports_normalised_embeds_and_reconstruction():
    torch.manual_seed(0)
    model = SAERadModel(tiny_config(center_inputs=True, input_scale=3.0)).eval()
    model.sae.input_mean.data.normal_()
    pixels = torch.randn(2, 3, 32, 32)
    out = model(pixels)
    pooled = model.get_image_features(pixels)
    assert torch.allclose(out.image_embeds, (pooled - model.sae.input_mean) * 3.0)
    assert torch.allclose(out.reconstruction, model.sae.decode(out.feature_activations))


def test_max_pooled_model_feeds_the_sae_each_channels_maximum_over_the_patch_tokens():
    torch.manual_seed(0)
    model = SAERadModel(tiny_config(pooling="max")).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state
        pooled = model.get_image_features(pixels)
    assert pooled.shape == (2, 32) and torch.equal(pooled, hidden[:, 1:].max(dim=1).values)


def test_convolutional_backbone_pools_over_its_feature_map():
    import types

    from modeling_saerad import pool_backbone_output

    hidden = torch.randn(2, 5, 3, 4)  # (batch, channels, height, width)
    outputs = types.SimpleNamespace(last_hidden_state=hidden, pooler_output=torch.randn(2, 5, 1, 1))
    assert torch.equal(pool_backbone_output(outputs, "max", None), hidden.amax(dim=(2, 3)))
    assert torch.allclose(pool_backbone_output(outputs, "mean", None), hidden.mean(dim=(2, 3)))
    assert torch.equal(pool_backbone_output(outputs, "cls", None), outputs.pooler_output.flatten(1))


def test_sae_parameter_names_follow_the_field():
    names = {a: set(dict(random_sae(a).named_parameters())) for a in ["gated", "topk", "jumprelu", "relu"]}
    assert names["gated"] == {"W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"}
    assert names["jumprelu"] == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
    assert names["topk"] == names["relu"] == {"W_enc", "b_enc", "W_dec", "b_dec"}
    assert isinstance(random_sae("relu"), SparseAutoencoder)
