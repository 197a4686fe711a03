"""Where commands write: one rule for output folders (never delete what saerad did not make) and atomic writes."""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

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
IN_PROGRESS = {"sae": ("checkpoint", "checkpoint.tmp", "checkpoint.old", ".checkpoint.*.old", "events.out.*",
                       "saerad-train", ".tmp*"),
               "backbone": ("checkpoint", "checkpoint.tmp", "checkpoint.old", ".checkpoint.*.old", ".export-*",
                            ".tmp*"),
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


@contextmanager
def locked_output(out: Union[str, os.PathLike]) -> Iterator[Path]:
    """Hold a lock on the output `out` for a job's whole run: a second job on the same folder is refused at once
    (two `train` runs on one `--out` overwrote each other). The lock (`fcntl.flock`, released by the system when a
    job is killed) is a hidden file beside the folder's nearest existing parent, removed when the job ends."""
    target = Path(out).expanduser().resolve()
    beside = next(p for p in target.parents if p.exists())
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:12]
    path = beside / f".{target.name}.{digest}.saerad-lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise OutputConflict(f"--out {out}: another saerad job is writing {target}"
                                 + (f" (process {holder})" if holder else "")
                                 + "; wait for it to finish or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the job before removed the file between our open and lock: lock the new one
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield target
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


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
    """Put the finished folder `new` at `target`; an interruption leaves the previous `target` whole. The previous
    folder is moved aside under a fresh name saerad made (`.NAME.XXXX.old`), never a name a user may hold (a sibling
    `NAME.old` is left alone), and only that folder is then removed."""
    if not target.exists():
        new.rename(target)
        return
    # an empty folder made just now: rename() replaces it atomically, so nothing else can be at this name
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _moved_aside(target: Path, last_written: str) -> list[Path]:
    """The folders `replace_folder` moved `target` aside to that hold `last_written`, newest first, then a `NAME.old`
    holding it (the name earlier versions used for a checkpoint moved aside)."""
    found = [p for p in target.parent.glob(f".{target.name}.*.old") if (p / last_written).is_file()]
    legacy = target.with_name(target.name + ".old")
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return found + ([legacy] if (legacy / last_written).is_file() else [])


def recover_folder(target: Path, last_written: str) -> None:
    """After a kill between `replace_folder`'s two renames: put back the newest whole folder, `target.tmp` if it holds
    `last_written` (the file written last), else the previous one moved aside."""
    if target.exists():
        return
    new = target.with_name(target.name + ".tmp")
    if (new / last_written).exists():
        new.rename(target)
        return
    aside = _moved_aside(target, last_written)
    if aside:
        aside[0].rename(target)
