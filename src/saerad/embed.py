"""Frozen backbone -> embedding cache: safetensors shards of pooled embeddings plus `manifest.json`.

Shard boundaries depend only on the shard size, so a run split over N processes (`accelerate launch`), or
interrupted and resumed, writes the same files as one uninterrupted process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from . import __version__
from .errors import MissingInput, UserError, first_line, loading
from .outputs import atomic_save_tensors, atomic_write
from .resources import resolve_backbone

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backbone_fingerprint(backbone: str, model=None) -> dict:
    """Hub revision when loaded from the hub, else a hash of the local weight files."""
    revision = getattr(getattr(model, "config", None), "_commit_hash", None)
    digest, folder = None, resolve_backbone(backbone)
    if os.path.isdir(folder):
        digest = hashlib.sha256()
        for path in sorted(Path(folder).glob("*.safetensors")):
            digest.update(_sha256(path).encode())
        digest = digest.hexdigest()
    return {"backbone": backbone, "backbone_revision": revision, "backbone_sha256": digest}


def check_same_backbone(recorded: dict, backbone: str, model, source: str) -> None:
    """Refuse `backbone` when it is not the one `recorded` names (an embedding manifest, or the `sae_config.json` that
    copied it): by the weights' sha256 for local folders, the hub revision, else the hub id. Nothing is recorded for
    embeddings from a plain array, and then nothing is checked."""
    if not recorded.get("backbone"):
        return
    now = backbone_fingerprint(backbone, model)
    if not recorded.get("backbone_sha256") and os.path.isdir(resolve_backbone(recorded["backbone"])):
        recorded = {**recorded, "backbone_sha256": backbone_fingerprint(recorded["backbone"])["backbone_sha256"]}
    key = next((k for k in ("backbone_sha256", "backbone_revision") if recorded.get(k) and now[k]), None)
    local = os.path.isdir(resolve_backbone(backbone)) or os.path.isdir(resolve_backbone(recorded["backbone"]))
    same = recorded[key] == now[key] if key else (local or recorded["backbone"] == backbone)
    if not same:
        what = f"{key.split('_')[1]} {str(recorded[key])[:12]} there, {str(now[key])[:12]} here" if key else "name"
        raise UserError(f"--backbone {backbone}: not the backbone {source} was trained on ({recorded['backbone']}, "
                        f"{recorded.get('pooling') or 'cls'} pooling; {what}); build with that backbone")


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


class _Rows(torch.utils.data.Dataset):
    """Rows of a `datasets.Dataset` slice, decoded in DataLoader workers."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        from .data.images import to_grayscale

        image = self.rows[i]["image"]
        if image is None:
            raise UserError(f"row {self.rows[i]['id']} has no image")
        return to_grayscale(image)


def load_backbone(name_or_path: str) -> tuple:
    """A transformers vision backbone (safetensors only) and its image processor, from a folder, a hub id or a
    bundled backbone's `saerad:NAME`; a failure is one `UserError`."""
    from transformers import AutoImageProcessor, AutoModel

    source = resolve_backbone(name_or_path)
    with loading(name_or_path, "the backbone"):
        return AutoModel.from_pretrained(source, use_safetensors=True), AutoImageProcessor.from_pretrained(source)


