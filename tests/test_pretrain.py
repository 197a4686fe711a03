import json
import re

import torch
from safetensors.torch import load_file

from saerad.cli import main

from fixtures import make_paired_folder


def test_pretrain_from_scratch_writes_a_loadable_backbone_and_card(tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    spec = make_paired_folder(tmp_path / "data", n=6)
    assert main(["pretrain", "--dataset", spec, "--out", str(tmp_path / "bb"), "--steps", "3", "--batch-size", "4",
                 "--image-size", "32", "--num-workers", "0"]) == 0
    model = AutoModel.from_pretrained(tmp_path / "bb")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "bb")
    assert model.config.hidden_size == 192 and processor.crop_size == {"height": 32, "width": 32}
    summary = json.loads((tmp_path / "bb" / "pretrain.json").read_text())
    assert summary["final_loss"]["loss"] > 0 and summary["command"].startswith("saerad pretrain --dataset")
    assert "knows only phantom radiographs" in (tmp_path / "bb" / "README.md").read_text()


def test_lora_adaptation_merges_into_plain_backbone_weights(backbone_dir, tmp_path):
    spec = make_paired_folder(tmp_path / "data", n=6)
    assert main(["pretrain", "--dataset", spec, "--init", str(backbone_dir), "--lora", "--out", str(tmp_path / "ad"),
                 "--steps", "3", "--batch-size", "4", "--lr", "0.05", "--num-workers", "0"]) == 0
    before = load_file(str(backbone_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "ad" / "model.safetensors"))
    assert set(after) == set(before)  # merged: no lora_A / lora_B tensors left
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # only the attention projections LoRA adapted change (saved under their checkpoint names query/key/value/dense)
    assert changed and all(re.search(r"attention\.(attention\.(query|key|value)|output\.dense)\.weight$", k)
                           for k in changed)


def test_lora_needs_an_init(tmp_path, capsys):
    assert main(["pretrain", "--dataset", "iu-phantom", "--lora", "--out", str(tmp_path / "x")]) == 2
    assert "--init" in capsys.readouterr().err


def test_vicreg_objective_trains_the_cls_token_and_records_its_command(tmp_path):
    from transformers import AutoModel

    spec = make_paired_folder(tmp_path / "data", n=6)
    assert main(["pretrain", "--dataset", spec, "--out", str(tmp_path / "bb"), "--objective", "vicreg",
                 "--projector", "0", "--steps", "3", "--batch-size", "4", "--image-size", "32",
                 "--num-workers", "0"]) == 0
    summary = json.loads((tmp_path / "bb" / "pretrain.json").read_text())
    assert summary["config"]["objective"] == "vicreg" and "VICReg" in summary["objective"]
    assert set(summary["final_loss"]) == {"loss", "mim", "vicreg"} and summary["final_loss"]["vicreg"] > 0
    assert summary["config"]["projector"] == 0
    assert "--objective vicreg --projector 0 " in summary["command"]
    assert AutoModel.from_pretrained(tmp_path / "bb").config.image_size == 32


def test_vicreg_needs_a_batch_to_measure_variance(tmp_path, capsys):
    assert main(["pretrain", "--dataset", "iu-phantom", "--objective", "vicreg", "--batch-size", "1",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--batch-size of at least 2" in capsys.readouterr().err


def test_vicreg_loss_rewards_agreeing_spread_out_views_and_penalises_collapse():
    from saerad.pretrain import _vicreg

    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, 16, generator=g)
    agreeing = _vicreg(z, z)
    collapsed = _vicreg(torch.zeros(256, 16), torch.zeros(256, 16))
    disagreeing = _vicreg(z, torch.randn(256, 16, generator=g))
    assert agreeing < 0.05  # unit variance, nearly uncorrelated, identical views
    assert abs(float(collapsed) - 0.99) < 1e-3  # every dimension's std is 0: the variance hinge is 1 - 0.01
    assert disagreeing > 1.5  # the invariance term is the mean squared distance, about 2


def test_strong_augmentation_keeps_laterality():
    import random

    import numpy as np
    from PIL import Image

    from saerad.pretrain import _strong_augment

    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[20:44, 44:60] = 255  # a bright region on the image's right
    image, rng = Image.fromarray(pixels, mode="L"), random.Random(0)
    for _ in range(20):
        view = np.asarray(_strong_augment(image, rng), dtype=np.float32)
        assert view.shape == (64, 64)
        assert view[:, 32:].mean() > view[:, :32].mean() + 30  # background shifts with exposure and noise
