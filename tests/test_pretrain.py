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
