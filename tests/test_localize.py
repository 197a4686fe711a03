"""Grounded and steerable reports: localize, output_localization, feature_overrides, explain."""

import pytest
import torch
from torch import nn

from localization_saerad import map_side

from conftest import tiny_model


class _BrightnessBackbone(nn.Module):
    """A stand-in CNN whose last feature map is the image's channel 0 average-pooled to 8x8, on 32 channels: a
    feature that reads channel 0 looks exactly where the image is bright."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 32))

    def forward(self, pixel_values, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention

        grid = nn.functional.adaptive_avg_pool2d(pixel_values[:, :1], 8)
        fmap = grid * self.scale[None, :, None, None]
        return BaseModelOutputWithPoolingAndNoAttention(last_hidden_state=fmap,
                                                        pooler_output=fmap.mean((2, 3), keepdim=True))


def _brightness_model():
    """Feature 0 fires with the mean brightness (described "Left pleural effusion."), feature 1 never fires."""
    model = tiny_model(sae_architecture="relu")
    model.vision_model = _BrightnessBackbone()
    with torch.no_grad():
        model.sae.W_enc.zero_()
        model.sae.b_enc.fill_(-0.01)
        model.sae.W_enc[:, 0] = 1.0
        model.sae.b_dec.zero_()
        if model.sae.input_mean is not None:
            model.sae.input_mean.zero_()
    features = model.feature_dictionary["features"]
    features[0].update(description="Left pleural effusion.", section="pleura",
                       findings=[{"label": "Pleural Effusion", "status": "positive", "laterality": "left"}])
    return model


def _blob(side: str, size: int = 32) -> torch.Tensor:
    """An image bright only on the patient's `side` (PA view: the patient's left is the image's right)."""
    pixels = torch.zeros(1, 3, size, size)
    columns = slice(size // 2 + 4, size) if side == "left" else slice(0, size // 2 - 4)
    pixels[:, :, size // 2 :, columns] = 3.0
    return pixels


@pytest.mark.parametrize("side", ["left", "right"])
def test_gradcam_puts_the_map_where_the_feature_reads_the_image(side):
    model = _brightness_model()
    pixels = _blob(side)
    maps = model.localize(pixels, feature_ids=[0, 1])
    assert maps.shape == (1, 2, 32, 32) and float(maps.min()) >= 0 and float(maps[0, 0].max()) == pytest.approx(1)
    assert float(maps[0, 1].abs().sum()) == 0  # silent feature: an empty map
    columns = maps[0, 0].sum(0)
    patient_left = float(columns[16:].sum() / columns.sum())
    assert patient_left > 0.9 if side == "left" else patient_left < 0.1
    assert map_side(maps[0, 0]) == side
    gradient = model.localize(pixels, feature_ids=[0], method="gradient")
    assert gradient.shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="method must be one of"):
        model.localize(pixels, method="rollout")


def test_generate_attaches_each_sentence_its_map_and_side():
    model = _brightness_model()
    out = model.generate(torch.cat([_blob("left"), _blob("right")]), return_dict_in_generate=True,
                         output_localization=True)
    sides = [[s["side"] for s in sentences if s["report_section"] == "findings"] for sentences in out.sentences]
    assert sides == [["left"], ["right"]]  # the right-sided image: the sentence says left, its map says right
    assert out.sentences[0][0]["localization"].shape == (32, 32)
    with pytest.raises(ValueError, match="needs return_dict_in_generate"):
        model.generate(_blob("left"), output_localization=True)


def test_a_sentences_map_is_the_gradcam_of_its_features_and_repeats_share_it():
    model = _brightness_model()
    pixels = torch.cat([_blob("left"), _blob("right")])
    out = model.generate(pixels, return_dict_in_generate=True, output_localization=True)
    maps = model.localize(pixels, feature_ids=[0])
    for i, sentences in enumerate(out.sentences):
        for s in sentences:
            if s["feature_ids"] == [0]:  # FINDINGS and IMPRESSION alike: one feature, that feature's own map
                torch.testing.assert_close(s["localization"], maps[i, 0])
    switched = model.generate(pixels, return_dict_in_generate=True, output_localization=True,
                              feature_overrides={0: 0.0, 1: 1.0})
    on = [s for sentences in switched.sentences for s in sentences if s["feature_ids"] == [1]]
    assert on and all(s["side"] is None and float(s["localization"].sum()) == 0 for s in on)  # no gradient, no map


def test_map_side_reads_central_bilateral_and_empty_maps():
    central, both = torch.zeros(30, 30), torch.zeros(30, 30)
    central[:, 12:18] = 1
    both[:, :5], both[:, 25:] = 1, 1
    assert map_side(central) == "central" and map_side(both) == "bilateral" and map_side(torch.zeros(4, 4)) is None


def test_switching_off_a_sentences_features_removes_it_and_nothing_else():
    model = tiny_model(seed=3)
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    base = model.generate(pixels, return_dict_in_generate=True)
    image = next(i for i, s in enumerate(base.sentences) if len(s) >= 3)
    target = base.sentences[image][0]
    off = {f: 0 for f in target["feature_ids"]}
    out = model.generate(pixels[image : image + 1], return_dict_in_generate=True, feature_overrides=off)
    texts = [s["text"] for s in out.sentences[0]]
    assert target["text"] not in texts
    kept = [s["text"] for s in base.sentences[image] if not set(s["feature_ids"]) <= set(off)]
    assert [t for t in texts if t != model.config.normal_impression] == [
        t for t in kept if t != model.config.normal_impression]
    assert all(float(out.feature_activations[0, f]) == 0 for f in off)


def test_switching_a_feature_on_adds_its_sentence_and_marks_it():
    model = tiny_model(seed=3)
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    base = model.generate(pixels, return_dict_in_generate=True)
    silent = next(f for f in range(model.config.d_sae) if float(base.feature_activations[0, f]) == 0)
    strongest = float(base.feature_activations.max())
    out = model.generate(pixels, return_dict_in_generate=True, feature_overrides={silent: strongest + 1})
    marked = [s for s in out.sentences[0] if s.get("overridden")]
    assert marked and marked[0]["text"] == model.features[silent]["description"]
    assert marked[0]["overridden"] == [silent] and marked[0]["feature_ids"][0] == silent
    assert model.generate(pixels, feature_overrides={silent: strongest + 1}) == out.reports


def test_bad_overrides_are_clear_errors():
    model = tiny_model()
    pixels = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"feature id 64 is not in \[0, d_sae=64\)"):
        model.generate(pixels, feature_overrides={64: 1.0})
    model.feature_dictionary["features"][5]["description"] = ""
    with pytest.raises(ValueError, match="feature 5 has no description"):
        model.generate(pixels, feature_overrides={5: 1.0})
    model.generate(pixels, feature_overrides={5: 0})  # switching off an undescribed feature is allowed
    with pytest.raises(ValueError, match="must be set to a number >= 0"):
        model.generate(pixels, feature_overrides={1: -2})


