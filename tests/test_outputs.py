"""Output folders: nothing the user made is deleted; killed jobs resume to the files of an uninterrupted run."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from saerad.cli import main
from saerad.embed import load_embeddings
from saerad.outputs import atomic_write, output_folder, replace_folder

from fixtures import make_paired_folder


def _user_folder(path):
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("three years of work")
    return path


def test_data_build_refuses_a_folder_it_did_not_make_and_replaces_its_own(tmp_path, capsys):
    spec = make_paired_folder(tmp_path / "data", n=4)
    mine = _user_folder(tmp_path / "mine")
    assert main(["data", "build", spec, "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "did not write" in err and "--overwrite" in err and str(mine) in err
    assert (mine / "thesis.tex").read_text() == "three years of work"
    built = tmp_path / "built"
    assert main(["data", "build", spec, "--out", str(built)]) == 0
    manifest = json.loads((built / "saerad_dataset.json").read_text())
    assert manifest["splits"] == {"train": 4}
    assert main(["data", "build", spec, "--out", str(built)]) == 0  # its own output: rebuilt in place
    assert main(["data", "build", spec, "--out", str(mine), "--overwrite"]) == 0
    assert not (mine / "thesis.tex").exists() and (mine / "saerad_dataset.json").exists()
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.old"))


def test_model_build_never_deletes_a_user_folder(tmp_path, capsys):
    mine = _user_folder(tmp_path / "model")
    assert main(["build", "--backbone", "x", "--sae", "x", "--dictionary", "x", "--out", str(mine)]) == 2
    assert "did not write as a model folder" in capsys.readouterr().err
    assert (mine / "thesis.tex").exists()


@pytest.mark.parametrize("out", ["..", ".", "/", "~"])
def test_dangerous_out_paths_are_refused_before_any_work(tmp_path, monkeypatch, capsys, out):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (tmp_path / "a" / "keep.txt").write_text("keep")
    monkeypatch.chdir(nested)
    monkeypatch.setenv("HOME", str(tmp_path / "a") if out == "~" else os.environ.get("HOME", "/root"))
    spec = make_paired_folder(tmp_path / "data", n=2)
    for argv in (["data", "build", spec, "--out", out, "--overwrite"], ["demo", "--workdir", out, "--overwrite"]):
        assert main(argv) == 2
        assert "refusing to write into" in capsys.readouterr().err
    assert (tmp_path / "a" / "keep.txt").read_text() == "keep" and nested.is_dir()


def test_every_command_that_writes_a_folder_follows_the_rule(tmp_path, capsys):
    mine = _user_folder(tmp_path / "mine")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
    commands = [
        ["embed", "--backbone", "x", "--dataset", "x", "--out", str(mine)],
        ["train", "--embeddings", str(tmp_path / "x.npy"), "--out", str(mine)],
        ["interpret", "--sae", "x", "--embeddings", "x", "--reports", "x", "--out", str(mine)],
        ["pretrain", "--dataset", "x", "--out", str(mine)],
        ["evaluate", "--dataset", "x", "--predictions", "x", "--out", str(mine)],
        ["demo", "--workdir", str(mine)],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        assert "did not write" in capsys.readouterr().err, argv
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(NotADirectoryError):
        output_folder(file, "sae")


def test_atomic_write_leaves_the_old_file_whole_when_writing_fails(tmp_path, monkeypatch):
    target = atomic_write(tmp_path / "results.json", "old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, "new " * 1000)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_unwritable_output_folder_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import tempfile

    def refused(*args, dir=None, **kwargs):  # what an unwritable folder gives (root ignores chmod, so simulated)
        raise PermissionError(13, "Permission denied", str(dir))

    spec = make_paired_folder(tmp_path / "data", n=2)
    built = tmp_path / "ds"
    assert main(["data", "build", spec, "--out", str(built)]) == 0
    before = {p.name: p.read_bytes() for p in built.rglob("*") if p.is_file()}
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    assert main(["data", "build", spec, "--out", str(built)]) == 2
    assert f"Permission denied: '{tmp_path}'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in built.rglob("*") if p.is_file()} == before


def test_replace_folder_keeps_the_previous_one_until_the_new_is_in_place(tmp_path):
    target, new = tmp_path / "ckpt", tmp_path / "ckpt.tmp"
    target.mkdir()
    (target / "state.json").write_text("1")
    new.mkdir()
    (new / "state.json").write_text("2")
    replace_folder(new, target)
    assert (target / "state.json").read_text() == "2" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # the previous one removed, nothing else left


@pytest.mark.parametrize("kind", ["dataset", "model"])
def test_a_sibling_folder_named_like_a_backup_survives_a_rebuild(tmp_path, backbone_dir, kind):
    """`runs/model.old` and `dsout.old` are the user's: replacing `--out` moved the old output there and then
    deleted that name, the user's folder included."""
    if kind == "dataset":
        spec = make_paired_folder(tmp_path / "data", n=2)
        out, argv = tmp_path / "dsout", ["data", "build", spec]
    else:
        from fixtures import run_pipeline

        run_pipeline(tmp_path, backbone_dir)
        out = tmp_path / "runs" / "model"
        argv = ["build", "--backbone", str(backbone_dir), "--sae", str(tmp_path / "sae"), "--dictionary",
                str(tmp_path / "interp" / "feature_dictionary.json")]
    for name in (".old", ".tmp", ".old.old"):
        _user_folder(out.with_name(out.name + name))
    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--out", str(out)]) == 0  # replaces its own output: the previous one goes aside, then away
    for name in (".old", ".tmp", ".old.old"):
        assert (out.with_name(out.name + name) / "thesis.tex").read_text() == "three years of work"
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")) == []


