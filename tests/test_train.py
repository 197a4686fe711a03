import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from synthetic import recovery, sparse_atoms

from modeling_saerad import SAERadModel
from saerad.cli import main
from saerad.sae import TrainConfig, Trainer, TrainingDiverged

from conftest import tiny_config


@pytest.fixture(scope="module")
def atoms():
    return sparse_atoms()


def test_topk_recovers_planted_atoms(atoms, tmp_path):
    x, a, _ = atoms
    trainer = Trainer(TrainConfig(architecture="topk", d_sae=512, k=4, epochs=40, log_every=0), x, tmp_path)
    metrics = trainer.train()
    assert recovery(trainer.sae.W_dec.detach(), a) >= 0.9
    assert metrics["fvu"] < 0.1 and metrics["l0"] == pytest.approx(4.0)


def test_gated_recovers_planted_atoms_and_holds_target_l0(atoms, tmp_path):
    x, a, _ = atoms
    trainer = Trainer(TrainConfig(architecture="gated", d_sae=512, target_l0=8, epochs=40, log_every=0), x, tmp_path)
    metrics = trainer.train()
    assert recovery(trainer.sae.W_dec.detach(), a) >= 0.9
    assert 6 <= metrics["l0"] <= 10 and metrics["target_l0_reached"]
    assert metrics["fvu"] < 0.1  # measured 0.095 (data seeds 0-2); 0.15 with the magnitude path at 1x


def test_fast_magnitude_path_lets_the_gated_sae_hold_its_target_where_the_centred_inputs_are_large(tmp_path):
    # Atoms in R^192 with no common offset. With r_mag and b_mag at 1x the learning rate the magnitudes lag the
    # activations' scale: L0 ~12 for a target of 8, FVU ~0.54.
    x, a, _ = sparse_atoms(n=10000, d=192, atoms=512, k=8)
    runs = {}
    for scale in (1.0, TrainConfig().magnitude_lr_scale):
        config = TrainConfig(architecture="gated", d_sae=1024, target_l0=8, epochs=20, log_every=0,
                             magnitude_lr_scale=scale)
        trainer = Trainer(config, x, tmp_path / str(scale))
        runs[scale] = trainer.train(), recovery(trainer.sae.W_dec.detach(), a)
    slow, _ = runs.pop(1.0)
    (fast, fast_recovery), = runs.values()
    assert not slow["target_l0_reached"] and slow["fvu"] > 0.3
    assert fast["target_l0_reached"] and fast["fvu"] < 0.1 and fast_recovery >= 0.95


@pytest.mark.parametrize("target", [5, 8])
def test_jumprelu_recovers_planted_atoms_and_holds_target_l0(atoms, target, tmp_path):
    x, a, _ = atoms
    trainer = Trainer(TrainConfig(architecture="jumprelu", d_sae=512, target_l0=target, epochs=40, log_every=0), x,
                      tmp_path)
    metrics = trainer.train()
    assert recovery(trainer.sae.W_dec.detach(), a) >= 0.9
    assert metrics["target_l0_reached"] and metrics["fvu"] < 0.1