def test_explain_lists_active_features_with_what_the_report_did_with_them():
    model = tiny_model(seed=3)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tables = model.explain(pixels, output_localization=True)
    out = model.generate(pixels, return_dict_in_generate=True)
    for i, table in enumerate(tables):
        active = int((out.feature_activations[i] > 0).sum())
        assert len(table) == active and [r["activation"] for r in table] == sorted(
            (r["activation"] for r in table), reverse=True)
        written = {f for s in out.sentences[i] for f in s["feature_ids"]}
        assert {r["feature_id"] for r in table if r["written"]} == written
        assert all(r["omitted_reason"] for r in table if not r["written"])
        assert all(r["localization"].shape == (32, 32) and "side" in r for r in table)
        assert all(r["description"] == model.features[r["feature_id"]]["description"] for r in table)
    reused = model.explain(pixels, generated=out)  # the caller's own generate output: the same table
    assert [[{k: v for k, v in r.items() if k not in ("localization", "side")} for r in t] for t in tables] == reused


def test_the_cnn_shortcut_gives_the_maps_of_the_full_graph():
    from transformers import ResNetConfig

    vision = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic").to_dict()
    vision["image_size"] = 32
    model = tiny_model(vision_config=vision, sae_architecture="relu")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = sorted(int(f) for f in (model(pixels).feature_activations > 0).any(0).nonzero().flatten())[:6]
    assert ids
    from localization_saerad import feature_maps, trace

    def maps(shortcut: bool) -> torch.Tensor:
        traced = trace(model.vision_model, model.encode_backbone_output, pixels, model.config.vision_config, shortcut)
        assert (traced.head is not None) == shortcut  # the typed trace says which graph it holds
        return feature_maps(traced, ids, model.config.d_sae)

    fast, full = maps(True), maps(False)
    assert torch.allclose(fast, full, atol=1e-5)
    assert model.localize(pixels, feature_ids=ids, method="gradient").shape == (2, len(ids), 32, 32)
