"""The report-supervised pretraining objectives: targets read from reports, losses with known values, the test split
never read, early stopping on validation."""

import json
import math

import pytest
import torch

from saerad.cli import main

from fixtures import image_file

FINDINGS = ["Small left pleural effusion. No pneumothorax.", "The heart is enlarged. Possible right consolidation.",
            "The lungs are clear.", "Bilateral pleural effusions.", "No acute disease.", "Left pneumothorax."]


def _three_splits(root, n_test: int = 3) -> str:
    """An imagefolder spec with train and validation images and a test split whose images are empty files: any read
    of a test image fails."""
    lines = []
    for k, text in enumerate(FINDINGS * 2):
        split = "train" if k < 8 else "validation"
        image_file(root / f"{k}.png", k)
        lines.append({"file_name": f"{k}.png", "findings": text, "id": f"r{k}", "split": split})
    for k in range(n_test):
        (root / f"t{k}.png").write_bytes(b"")
        lines.append({"file_name": f"t{k}.png", "findings": "Test report.", "id": f"t{k}", "split": "test"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return f"imagefolder:{root}"


def _args(spec: str, out, *extra: str) -> list:
    return ["pretrain", "--dataset", spec, "--out", str(out), "--steps", "4", "--batch-size", "4", "--image-size",
            "32", "--num-workers", "0", *extra]


def test_report_targets_read_each_observation_status_and_side():
    from saerad.pretrain import IGNORE, SIDES, STATUSES, _observed, report_targets

    names = _observed()
    status, side = report_targets("Small left pleural effusion. Possible right lower lobe consolidation. "
                                  "No pneumothorax.")
    got = {names[i]: STATUSES[s] for i, s in enumerate(status) if s}
    assert got == {"Pleural Effusion": "positive", "Consolidation": "uncertain"}  # the negated one is absent
    assert SIDES[side[names.index("Pleural Effusion")]] == "left"
    assert SIDES[side[names.index("Consolidation")]] == "right"
    assert side[names.index("Pneumothorax")] == IGNORE
    status, side = report_targets("Left and right pleural effusions. Lungs are hyperexpanded.")
    assert SIDES[side[names.index("Pleural Effusion")]] == "bilateral"
    assert STATUSES[status[names.index("Hyperinflation")]] == "positive"  # the labeler's extra observations too
    status, side = report_targets("The lungs are clear.")
    assert {names[i] for i, s in enumerate(status) if s} == {"No Finding"} and set(side) == {IGNORE}


def _model(objective: str):
    from transformers import Dinov2Config, Dinov2Model

    from saerad.pretrain import MaskedImageModel, PretrainConfig

    config = PretrainConfig(objective=objective, image_size=32, mim_weight=0.0)
    vision = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=16, image_size=32)
    torch.manual_seed(0)
    return MaskedImageModel(Dinov2Model(vision), config)


def _zero(*modules) -> None:
    for module in modules:
        torch.nn.init.zeros_(module.weight)
        torch.nn.init.zeros_(module.bias)


def test_labels_loss_is_the_cross_entropy_of_status_and_stated_side():
    from saerad.pretrain import IGNORE, _observed, report_targets

    model = _model("labels")
    _zero(model.status_head, model.side_head)  # uniform predictions: each cross-entropy is ln 3
    read = [report_targets(t) for t in FINDINGS[:4]]
    targets = {"status": torch.tensor([r[0] for r in read]), "side": torch.tensor([r[1] for r in read])}
    pixels, generator = torch.randn(4, 3, 32, 32), torch.Generator().manual_seed(0)
    losses = model(pixels, generator, targets)
    assert set(losses) == {"loss", "status", "side"}
    assert math.isclose(losses["status"].item(), len(_observed()) * math.log(3), rel_tol=1e-6)  # summed
    assert math.isclose(losses["side"].item(), math.log(3), rel_tol=1e-6)
    no_side = {"status": targets["status"], "side": torch.full_like(targets["side"], IGNORE)}
    assert model(pixels, generator, no_side)["side"].item() == 0.0  # no report states a side: no side term

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):  # the heads and backbone fit one batch
        loss = model(pixels, generator, targets)["loss"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def test_contrastive_loss_is_infonce_over_distinct_reports():
    model = _model("contrastive")
    _zero(model.image_head)  # every image matches every report equally well: InfoNCE is ln(candidates)
    reports = ["Left effusion.", "Left effusion.", "Cardiomegaly.", "Normal chest."]
    from saerad.pretrain import TEXT_BUCKETS, report_tokens

    bags = [report_tokens(t, TEXT_BUCKETS) for t in reports]
    targets = {"tokens": torch.tensor([t for b in bags for t in b]),
               "offsets": torch.tensor([0] + [len(b) for b in bags[:-1]]).cumsum(0),
               "report": torch.tensor([0, 0, 1, 2])}
    losses = model(torch.randn(4, 3, 32, 32), torch.Generator(), targets)
    # the two images of one report are not each other's negatives: 3 candidates for them, 4 for the others
    assert math.isclose(losses["infonce"].item(), (2 * math.log(3) + 2 * math.log(4)) / 4, rel_tol=1e-6)
    assert report_tokens("Left  EFFUSION", 97) == report_tokens("left effusion.", 97)


def test_pretraining_never_reads_the_test_split(tmp_path, monkeypatch):
    from saerad.data import adapters
    from saerad.pretrain import pretrain_split

    spec = _three_splits(tmp_path / "data")
    asked = []
    real = adapters.load_split
    monkeypatch.setattr(adapters, "load_split", lambda s, split, **kw: asked.append(split) or real(s, split, **kw))
    for objective in ("labels", "contrastive"):
        assert main(_args(spec, tmp_path / objective, "--objective", objective, "--eval-every", "2")) == 0
    assert set(asked) == {"train", "validation"}  # and no empty test image was ever decoded
    with pytest.raises(ValueError, match="test split is kept for evaluation"):
        pretrain_split(spec, "test")


def test_early_stopping_exports_the_weights_at_the_lowest_validation_loss(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel

    spec = _three_splits(tmp_path / "data")
    out = tmp_path / "bb"
    assert main(_args(spec, out, "--objective", "labels", "--eval-every", "1", "--mim-weight", "0.5",
                      "--lr", "0.05")) == 0
    summary = json.loads((out / "pretrain.json").read_text())
    losses = [v["loss"] for v in summary["validation"]]
    assert [v["step"] for v in summary["validation"]] == [1, 2, 3, 4]
    assert summary["exported_step"] == 1 + losses.index(min(losses))
    assert set(summary["final_loss"]) == {"loss", "status", "side", "mim"}
    assert summary["command"] == ("saerad " + " ".join(_args(spec, out, "--objective", "labels", "--eval-every", "1",
                                                             "--mim-weight", "0.5", "--lr", "0.05")))
    card = (out / "README.md").read_text()
    assert "report-supervised" in card and f"weights at step {summary['exported_step']}" in card
    # the exported weights are the ones evaluated at that step: a rerun stopped there gives the same bytes
    if summary["exported_step"] < 4:
        again = tmp_path / "again"
        assert main(_args(spec, again, "--objective", "labels", "--eval-every", "1", "--mim-weight", "0.5",
                          "--lr", "0.05", "--max-steps", str(summary["exported_step"]))) == 0
        state = load_file(str(again / "checkpoint" / "state.safetensors"))
        exported = AutoModel.from_pretrained(out).state_dict()
        assert exported and all(torch.equal(state[f"best.{k}"], v) for k, v in exported.items())


def test_report_objectives_refuse_what_they_cannot_use(tmp_path, capsys):
    assert main(["pretrain", "--dataset", "iu-phantom", "--objective", "thumbnail", "--eval-every", "10",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--eval-every needs a report-supervised --objective" in capsys.readouterr().err
    assert main(["pretrain", "--dataset", "iu-phantom", "--objective", "contrastive", "--batch-size", "1",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--batch-size of at least 2" in capsys.readouterr().err


def test_a_resnet_backbone_learns_from_reports_and_embeds_through_saerad(tmp_path, capsys):
    from transformers import AutoConfig, AutoImageProcessor

    from saerad.embed import embed, load_embeddings

    spec = _three_splits(tmp_path / "data")
    out = tmp_path / "rn"
    assert main(_args(spec, out, "--architecture", "resnet", "--hidden-size", "32", "--objective", "labels",
                      "--mim-weight", "0")) == 0
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "resnet" and config.hidden_sizes[-1] == 32 and config.image_size == 32
    assert AutoImageProcessor.from_pretrained(out).crop_size == {"height": 32, "width": 32}
    embed(str(out), spec, "train", str(tmp_path / "emb"), num_workers=0)
    x, ids = load_embeddings(tmp_path / "emb")
    assert x.shape == (8, 32) and len(set(ids)) == 8 and x.std(0).sum() > 0
    assert main(_args(spec, tmp_path / "x", "--architecture", "resnet", "--objective", "labels")) == 2
    assert "--mim-weight 0" in capsys.readouterr().err  # a CNN has no patch tokens to mask


def test_the_committed_demo_backbone_loads_embeds_and_tells_findings_apart():
    from transformers import AutoImageProcessor, AutoModel

    from modeling_saerad import pool_backbone_output
    from saerad.data.phantom import render
    from saerad.demo import BACKBONE
    from saerad.evaluation.fresh import fresh_seed

    made = json.loads((BACKBONE / "pretrain.json").read_text())
    assert made["config"]["objective"] == "labels" and made["dataset"] == "iu-phantom"
    model, processor = AutoModel.from_pretrained(BACKBONE).eval(), AutoImageProcessor.from_pretrained(BACKBONE)
    cases = {"normal": [], "cardiomegaly": [{"label": "cardiomegaly"}], "pacemaker": [{"label": "pacemaker"}],
             "left effusion": [{"label": "pleural_effusion", "laterality": "left"}]}
    x = {}
    for name, findings in cases.items():  # patients no split or pretraining stream has drawn
        images = [render(findings, seed=fresh_seed(f"test:{name}", i), size=256) for i in range(8)]
        with torch.no_grad():
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            x[name] = pool_backbone_output(model(pixel_values=pixels), "cls", model.config)
    assert x["normal"].shape == (8, 192)
    # leave-one-out nearest centroid: each finding's phantoms lie nearer their own mean than the normal ones' mean
    for name in ("cardiomegaly", "pacemaker", "left effusion"):
        right = 0
        for group, other in ((x[name], x["normal"]), (x["normal"], x[name])):
            for i in range(8):
                rest = torch.cat([group[:i], group[i + 1:]]).mean(0)
                right += int((group[i] - rest).norm() < (group[i] - other.mean(0)).norm())
        assert right >= 14, (name, right)
