import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModel

from saerad.embed import embed as run_embed
from saerad.embed import load_embeddings, read_manifest

from fixtures import make_paired_folder


def embed(backbone, spec, out, **kw):
    return run_embed(str(backbone), spec, "train", str(out), shard_size=4, num_workers=0, **kw)


def test_cache_has_shards_manifest_and_matches_the_backbone(backbone_dir, tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    spec = make_paired_folder(tmp_path / "data", n=10)
    out = embed(backbone_dir, spec, tmp_path / "emb")
    x, ids = load_embeddings(out, verify=True)
    assert x.shape == (10, 32) and ids == [f"r{k}" for k in range(10)]
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["pooling"] == "cls" and manifest["n"] == 10 and manifest["d"] == 32
    assert [s["rows"] for s in manifest["shards"]] == [[0, 4], [4, 8], [8, 10]]
    assert manifest["backbone_sha256"] and manifest["processor"]["crop_size"] == {"height": 32, "width": 32}
    from saerad.data.adapters import load_split
    from saerad.data.images import to_grayscale

    model, processor = AutoModel.from_pretrained(backbone_dir).eval(), AutoImageProcessor.from_pretrained(backbone_dir)
    image = to_grayscale(load_split(spec, "train")[3]["image"])
    with torch.no_grad():
        direct = model(pixel_values=processor(images=[image], return_tensors="pt")["pixel_values"])
    assert torch.allclose(x[3], direct.last_hidden_state[0, 0], atol=1e-5)


def test_pooling_and_float16(backbone_dir, tmp_path):
    spec = make_paired_folder(tmp_path / "data", n=5)
    x, _ = load_embeddings(embed(backbone_dir, spec, tmp_path / "a", pooling="cls_mean", dtype="float16"))
    assert x.shape == (5, 64) and x.dtype == torch.float16


def test_max_pooling_is_each_channels_maximum_over_the_patch_tokens(backbone_dir, tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    from saerad.data.adapters import load_split
    from saerad.data.images import to_grayscale

    spec = make_paired_folder(tmp_path / "data", n=3)
    out = embed(backbone_dir, spec, tmp_path / "max", pooling="max")
    x, _ = load_embeddings(out)
    model, processor = AutoModel.from_pretrained(backbone_dir).eval(), AutoImageProcessor.from_pretrained(backbone_dir)
    pixels = processor(images=[to_grayscale(r["image"]) for r in load_split(spec, "train")], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**pixels).last_hidden_state
    assert read_manifest(out)["pooling"] == "max"
    assert torch.allclose(x, hidden[:, 1:].max(dim=1).values, atol=1e-5)
    assert not torch.allclose(x, hidden[:, 0], atol=1e-3)


def test_unknown_pooling_is_refused_naming_the_choices(backbone_dir, tmp_path):
    with pytest.raises(ValueError, match="cls, mean, cls_mean, max"):
        embed(backbone_dir, make_paired_folder(tmp_path / "data", n=2), tmp_path / "x", pooling="gem")


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(backbone_dir, tmp_path):
    spec = make_paired_folder(tmp_path / "data", n=10)
    full = embed(backbone_dir, spec, tmp_path / "full")
    part = tmp_path / "part"
    embed(backbone_dir, spec, part, max_shards=2)  # "interrupted" after two shards
    assert read_manifest(part) is None and len(list(part.glob("shard-*"))) == 2
    first = (part / "shard-00000.safetensors").stat().st_mtime_ns
    embed(backbone_dir, spec, part)
    assert (part / "shard-00000.safetensors").stat().st_mtime_ns == first  # complete shards were kept
    for name in ("shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors", "manifest.json"):
        assert (part / name).read_bytes() == (full / name).read_bytes()


def test_finished_cache_is_not_redone_and_other_settings_are_refused(backbone_dir, tmp_path):
    spec = make_paired_folder(tmp_path / "data", n=6)
    out = embed(backbone_dir, spec, tmp_path / "emb")
    stamp = (out / "manifest.json").stat().st_mtime_ns
    embed(backbone_dir, spec, out)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"other settings \(pooling 'cls' there, 'mean' now\); choose another --out"):
        embed(backbone_dir, spec, out, pooling="mean")
    other = tmp_path / "other-backbone"
    shutil.copytree(backbone_dir, other)
    model = AutoModel.from_pretrained(other)
    torch.nn.init.normal_(model.embeddings.cls_token)
    model.save_pretrained(other)
    with pytest.raises(ValueError, match=r"other settings \(backbone '\S+/backbone' there, '\S+/other-backbone' now; "
                                         r"backbone_sha256\)"):
        embed(other, spec, out)


def test_two_processes_write_the_same_cache(backbone_dir, tmp_path):
    spec = make_paired_folder(tmp_path / "data", n=10)
    single = embed(backbone_dir, spec, tmp_path / "one")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "saerad", "embed", "--backbone",
         str(backbone_dir), "--dataset", spec, "--split", "train", "--out", str(tmp_path / "two"),
         "--shard-size", "4", "--num-workers", "0"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    for path in single.iterdir():
        assert (tmp_path / "two" / path.name).read_bytes() == path.read_bytes(), path.name


def test_load_embeddings_from_arrays_and_bad_inputs(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "x.npy", array)
    save_file({"anything": torch.from_numpy(array)}, str(tmp_path / "x.safetensors"))
    for name in ("x.npy", "x.safetensors"):
        x, ids = load_embeddings(tmp_path / name)
        assert torch.equal(x, torch.from_numpy(array)) and ids == ["0", "1", "2", "3"]
    np.save(tmp_path / "bad.npy", np.zeros(3))
    with pytest.raises(ValueError, match="2-D"):
        load_embeddings(tmp_path / "bad.npy")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not a complete embedding cache"):
        load_embeddings(tmp_path / "folder")
    with pytest.raises(FileNotFoundError):
        load_embeddings(tmp_path / "missing.npy")


def test_checksum_mismatch_is_detected(backbone_dir, tmp_path):
    out = embed(backbone_dir, make_paired_folder(tmp_path / "data", n=5), tmp_path / "emb")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="checksum"):
        load_embeddings(out, verify=True)


def test_two_process_embedding_really_splits_the_shards(backbone_dir, tmp_path):
    spec = make_paired_folder(tmp_path / "data", n=10)
    code = (
        "import sys; from accelerate import Accelerator; from saerad.embed import embed\n"
        "embed(sys.argv[1], sys.argv[2], 'train', sys.argv[3], shard_size=4, num_workers=0, max_shards=1)\n"
        "print('rank', Accelerator().process_index, 'of', Accelerator().num_processes)\n"
    )
    script = tmp_path / "one_shard_each.py"
    script.write_text(code)
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(backbone_dir),
         spec, str(tmp_path / "emb")], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "of 2" in run.stdout
    # one shard per process: shards 0 (rank 0) and 1 (rank 1), shard 2 still to do
    assert sorted(p.name for p in (tmp_path / "emb").glob("shard-*")) == ["shard-00000.safetensors",
                                                                       "shard-00001.safetensors"]