def test_a_second_job_on_the_same_out_exits_2_while_the_first_runs(tmp_path, capsys):
    from saerad.outputs import locked_output

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
    run = tmp_path / "run"
    with locked_output(run):  # the first job, as another process holds it (flock is per open file)
        assert main(_train_args(tmp_path / "x.npy", run)) == 2
        err = capsys.readouterr().err
        assert "another saerad job is writing" in err and str(run) in err and str(os.getpid()) in err
        assert not run.exists()
        for argv in (["data", "build", "x", "--out", str(run)], ["evaluate", "--dataset", "x", "--predictions", "x",
                                                                  "--out", str(run)]):
            assert main(argv) == 2 and "another saerad job" in capsys.readouterr().err
    assert main(_train_args(tmp_path / "x.npy", run, "--epochs", "1")) == 0  # released: the job runs
    assert not [p for p in tmp_path.iterdir() if "lock" in p.name]  # and leaves no lock file behind


def test_the_lock_is_held_across_processes_and_released_by_a_kill(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from saerad.outputs import locked_output\n"
                               f"with locked_output({str(out)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from saerad.outputs import locked_output

        with pytest.raises(FileExistsError, match=f"process {holder.pid}"):
            with locked_output(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with locked_output(out):  # the killed job's lock went with it
        pass


# Killed jobs ----------------------------------------------------------------------------------------------------

def _train_args(x, out, *extra):
    return ["train", "--embeddings", str(x), "--architecture", "gated", "--expansion-factor", "2", "--epochs", "4",
            "--batch-size", "64", "--target-l0", "5", "--log-every", "0", "--gate-lr-scale", "10", "--out", str(out),
            *extra]


def test_train_killed_between_the_checkpoint_renames_resumes_from_the_new_checkpoint(tmp_path):
    np.save(tmp_path / "x.npy", (torch.randn(600, 32, generator=torch.Generator().manual_seed(0)) * 3).numpy())
    assert main(_train_args(tmp_path / "x.npy", tmp_path / "straight")) == 0
    run = tmp_path / "run"
    assert main(_train_args(tmp_path / "x.npy", run, "--max-steps", "10", "--checkpoint-every", "5")) == 0
    # the state of a kill after `checkpoint -> checkpoint.old`, before `checkpoint.tmp -> checkpoint`
    shutil.copytree(run / "checkpoint", run / "checkpoint.tmp")
    (run / "checkpoint").rename(run / "checkpoint.old")
    meta = json.loads((run / "checkpoint.old" / "state.json").read_text())
    (run / "checkpoint.old" / "state.json").write_text(json.dumps({**meta, "step": 5}))
    assert main(_train_args(tmp_path / "x.npy", run, "--resume")) == 0
    assert (run / "sae.safetensors").read_bytes() == (tmp_path / "straight" / "sae.safetensors").read_bytes()
    # the same kill, with the previous checkpoint moved aside under the name saerad now gives it
    run2 = tmp_path / "run2"
    assert main(_train_args(tmp_path / "x.npy", run2, "--max-steps", "10", "--checkpoint-every", "5")) == 0
    shutil.copytree(run2 / "checkpoint", run2 / "checkpoint.tmp")
    (run2 / "checkpoint.tmp" / "state.json").unlink()  # the new one incomplete: the previous one is put back
    (run2 / "checkpoint").rename(run2 / ".checkpoint.k3j2x.old")
    assert main(_train_args(tmp_path / "x.npy", run2, "--resume")) == 0
    assert (run2 / "sae.safetensors").read_bytes() == (tmp_path / "straight" / "sae.safetensors").read_bytes()


def test_train_resume_with_other_embeddings_is_refused(tmp_path, capsys):
    for name, seed in (("a.npy", 0), ("b.npy", 1)):
        np.save(tmp_path / name, np.random.default_rng(seed).normal(size=(600, 32)).astype(np.float32))
    run = tmp_path / "run"
    assert main(_train_args(tmp_path / "a.npy", run, "--max-steps", "5")) == 0
    assert main(_train_args(tmp_path / "b.npy", run, "--resume")) == 2
    assert "other embeddings" in capsys.readouterr().err


def test_damaged_checkpoint_is_a_clear_error(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(600, 32)).astype(np.float32))
    run = tmp_path / "run"
    assert main(_train_args(tmp_path / "x.npy", run, "--max-steps", "5")) == 0
    state = run / "checkpoint" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    assert main(_train_args(tmp_path / "x.npy", run, "--resume")) == 2
    assert "checkpoint is damaged" in capsys.readouterr().err


def _kill_when(argv, ready, env, delay):
    """Start `saerad ARGV`, SIGKILL it `delay` s after `ready()` holds (or when it ends by itself)."""
    proc = subprocess.Popen([sys.executable, "-m", "saerad", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while proc.poll() is None and not ready() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode


@pytest.mark.parametrize("seed", [0, 1])
def test_train_sigkilled_at_a_random_point_resumes_to_identical_files(tmp_path, seed):
    np.save(tmp_path / "x.npy", (torch.randn(2000, 32, generator=torch.Generator().manual_seed(0)) * 3).numpy())
    args = lambda out, *extra: _train_args(tmp_path / "x.npy", out, "--epochs", "30", *extra)  # noqa: E731
    assert main(args(tmp_path / "straight")) == 0
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    code = _kill_when(args(run, "--checkpoint-every", "3"), lambda: (run / "checkpoint").exists(), env,
                      random.Random(seed).uniform(0.0, 1.5))
    assert code in (-signal.SIGKILL, 0)
    for path in run.rglob("*"):  # nothing half-written under a final name
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(str(path))
    resume = ["--resume"] if any(run.glob("checkpoint*")) else []
    assert main(args(run, "--checkpoint-every", "3", *resume)) == 0
    for name in ("sae.safetensors", "feature_stats.safetensors"):
        assert (run / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_embed_sigkilled_resumes_to_identical_shards_and_damaged_shards_are_caught(backbone_dir, tmp_path):
    spec = make_paired_folder(tmp_path / "data", n=64)
    common = ["embed", "--backbone", str(backbone_dir), "--dataset", spec, "--shard-size", "4", "--num-workers", "0",
              "--batch-size", "1"]
    assert main([*common, "--out", str(tmp_path / "straight")]) == 0
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    _kill_when([*common, "--out", str(run)], lambda: (run / "shard-00001.safetensors").exists(), env, 0.0)
    assert not (run / "manifest.json").exists()
    shards = sorted(run.glob("shard-*.safetensors"))
    shards[0].write_bytes(shards[0].read_bytes()[:50])  # a shard truncated under its final name is embedded again
    assert main([*common, "--out", str(run)]) == 0
    for path in sorted((tmp_path / "straight").iterdir()):
        assert (run / path.name).read_bytes() == path.read_bytes(), path.name
    shard = run / "shard-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # one flipped bit in the tensor data
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00002.safetensors: checksum does not match"):
        load_embeddings(run)
    shard.write_bytes(bytes(data[:40]))
    with pytest.raises(ValueError, match="shard-00002.safetensors"):
        load_embeddings(run, verify=False)


def test_pretrain_sigkilled_after_a_checkpoint_resumes_to_a_whole_backbone(tmp_path):
    from transformers import AutoModel

    spec = make_paired_folder(tmp_path / "data", n=6)
    out = tmp_path / "bb"
    args = ["pretrain", "--dataset", spec, "--out", str(out), "--steps", "40", "--batch-size", "4",
            "--image-size", "32", "--num-workers", "0", "--checkpoint-every", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    code = _kill_when(args, lambda: (out / "checkpoint" / "state.json").exists(), env, 0.1)
    assert code == -signal.SIGKILL and not (out / "pretrain.json").exists()
    assert {p.name for p in out.iterdir()} <= {"checkpoint", "checkpoint.tmp", "checkpoint.old", ".tmp"} | {
        p.name for p in out.glob(".tmp*")} | {p.name for p in out.glob(".checkpoint.*.old")}
    assert main([*args[:6], "8", *args[7:], "--resume"]) == 2  # other --steps: refused, not restarted
    assert main([*args, "--resume"]) == 0
    summary = json.loads((out / "pretrain.json").read_text())
    assert summary["resumed_at"] and summary["resumed_at"][0] % 2 == 0  # from the last checkpoint, not step 0
    assert not any(out.glob("checkpoint*")) and AutoModel.from_pretrained(out).config.image_size == 32
