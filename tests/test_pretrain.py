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


def _tiny(spec: str, out, *extra: str) -> list:
    return ["pretrain", "--dataset", spec, "--out", str(out), "--steps", "4", "--batch-size", "4", "--image-size", "32",
            "--num-workers", "0", *extra]


def test_pretrain_stops_with_a_checkpoint_and_resumes_to_a_plain_backbone(tmp_path, capsys):
    from transformers import AutoModel

    spec = make_paired_folder(tmp_path / "data", n=6)
    out = tmp_path / "bb"
    assert main(_tiny(spec, out, "--max-steps", "2")) == 0
    assert "stopped at step 2 of 4" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint"]  # nothing exported yet
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 2

    assert main(_tiny(spec, out)) == 2  # a fresh run would overwrite it
    assert "pass --resume" in capsys.readouterr().err
    assert main(_tiny(spec, out, "--resume", "--lr", "0.01")) == 2
    assert "other settings (lr)" in capsys.readouterr().err

    assert main(_tiny(spec, out, "--resume")) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "preprocessor_config.json", "pretrain.json"]
    summary = json.loads((out / "pretrain.json").read_text())
    assert summary["resumed_at"] == [2] and summary["final_loss"]["loss"] > 0
    assert "Resumed at step 2" in (out / "README.md").read_text()
    assert AutoModel.from_pretrained(out).config.image_size == 32
    assert main(_tiny(spec, out, "--resume")) == 2  # finished: resuming would silently start over
    assert "nothing to resume" in capsys.readouterr().err


def test_resuming_restores_weights_optimizer_moments_and_masks_exactly(tmp_path):
    spec = make_paired_folder(tmp_path / "data", n=6)
    out = tmp_path / "bb"
    assert main(_tiny(spec, out, "--objective", "vicreg", "--max-steps", "2")) == 0
    first = load_file(str(out / "checkpoint" / "state.safetensors"))
    # resuming with nothing left to do writes the checkpoint back: everything loaded is everything saved
    assert main(_tiny(spec, out, "--objective", "vicreg", "--max-steps", "2", "--resume")) == 0
    again = load_file(str(out / "checkpoint" / "state.safetensors"))
    assert set(again) == set(first) and all(torch.equal(first[k], again[k]) for k in first)
    assert any(k.startswith("optim.") and k.endswith("exp_avg_sq") for k in first) and "mask_generator" in first
    # one more step continues AdamW's count from the checkpoint, not from zero
    assert main(_tiny(spec, out, "--objective", "vicreg", "--max-steps", "3", "--resume")) == 0
    meta = json.loads((out / "checkpoint" / "state.json").read_text())
    assert meta["step"] == 3 and set(meta["adam_steps"].values()) == {3.0}


def test_periodic_checkpoints_leave_no_checkpoint_after_a_complete_run(tmp_path):
    spec = make_paired_folder(tmp_path / "data", n=6)
    assert main(_tiny(spec, tmp_path / "bb", "--checkpoint-every", "2")) == 0
    assert not (tmp_path / "bb" / "checkpoint").exists() and (tmp_path / "bb" / "model.safetensors").exists()


def test_mixed_precision_is_recorded_and_fp16_needs_a_gpu(tmp_path, capsys):
    from accelerate.state import AcceleratorState

    spec = make_paired_folder(tmp_path / "data", n=6)
    if not torch.cuda.is_available():
        assert main(_tiny(spec, tmp_path / "x", "--mixed-precision", "fp16")) == 2
        assert "fp16 needs a CUDA GPU" in capsys.readouterr().err
    AcceleratorState._reset_state(True)  # Accelerate keeps one precision per process; other tests use the default
    try:
        assert main(_tiny(spec, tmp_path / "bb", "--mixed-precision", "bf16")) == 0
    finally:
        AcceleratorState._reset_state(True)
    summary = json.loads((tmp_path / "bb" / "pretrain.json").read_text())
    assert summary["command"].endswith("--mixed-precision bf16") and summary["config"]["mixed_precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in load_file(str(tmp_path / "bb" / "model.safetensors")).values())
