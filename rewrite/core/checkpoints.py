"""Safe checkpoint loading: weights only, clear errors on corrupt or mismatched files."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


def load_weights_only(path: str | Path) -> object:
    """What a `.safetensors` file or a torch file holds, read without running pickled code (the one reader
    of checkpoints: generators, the toy segmenter and `rewrite-edit` all come through here)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt archive, truncated file, pickled code…
        raise ValueError(f"cannot read checkpoint {path} as weights ({type(e).__name__}: {e})") from e


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """A state dict from a `.safetensors` file or a weights-only torch file (optionally under `key`)."""
    obj = load_weights_only(path)
    if key is not None and isinstance(obj, dict) and key in obj:
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        hint = f" (looked for key {key!r})" if key else ""
        raise ValueError(f"checkpoint {path} does not hold a state dict of tensors{hint}")
    return obj  # type: ignore[return-value]


def load_state_dict_file(model: nn.Module, path: str | Path, key: str | None = None) -> None:
    """Load strictly; a mismatch names the missing, unexpected and mis-shaped tensors."""
    state = read_state_dict(path, key)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        def short(xs: list[str]) -> str:
            return ", ".join(xs[:5]) + (f" … (+{len(xs) - 5})" if len(xs) > 5 else "")
        parts = [f"missing [{short(missing)}]" if missing else "",
                 f"unexpected [{short(unexpected)}]" if unexpected else "",
                 f"wrong shape [{short(shapes)}]" if shapes else ""]
        raise ValueError(f"checkpoint {path} does not match the model: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)
