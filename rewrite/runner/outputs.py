"""What a run leaves in its folder: the edit file (always) and the full edited weights (on request)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from rewrite.core.files import atomic_write
from rewrite.core.request import EditRequest
from rewrite.editfile.artifact import EditArtifact
from rewrite.generators.base import GeneratorAdapter
from rewrite.strategies.base import EditResult

EDIT_FILE = "edit.safetensors"
FULL_WEIGHTS_FILE = "edited_weights.safetensors"


def save_edit(out_dir: str | Path, adapter: GeneratorAdapter, result: EditResult, base_sha256: str,
              strategy: Mapping[str, Any], request: EditRequest, full_weights: bool = False) -> list[Path]:
    """`edit.safetensors` (see `rewrite.editfile.artifact`) and, with `full_weights`, the whole edited state dict.

    `adapter` holds the edited weights at this point; `strategy` is the resolved config, `request` the request
    the edit was made for (recorded whatever it came from: inline config, `edit.file=`, a factory).
    A result with NaN/Inf is refused: only finite numbers become weights.
    """
    bad = result.non_finite()
    if bad:
        raise ValueError(f"refusing to write {EDIT_FILE}: NaN/Inf in {', '.join(bad)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    art = EditArtifact.from_result(result, base_sha256, adapter.name, strategy, request.to_dict())
    paths = [art.save(out / EDIT_FILE)]
    if full_weights:
        meta = {"model": adapter.name, "base_sha256": base_sha256, "changed": ",".join(art.changed)}
        state = {k: v.detach().cpu().contiguous() for k, v in adapter.model.state_dict().items()}
        paths.append(atomic_write(out / FULL_WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata=meta)))
    return paths
