"""Where commands write: one rule for output folders (never delete what saerad did not make) and atomic writes."""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

from .errors import NoAccess, NotAFolder, OutputConflict, UserError

# The file that proves a folder is saerad's own output of a kind: a folder holding it may be replaced or resumed.
MARKERS = {
    "dataset": "saerad_dataset.json",
    "model": "saerad_build.json",
    "embeddings": "manifest.json",
    "sae": "sae_config.json",
    "interpret": "interpret_metrics.json",
    "backbone": "pretrain.json",
    "evaluation": "results.json",
    "demo": "embeddings",
}
# What a job writes before its marker (glob patterns): a folder holding only these is a saerad run interrupted.
# ".tmp*": safetensors' own temporary file, left by a kill inside save_file.
IN_PROGRESS = {"sae": ("checkpoint", "checkpoint.tmp", "checkpoint.old", "events.out.*", "saerad-train", ".tmp*"),
               "backbone": ("checkpoint", "checkpoint.tmp", "checkpoint.old", ".export-*", ".tmp*"),
               "embeddings": ("shard-*.safetensors", "shard-*.safetensors.tmp", ".tmp*"),
               "demo": ("data", "examples")}


def _ours(folder: Path, kind: str) -> bool:
    if (folder / MARKERS[kind]).exists():
        return True
    patterns = IN_PROGRESS.get(kind, ())
    return all(any(fnmatch.fnmatch(p.name, pattern) for pattern in patterns) for p in folder.iterdir())


def output_folder(out: Union[str, os.PathLike], kind: str, overwrite: bool = False) -> Path:
    """`out` resolved, after refusing a folder saerad must not write into: `/`, the home or current folder or one of
    its parents, a file, or a non-empty folder that is not saerad's output of `kind` (unless `overwrite`)."""
    if kind not in MARKERS:
        raise KeyError(kind)
    target = Path(out).expanduser().resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if target == Path(target.anchor) or target == home or target == cwd or target in cwd.parents:
        raise UserError(f"--out {out}: refusing to write into {target} (the root, home or current folder, or one "
                        "above it); name a new folder")
    if target.exists() and not target.is_dir():
        raise NotAFolder(f"--out {out}: {target} is a file, not a folder")
    if target.is_dir() and any(target.iterdir()) and not _ours(target, kind) and not overwrite:
        raise OutputConflict(f"--out {out}: {target} holds files saerad did not write as a {kind} folder (no "
                             f"{MARKERS[kind]}); choose an empty or new folder, or pass --overwrite to replace it")
    _check_writable(out, target)
    return target


def _check_writable(out: Union[str, os.PathLike], target: Path) -> None:
    """Refuse before any work an output that cannot be written: a probe folder is made (and removed) where the job's
    temporary files go, beside the target and (when it exists) inside it."""
    beside = next(p for p in target.parents if p.exists())
    for folder in (beside, target) if target.is_dir() else (beside,):
        try:
            os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".saerad-probe-"))
        except OSError as err:
            raise NoAccess(f"--out {out}: cannot write in {folder} ({err})") from None


def atomic_write(path: Union[str, os.PathLike], data: Union[str, bytes]) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, so `path` is never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save_tensors(tensors: dict, path: Union[str, os.PathLike], metadata: Optional[dict] = None) -> Path:
    """`safetensors.torch.save_file` through a temporary file in the same folder."""
    from safetensors.torch import save_file

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_folder(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target`; an interruption leaves the previous `target` (or `.old`) whole."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(target: Path, last_written: str) -> None:
    """After a kill between `replace_folder`'s two renames: put back the newest whole folder, `target.tmp` if it holds
    `last_written` (the file written last), else `target.old`."""
    if target.exists():
        return
    new, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    if (new / last_written).exists():
        new.rename(target)
    elif old.exists():
        old.rename(target)
