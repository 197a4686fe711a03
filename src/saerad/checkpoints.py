"""Resumable training state, shared by `saerad train` and `saerad pretrain`: weights and Adam moments in one
safetensors file, the rest in JSON, replaced as a whole folder so a kill never leaves half a checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError, first_line
from .outputs import atomic_write, recover_folder, replace_folder


def training_state(model: torch.nn.Module, optimizer) -> tuple[dict, dict]:
    """A model's weights (`model.NAME`) and its Adam/AdamW moments (`optim.NAME.exp_avg[_sq]`) as CPU tensors, with
    each parameter's Adam step count."""
    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    names = {id(p): name for name, p in model.named_parameters()}
    adam_steps = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state:
                name = names[id(p)]
                tensors[f"optim.{name}.exp_avg"] = state["exp_avg"].cpu()
                tensors[f"optim.{name}.exp_avg_sq"] = state["exp_avg_sq"].cpu()
                adam_steps[name] = float(state["step"])
    return tensors, adam_steps


def load_training_state(model: torch.nn.Module, optimizer, tensors: dict, adam_steps: dict) -> None:
    """Put back what `training_state` took, the moments on each parameter's device."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for name, p in model.named_parameters():
        if f"optim.{name}.exp_avg" in tensors:
            optimizer.state[p] = {"step": torch.tensor(adam_steps[name]),
                                  "exp_avg": tensors[f"optim.{name}.exp_avg"].to(p.device),
                                  "exp_avg_sq": tensors[f"optim.{name}.exp_avg_sq"].to(p.device)}


def write_checkpoint(folder: Path, tensors: dict, meta: dict) -> None:
    """Replace `folder` with `state.safetensors` + `state.json`; an interruption leaves the previous one whole
    (`read_checkpoint` puts it back after a kill between the renames)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
    atomic_write(tmp / "state.json", json.dumps(meta, indent=1))  # written last: its presence means complete
    replace_folder(tmp, folder)


def read_checkpoint(folder: Path) -> Optional[tuple[dict, dict]]:
    """(state.json, tensors) of a checkpoint folder, recovered after a kill mid-replace; None when there is none."""
    recover_folder(folder, "state.json")
    if not (folder / "state.json").exists():
        return None
    try:
        meta = json.loads((folder / "state.json").read_text())
        tensors = load_file(str(folder / "state.safetensors"))
    except (OSError, ValueError, SafetensorError) as err:
        raise UserError(f"{folder}: the checkpoint is damaged ({first_line(err)}); "
                        "delete it to start again") from None
    return meta, tensors


def check_settings(folder: Path, saved: dict, current: dict, free: tuple = ()) -> None:
    """Refuse to resume a checkpoint made with other settings than `current` (keys in `free` may differ)."""
    diff = sorted(k for k in current if k not in free and saved.get(k) != current[k])
    if diff:
        raise UserError(f"{folder}: checkpoint was made with other settings ({', '.join(diff)}); "
                        "rerun with the same flags or a new --out")