def embed(backbone: str, dataset: str, split: str, out: str, pooling: str = "cls", dtype: str = "float32",
          batch_size: int = 32, shard_size: int = 2048, num_workers: int = 2, limit: Optional[int] = None,
          max_shards: Optional[int] = None) -> Path:
    """Embed one split of a dataset with a frozen backbone into `out` (resumable; data-parallel under Accelerate)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from configuration_saerad import POOLINGS

    from .data.adapters import load_split

    if pooling not in POOLINGS:
        raise UserError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {sorted(DTYPES)}; got {dtype!r}")
    acc = Accelerator(cpu=not torch.cuda.is_available())
    rows = load_split(dataset, split)
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    ids = [str(i) for i in rows["id"]]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    model, processor = load_backbone(backbone)
    model = model.eval().to(acc.device)
    settings = {
        "format_version": FORMAT_VERSION, **backbone_fingerprint(backbone, model), "pooling": pooling,
        "dtype": dtype, "dataset": dataset, "split": split, "n": len(ids), "shard_size": shard_size,
        "processor": processor.to_dict(), "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    manifest_path = folder / MANIFEST
    if manifest_path.exists():
        manifest = read_manifest(folder)
        if manifest.get("settings_key") == key and manifest.get("complete"):
            if acc.is_main_process:
                logger.info("%s is complete and up to date; nothing to do", folder)
            return folder
        differ = _differences(manifest, settings)
        raise UserError(f"{folder} holds an embedding cache made with other settings ({differ}); choose another --out")
    n_shards = max(1, math.ceil(len(ids) / shard_size))
    done = lambda index: _shard_done(folder / _shard_name(index), key)  # noqa: E731
    todo = [i for i in range(n_shards) if i % acc.num_processes == acc.process_index and not done(i)]
    if max_shards is not None:
        todo = todo[:max_shards]
    remaining = sum(min(shard_size, len(ids) - i * shard_size) for i in todo)
    bar = tqdm(total=remaining, desc=f"embedding {split}", unit="image", disable=not acc.is_local_main_process)
    for index in todo:
        start, end = index * shard_size, min(len(ids), (index + 1) * shard_size)
        loader = torch.utils.data.DataLoader(
            _Rows(rows.select(range(start, end))), batch_size=batch_size, num_workers=num_workers,
            collate_fn=lambda images: processor(images=images, return_tensors="pt")["pixel_values"])
        vectors = _pool(model, loader, pooling, acc.device, bar)
        atomic_save_tensors({"embeddings": vectors.to(DTYPES[dtype])}, folder / _shard_name(index),
                            metadata={"saerad": json.dumps({"settings_key": key, "rows": [start, end]})})  # one key
    bar.close()
    acc.wait_for_everyone()
    if acc.is_main_process and all(done(i) for i in range(n_shards)):
        _write_manifest(folder, {**settings, "settings_key": key}, ids, n_shards)
    acc.wait_for_everyone()
    return folder


def _shard_done(path: Path, key: str) -> bool:
    """Whether a shard exists whole and was made with these settings."""
    if not path.exists():
        return False
    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {}).get("saerad", "{}")).get("settings_key") == key
    except Exception:  # a damaged shard (SafetensorError, bad metadata JSON) is embedded again
        return False


@torch.no_grad()
def _pool(model, loader, pooling: str, device, bar) -> torch.Tensor:
    """The pooled embedding of every image the loader yields, in order, as float32 on the CPU."""
    from modeling_saerad import pool_backbone_output

    chunks = []
    for pixels in loader:
        outputs = model(pixel_values=pixels.to(device))
        chunks.append(pool_backbone_output(outputs, pooling, model.config).float().cpu())
        bar.update(len(pixels))
    return torch.cat(chunks)


def _write_manifest(folder: Path, settings: dict, ids: list, n_shards: int) -> None:
    """The manifest, written last: it lists every shard with its rows and checksum, and marks the cache complete."""
    size = settings["shard_size"]
    shards = [{"file": _shard_name(i), "rows": [i * size, min(len(ids), (i + 1) * size)],
               "sha256": _sha256(folder / _shard_name(i))} for i in range(n_shards)]
    with safe_open(str(folder / _shard_name(0)), "pt") as f:
        d = f.get_slice("embeddings").get_shape()[1]
    manifest = {**settings, "d": d, "ids": ids, "shards": shards, "complete": True, "saerad_version": __version__}
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1))


def _differences(saved: dict, settings: dict) -> str:
    """The settings a cache's manifest disagrees on: the values there and now for plain ones (paths, pooling, dtype),
    the name alone for hashes and the processor."""
    current = json.loads(json.dumps(settings, default=str))
    parts = []
    for name in sorted(k for k in current if saved.get(k) != current[k]):
        there, now = saved.get(name), current[name]
        plain = not name.endswith("sha256") and all(v is None or isinstance(v, (str, int, float)) for v in (there, now))
        parts.append(f"{name} {there!r} there, {now!r} now" if plain else name)
    return "; ".join(parts)


def read_manifest(path: Union[str, Path]) -> Optional[dict]:
    """The manifest of an embedding cache folder (its shape checked: shards listed once each, covering the ids'
    rows in order, `complete` a bool), or None for a plain array file."""
    from .files import read_json

    manifest = Path(path) / MANIFEST
    if not manifest.exists():
        return None
    data = read_json(manifest, "embedding manifest")
    shards, ids = data.get("shards"), data.get("ids")
    if not isinstance(data.get("complete", False), bool):
        raise UserError(f"{manifest}: 'complete' must be true or false; got {data['complete']!r}")
    if not isinstance(shards, list) or not shards or not isinstance(ids, list):
        raise UserError(f"{manifest}: expected 'shards' (a non-empty list) and 'ids' (a list); run `saerad embed`")
    end = 0
    for k, shard in enumerate(shards):
        file, rows = (shard.get("file"), shard.get("rows")) if isinstance(shard, dict) else (None, None)
        plain = isinstance(file, str) and file == Path(file).name and not file.startswith(".")
        if not plain or not isinstance(rows, list) or len(rows) != 2 or rows[0] != end or not (
                isinstance(rows[1], int) and not isinstance(rows[1], bool) and rows[1] > rows[0]):
            raise UserError(f"{manifest}: shard {k} ({file!r}, rows {rows!r}) is not the next file in order: each "
                            f"shard names a file in the folder and the rows after the last (from {end})")
        end = rows[1]
    if len({shard["file"] for shard in shards}) != len(shards):
        raise UserError(f"{manifest}: a shard is listed twice")
    if end != len(ids) or not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids):
        raise UserError(f"{manifest}: {len(ids)} ids for {end} rows of shards; one string id per row expected")
    return data


def check_rows(tensor: torch.Tensor, source: Union[str, Path]) -> torch.Tensor:
    """`tensor` (integers as float32) after refusing what is no embedding matrix: not 2-D, complex, bool, empty."""
    if tensor.dim() != 2:
        raise UserError(f"{source}: expected a 2-D (n, d) array; got shape {tuple(tensor.shape)}")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise UserError(f"{source}: dtype {tensor.dtype} is not a real number type; embeddings are floats")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise UserError(f"{source}: no embeddings (shape {tuple(tensor.shape)})")
    return tensor if tensor.is_floating_point() else tensor.float()


def _load_npy(path: Path) -> torch.Tensor:
    """A `.npy` array as a tensor: never unpickled; an `.npz` archive, text, object, structured, string or complex
    data refused in one line; big-endian and other float widths converted."""
    import pickle

    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        why = "pickled objects, or not a .npy file at all; saerad never unpickles" if "pickle" in str(err) else (
            first_line(err))
        raise UserError(f"{path}: not a readable .npy array ({why})") from None
    if not isinstance(array, np.ndarray):  # np.load opens an .npz archive whatever its name
        getattr(array, "close", lambda: None)()
        raise UserError(f"{path}: an .npz archive, not a .npy array; save one array with numpy.save")
    if array.dtype.kind not in "fiu" or array.dtype.names:
        raise UserError(f"{path}: dtype {array.dtype} is not a real number type; embeddings are floats")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _read_tensors(file: Path) -> dict:
    """`load_file`, with a damaged or truncated file refused in one line naming it."""
    from safetensors import SafetensorError

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{file}: not a readable safetensors file ({first_line(err)})") from None


def load_embeddings(path: Union[str, Path], verify: bool = True) -> tuple[torch.Tensor, list[str]]:
    """`(n, d)` embeddings and their ids from a cache folder (each shard checked against the manifest's sha256
    unless `verify` is off), a `.npy` file or a one-tensor `.safetensors` file."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        if manifest is None or not manifest.get("complete"):
            raise UserError(f"{path}: not a complete embedding cache (no complete {MANIFEST}); run `saerad embed`")
        parts = []
        for shard in manifest["shards"]:
            file = path / shard["file"]
            if not file.is_file():
                raise MissingInput(f"{file}: shard listed in the manifest is missing; run `saerad embed` again")
            if verify and _sha256(file) != shard.get("sha256"):
                raise UserError(f"{file}: checksum does not match the manifest (the shard was changed or damaged); "
                                "delete it and run `saerad embed` again")
            tensors = _read_tensors(file)
            if "embeddings" not in tensors:
                raise UserError(f"{file}: no 'embeddings' tensor; not a shard `saerad embed` wrote")
            part = check_rows(tensors["embeddings"], file)
            start, end = shard["rows"]
            if len(part) != end - start or (parts and part.shape[1] != parts[0].shape[1]):
                raise UserError(f"{file}: {tuple(part.shape)} rows x dims, but the manifest lists rows {start}-{end}"
                                + (f" of {parts[0].shape[1]} dims" if parts else ""))
            parts.append(part)
        return torch.cat(parts), [str(i) for i in manifest["ids"]]
    if not path.exists():
        raise MissingInput(f"{path}: no such file or folder")
    if path.suffix == ".npy" and path.is_file():
        tensor = _load_npy(path)
    elif path.suffix == ".safetensors" and path.is_file():
        tensors = _read_tensors(path)
        if len(tensors) != 1:
            raise UserError(f"{path}: expected one tensor, found {sorted(tensors)}")
        tensor = next(iter(tensors.values()))
    else:
        raise UserError(f"{path}: expected an embedding cache folder, a .npy or a .safetensors file")
    tensor = check_rows(tensor, path)
    return tensor, [str(i) for i in range(len(tensor))]
