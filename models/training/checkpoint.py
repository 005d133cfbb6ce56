"""Resumable training state without pickle: safetensors for tensors, JSON for everything else.

A state directory holds ``model.safetensors`` (the raw weights), ``ema.safetensors`` (the EMA weights),
``optim.safetensors`` (the optimiser's tensors, flattened) and ``state.json`` (epoch, step, the
optimiser's param groups, the scheduler, the RNG and the run's settings).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from realtime.errors import ConfigError

__all__ = ["save_state", "load_state", "optimizer_tensors", "restore_optimizer"]


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into flat tensors (``"<param>.<name>"``) and JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def save_state(directory: str | Path, model_sd: dict[str, torch.Tensor], ema_sd: dict[str, torch.Tensor] | None,
               opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Write a resumable state; ``state.json`` is written last, so a complete ``state.json`` means a complete state."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_sd.items()}, str(d / "model.safetensors"))
    if ema_sd is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in ema_sd.items()}, str(d / "ema.safetensors"))
    tensors, meta = optimizer_tensors(opt)
    save_file(tensors, str(d / "optim.safetensors"))
    _atomic_json(d / "state.json", {**state, "optimizer": meta})


def load_state(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None,
                                               dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_state` wrote: ``(model_sd, ema_sd or None, optim_tensors, state)``."""
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / "state.json").is_file():
        raise FileNotFoundError(f"no training state to resume in {d} (expected {d / 'state.json'})")
    try:
        state = json.loads((d / "state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{d / 'state.json'}: not valid JSON ({e}); start afresh without --resume") from None
    ema = load_file(str(d / "ema.safetensors")) if (d / "ema.safetensors").is_file() else None
    return load_file(str(d / "model.safetensors")), ema, load_file(str(d / "optim.safetensors")), state
