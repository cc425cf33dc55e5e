"""What a run leaves in its folder: edited weights and the low-rank delta (safetensors), config."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from rewrite.generators.base import GeneratorAdapter
from rewrite.strategies.base import EditResult


def save_edit(out_dir: str | Path, adapter: GeneratorAdapter, result: EditResult, base_sha256: str,
              strategy: str) -> list[Path]:
    """`edited_weights.safetensors` (full state dict) and, where the strategy has one, `delta.safetensors`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": adapter.name, "base_sha256": base_sha256, "strategy": strategy,
            "changed": ",".join(sorted(result.weights))}
    state = {k: v.detach().cpu().contiguous() for k, v in adapter.model.state_dict().items()}
    paths = [out / "edited_weights.safetensors"]
    save_file(state, str(paths[0]), metadata=meta)
    if result.delta is not None:
        d = result.delta
        paths.append(out / "delta.safetensors")
        save_file({k: v.detach().cpu() for k, v in d.state_dict().items()}, str(paths[1]),
                  metadata={**meta, "weight_name": d.weight_name, "in_axis": str(d.in_axis)})
    return paths