def _random_embeddings(n=600, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 3 + 1


@pytest.mark.parametrize("architecture", ["gated", "topk", "jumprelu", "relu"])
def test_export_folds_the_input_scale_and_loads_into_the_model(architecture, tmp_path):
    x = _random_embeddings()
    trainer = Trainer(TrainConfig(architecture=architecture, d_sae=64, k=4, epochs=3, batch_size=64, log_every=0),
                      x, tmp_path)
    metrics = trainer.train()
    assert set(("mse", "fvu", "l0", "dead_fraction", "feature_density_histogram")) <= set(metrics)
    config = json.loads((tmp_path / "sae_config.json").read_text())
    assert config["architecture"] == architecture and config["input_scale"] == 1.0 and config["format_version"] == 1
    from safetensors.torch import load_file

    model = SAERadModel(tiny_config(sae_architecture=architecture, d_sae=64, k=4)).eval()
    model.sae.load_state_dict(load_file(str(tmp_path / "sae.safetensors")))
    with torch.no_grad():
        expected = trainer.sae.encode(x * trainer.scale)
        assert torch.allclose(model.sae.encode(x), expected, atol=1e-4, rtol=1e-4)
        recon = model.sae.decode(model.sae.encode(x))
        assert torch.allclose(recon * trainer.scale, trainer.sae.decode(expected), atol=1e-3, rtol=1e-3)
    stats = load_file(str(tmp_path / "feature_stats.safetensors"))
    assert set(stats) == {"frequency", "mean_activation", "max_activation"} and stats["frequency"].shape == (64,)
    assert float(stats["frequency"].sum()) == pytest.approx(metrics["l0"], rel=1e-5)


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    np.save(tmp_path / "x.npy", _random_embeddings().numpy())
    common = ["train", "--embeddings", str(tmp_path / "x.npy"), "--architecture", "gated", "--expansion-factor", "2",
              "--epochs", "4", "--batch-size", "64", "--target-l0", "5", "--log-every", "3", "--gate-lr-scale", "10",
              "--magnitude-lr-scale", "30"]
    assert main([*common, "--out", str(tmp_path / "straight")]) == 0
    recorded = json.loads((tmp_path / "straight" / "sae_config.json").read_text())["train_config"]
    assert recorded["gate_lr_scale"] == 10 and recorded["magnitude_lr_scale"] == 30
    assert main([*common, "--out", str(tmp_path / "resumed"), "--max-steps", "13", "--checkpoint-every", "5"]) == 0
    assert not (tmp_path / "resumed" / "sae.safetensors").exists()
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 13
    assert main([*common, "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    for name in ("sae.safetensors", "feature_stats.safetensors"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes()


def test_rerun_without_resume_and_changed_settings_are_refused(tmp_path, capsys):
    np.save(tmp_path / "x.npy", _random_embeddings().numpy())
    args = ["train", "--embeddings", str(tmp_path / "x.npy"), "--expansion-factor", "2", "--epochs", "1",
            "--batch-size", "64", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert main(args) == 2 and "--resume" in capsys.readouterr().err
    assert main([*args[:-2], "--lr", "0.5", "--out", str(tmp_path / "run"), "--resume"]) == 2
    assert "other settings (lr)" in capsys.readouterr().err


def test_checkpoint_from_before_the_magnitude_scale_resumes_only_with_its_old_meaning(tmp_path, capsys):
    np.save(tmp_path / "x.npy", _random_embeddings().numpy())
    args = ["train", "--embeddings", str(tmp_path / "x.npy"), "--expansion-factor", "2", "--epochs", "2",
            "--batch-size", "64", "--max-steps", "3", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    state = tmp_path / "run" / "checkpoint" / "state.json"
    meta = json.loads(state.read_text())
    del meta["config"]["magnitude_lr_scale"]  # as written by saerad before it had the setting
    state.write_text(json.dumps(meta))
    assert main([*args[:-4], "--out", str(tmp_path / "run"), "--resume"]) == 2
    assert "other settings (magnitude_lr_scale)" in capsys.readouterr().err
    assert main([*args[:-4], "--magnitude-lr-scale", "1", "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert (tmp_path / "run" / "sae.safetensors").exists()


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    x = _random_embeddings()
    trainer = Trainer(TrainConfig(architecture="relu", d_sae=64, epochs=4, batch_size=64, checkpoint_every=2,
                                  max_steps=6, log_every=0), x, tmp_path)
    trainer.train()
    state = (tmp_path / "checkpoint" / "state.safetensors").read_bytes()
    trainer.x[:] = float("nan")  # the data goes bad mid-run
    trainer.cfg.max_steps = None
    with pytest.raises(TrainingDiverged, match="diverged at step 6.*checkpoint.*intact"):
        trainer.train()
    assert (tmp_path / "checkpoint" / "state.safetensors").read_bytes() == state
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 6


def test_non_finite_embeddings_are_refused(tmp_path, capsys):
    x = _random_embeddings().numpy()
    x[3, 2] = np.inf
    np.save(tmp_path / "bad.npy", x)
    assert main(["train", "--embeddings", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o")]) == 2
    assert "NaN or infinite" in capsys.readouterr().err


def test_two_processes_train_data_parallel_to_the_same_quality(atoms, tmp_path):
    x, a, _ = atoms
    np.save(tmp_path / "x.npy", x[:8000].numpy())
    args = ["--embeddings", str(tmp_path / "x.npy"), "--architecture", "topk", "--d-sae", "512", "--k", "4",
            "--epochs", "30", "--batch-size", "256", "--log-every", "0"]
    assert main(["train", *args, "--out", str(tmp_path / "one")]) == 0
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "saerad", "train", *args,
         "--out", str(tmp_path / "two")], capture_output=True, text=True, env={**os.environ}, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "training_metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "training_metrics.json").read_text())
    assert json.loads((tmp_path / "two" / "sae_config.json").read_text())["num_processes"] == 2, run.stderr[-2000:]
    assert two["fvu"] <= one["fvu"] * 1.15 + 0.01 and two["l0"] == pytest.approx(4.0)


def assert_same_training_step(sae, out, reference: torch.Tensor, f: torch.Tensor) -> None:
    """The loss output matches a dense reference loss and its activations f: statistics, value and gradients."""
    assert torch.equal(out.fired, (f > 0).any(0))
    assert float(out.l0) == pytest.approx(float((f > 0).sum(-1).float().mean()))
    assert float(out.total.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    for ours, theirs in zip(torch.autograd.grad(out.total, list(sae.parameters())),
                            torch.autograd.grad(reference, list(sae.parameters()))):
        assert torch.allclose(ours, theirs, atol=1e-5 * float(theirs.abs().max()))


def test_sparse_topk_training_loss_matches_the_dense_formulation():
    from saerad.sae.architectures import TopKSAE

    torch.manual_seed(0)
    sae = TopKSAE(32, 128, k=4)
    sae.initialize(torch.zeros(32), torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x, dead = torch.randn(64, 32), torch.rand(128) < 0.5

    def dense():
        pre = sae.pre(x, sae.b_enc)
        values, indices = pre.topk(4, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        x_hat = sae.decode(f)
        mse = sae.mse(x, x_hat)
        v, i = pre.masked_fill(~dead, float("-inf")).topk(sae.k_aux, dim=-1)
        residual = (x - x_hat).detach()
        aux = (residual - torch.zeros_like(pre).scatter(-1, i, torch.relu(v)) @ sae.W_dec).pow(2).sum(-1).mean()
        return mse + sae.aux_coef * aux / residual.pow(2).sum(-1).mean() * mse.detach(), f

    out = sae.loss(x, 0.0, dead)
    reference, f = dense()
    assert_same_training_step(sae, out, reference, f)


@pytest.mark.parametrize("b_enc", [-2.5, 0.0])  # sparse enough for the sparse path, and dense
def test_relu_training_loss_matches_the_dense_formulation(b_enc):
    from saerad.sae.architectures import SPARSE_DENSITY, ReLUSAE

    torch.manual_seed(0)
    sae = ReLUSAE(32, 256)
    sae.initialize(torch.zeros(32), torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.normal_().add_(b_enc)
        sae.b_dec.normal_()
    x = torch.randn(64, 32)
    f = torch.relu(sae.pre(x, sae.b_enc))
    reference = sae.mse(x, sae.decode(f)) + 0.7 * (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
    assert (float((f > 0).float().mean()) <= SPARSE_DENSITY) == (b_enc < 0)
    out = sae.loss(x, 0.7)
    assert_same_training_step(sae, out, reference, f)


def test_a_target_l0_that_was_not_reached_is_reported(tmp_path, caplog):
    x = _random_embeddings()
    config = TrainConfig(architecture="gated", d_sae=64, target_l0=0.5, epochs=2, batch_size=64, log_every=0)
    with caplog.at_level("WARNING", logger="saerad.sae.trainer"):
        metrics = Trainer(config, x, tmp_path).train()
    assert metrics["target_l0"] == 0.5 and metrics["target_l0_reached"] is False
    assert json.loads((tmp_path / "training_metrics.json").read_text())["target_l0_reached"] is False
    assert f"mean L0 {metrics['l0']:.1f} did not settle within 25% of --target-l0 0.5" in caplog.text


@pytest.mark.parametrize("rows_per_chunk", [None, 5])  # the dense path's elementwise work in one chunk, and in many
@pytest.mark.parametrize("b_gate", [-4.5, 0.0])  # sparse enough for the sparse path, and dense
def test_gated_training_loss_matches_the_written_formulation(b_gate, rows_per_chunk, monkeypatch):
    from saerad.sae import architectures
    from saerad.sae.architectures import SPARSE_DENSITY, GatedSAE

    if rows_per_chunk:
        monkeypatch.setattr(architectures, "_row_chunks", lambda t: rows_per_chunk)

    torch.manual_seed(0)
    sae = GatedSAE(32, 256)
    sae.initialize(torch.zeros(32), torch.Generator().manual_seed(0), decoder_norm=1.0)
    with torch.no_grad():
        sae.b_gate.normal_().add_(b_gate)
        sae.b_mag.normal_()
        sae.r_mag.normal_(std=0.3)
        sae.b_dec.normal_()
    x = torch.randn(64, 32)
    pi_gate = (x - sae.b_dec) @ sae.W_enc + sae.b_gate  # the class docstring's loss, term by term
    pi_mag = (x - sae.b_dec) @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag
    f = (pi_gate > 0) * torch.relu(pi_mag)
    gate = torch.relu(pi_gate)
    reference = (sae.mse(x, f @ sae.W_dec + sae.b_dec) + 0.7 * (gate * sae.W_dec.norm(dim=1)).sum(-1).mean()
                 + (x - (gate @ sae.W_dec.detach() + sae.b_dec.detach())).pow(2).sum(-1).mean())
    assert (float((pi_gate > 0).float().mean()) <= SPARSE_DENSITY) == (b_gate < 0)
    out = sae.loss(x, 0.7)
    assert_same_training_step(sae, out, reference, f)


@pytest.mark.parametrize("setting", ["gate_lr_scale", "magnitude_lr_scale", "lr"])
def test_non_positive_learning_rate_settings_are_refused(setting):
    with pytest.raises(ValueError, match=f"{setting} must be positive; got 0"):
        TrainConfig(**{setting: 0})


def test_fixed_mean_decoder_bias_gives_the_most_common_image_a_feature_of_its_own(tmp_path):
    # 60% "normal" rows near one point, 40% with one of 8 findings added: trained from the geometric median (a normal
    # row) b_dec encodes the normal rows as nothing; fixed at the mean, normality is a direction with its features.
    g = torch.Generator().manual_seed(0)
    d, n = 32, 3000
    normal = torch.randn(d, generator=g) * 0.2
    common = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)  # what the findings share
    atoms = 3 * common + 3 * torch.nn.functional.normalize(torch.randn(8, d, generator=g), dim=1)
    which = torch.randint(0, 8, (n,), generator=g)
    abnormal = torch.rand(n, generator=g) < 0.4
    x = normal + 0.1 * torch.randn(n, d, generator=g) + abnormal[:, None] * atoms[which]
    fired = {}
    for bias in ("median", "mean"):
        config = TrainConfig(architecture="gated", d_sae=64, target_l0=2, epochs=30, batch_size=64, log_every=0,
                             decoder_bias=bias)
        trainer = Trainer(config, x, tmp_path / bias)
        trainer.train()
        with torch.no_grad():
            f = trainer.sae.encode(trainer.x)
        fired[bias] = float((f[~abnormal] > 0).any(1).float().mean())
        if bias == "mean":
            assert torch.allclose(trainer.sae.b_dec, trainer.x.mean(0))
    # measured on data seeds 0-2: median 6%, 37%, 19% of normal rows with a feature; mean 100%, 95%, 100%
    assert fired["median"] < 0.5 and fired["mean"] > 0.9, fired
    with pytest.raises(ValueError, match="decoder_bias must be 'median' or 'mean'"):
        TrainConfig(decoder_bias="zero")
