"""`rewrite-edit`: apply, stack, undo and export edit files (`edit.safetensors` of a run) on checkpoints.

    rewrite-edit apply BASE.pt EDIT.safetensors [EDIT2 ...] -o edited.pt   # base + edits, in BASE's layout
    rewrite-edit stack BASE.pt EDIT1 EDIT2 -o my.stack.json                 # an ordered stack (a small manifest)
    rewrite-edit stack my.stack.json EDIT3 -o my.stack.json                 # ... one more on top
    rewrite-edit undo my.stack.json                                         # drop the last edit
    rewrite-edit export my.stack.json -o edited.pt                          # the full checkpoint of a stack
    rewrite-edit show EDIT.safetensors | my.stack.json                      # what a file holds

Each edit records the sha256 of the weights it was made on, and is applied only to exactly those
weights: to its base, or on top of the edits that preceded it when it was made (a run whose
`generator.model.checkpoint` was an exported stack). A stack never stores edited weights; export
rebuilds them from the base, so undo gives back the earlier weights bit for bit. Checkpoints are read
weights-only (a torch file, or safetensors); the state dict may sit at the top level or under a key
(e.g. `g_ema`, `netG_state_dict`), and export writes the same layout with only the edited tensors changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from rewrite.core.checkpoints import load_weights_only
from rewrite.core.files import atomic_write, file_sha256, state_fingerprint
from rewrite.editfile.artifact import EditArtifact, WrongBaseError

STACK_FORMAT = "rewrite-stack/1"


@dataclass
class Checkpoint:
    """A checkpoint file as read (weights only), and where its state dict sits inside it."""

    path: Path
    obj: Any
    key: str | None  # None: the state dict is the whole file

    @property
    def state(self) -> dict[str, Tensor]:
        return self.obj if self.key is None else self.obj[self.key]

    def write(self, out: str | Path, state: dict[str, Tensor]) -> Path:
        """Save `state` in this checkpoint's layout (format and surrounding entries) to `out`, atomically."""
        if (Path(out).suffix == ".safetensors") != (self.path.suffix == ".safetensors"):
            raise ValueError(f"{out}: the export keeps the base's layout, so its name must end like the base's "
                             f"({self.path.name})")
        if self.path.suffix == ".safetensors":
            tensors = {k: v.contiguous() for k, v in state.items()}
            return atomic_write(out, lambda tmp: save_file(tensors, str(tmp)))
        obj = state if self.key is None else {**self.obj, self.key: state}
        return atomic_write(out, lambda tmp: torch.save(obj, tmp))


def _is_state(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def read_checkpoint(path: str | Path, key: str | None = None, want_sha256: str | None = None) -> Checkpoint:
    """Read `path`; with no `key`, the state dict is the file itself, its only dict of tensors, or the one
    whose weights have sha256 `want_sha256` (the base of the first edit)."""
    path = Path(path)
    obj = load_weights_only(path)
    if key is not None:
        if not isinstance(obj, dict) or not _is_state(obj.get(key)):
            raise ValueError(f"{path} has no state dict under key {key!r}")
        return Checkpoint(path, obj, key)
    if _is_state(obj):
        return Checkpoint(path, obj, None)
    keys = [k for k, v in obj.items() if _is_state(v)] if isinstance(obj, dict) else []
    if want_sha256 is not None and len(keys) > 1:
        keys = [k for k in keys if state_fingerprint(obj[k]) == want_sha256] or keys
    if len(keys) != 1:
        found = f"several ({keys}); pick one with --key" if keys else "none"
        raise ValueError(f"{path}: cannot tell which entry is the generator's state dict: {found}")
    return Checkpoint(path, obj, keys[0])


def apply_edits(state: dict[str, Tensor], edits: Sequence[EditArtifact], names: Sequence[str]) -> dict[str, Tensor]:
    """`state` with every edit applied in order (each checked against the weights it is applied to)."""
    state = dict(state)
    for i, (art, name) in enumerate(zip(edits, names, strict=True)):
        try:
            state.update(art.new_values(state))
        except WrongBaseError as e:
            where = "the base" if i == 0 else f"the base + the {i} edit(s) before it"
            raise WrongBaseError(f"{name} does not apply to {where}: {e}") from None
    return state


@dataclass
class Stack:
    """A base checkpoint and an ordered list of edit files, each pinned by the sha256 of its bytes."""

    base: Path
    base_sha256: str
    key: str | None
    edits: list[tuple[Path, str]]

    @classmethod
    def load(cls, path: str | Path) -> Stack:
        """Read a stack file; its paths are relative to the file's folder (absolute ones stay)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"stack file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a stack file (invalid JSON: {e})") from e
        if not isinstance(data, dict) or data.get("format") != STACK_FORMAT:
            raise ValueError(f"{path} is not a stack file (expected format {STACK_FORMAT!r})")
        edits = data.get("edits")
        ok = (isinstance(data.get("base"), str) and isinstance(data.get("base_sha256"), str)
              and isinstance(data.get("key"), (str, type(None))) and isinstance(edits, list)
              and all(isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str)
                      for e in edits))
        if not ok:
            raise ValueError(f"{path}: a stack needs base, base_sha256, key (or null) and edits "
                             "[{path, sha256}, ...]")
        here = path.parent
        return cls(here / data["base"], data["base_sha256"], data["key"],
                   [(here / e["path"], e["sha256"]) for e in edits])

    def save(self, path: str | Path) -> Path:
        """Write the stack with its paths relative to the stack file, so the folder can move as a whole."""
        here = Path(path).resolve().parent

        def rel(p: Path) -> str:
            return os.path.relpath(p.resolve(), here)

        data = {"format": STACK_FORMAT, "base": rel(self.base), "base_sha256": self.base_sha256, "key": self.key,
                "edits": [{"path": rel(p), "sha256": s} for p, s in self.edits]}
        return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))

    def checked_files(self) -> tuple[Checkpoint, list[EditArtifact]]:
        """The base and the edits, refusing any file whose bytes changed since it joined the stack."""
        for p, want in [(self.base, self.base_sha256), *self.edits]:
            if not p.is_file():
                raise FileNotFoundError(f"file of the stack not found: {p}")
            if file_sha256(p) != want:
                raise ValueError(f"{p} changed since it joined the stack (sha256 differs)")
        return read_checkpoint(self.base, self.key), [EditArtifact.load(p) for p, _ in self.edits]

    def weights(self) -> tuple[Checkpoint, dict[str, Tensor]]:
        ckpt, edits = self.checked_files()
        return ckpt, apply_edits(ckpt.state, edits, [str(p) for p, _ in self.edits])


def _start(base_or_stack: Path, key: str | None, first_edit: EditArtifact | None) -> Stack:
    """A stack from a stack file, or a new empty one on a base checkpoint."""
    if base_or_stack.suffix == ".json":
        if key is not None:
            raise ValueError("--key belongs to a base checkpoint; a stack file already names its key")
        return Stack.load(base_or_stack)
    ckpt = read_checkpoint(base_or_stack, key, first_edit.base_sha256 if first_edit else None)
    return Stack(base_or_stack.resolve(), file_sha256(base_or_stack), ckpt.key, [])


def _push(stack: Stack, edit_paths: Sequence[Path]) -> tuple[Stack, Checkpoint, dict[str, Tensor]]:
    """`stack` with the edits added on top, and its weights; refused unless each edit applies to the
    weights below it."""
    for p in edit_paths:
        if not p.is_file():
            raise FileNotFoundError(f"edit file not found: {p}")
    added = Stack(stack.base, stack.base_sha256, stack.key,
                  [*stack.edits, *((p.resolve(), file_sha256(p)) for p in edit_paths)])
    return added, *added.weights()


def _describe(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        s = Stack.load(path)
        return {"stack": str(path), "base": str(s.base), "key": s.key, "edits": [str(p) for p, _ in s.edits]}
    art = EditArtifact.load(path)
    return {"edit": str(path), "kind": art.kind, "layer": art.layer, "changed": art.changed, "model": art.model,
            "base_sha256": art.base_sha256, "strategy": art.strategy, "request": art.request,
            "tensors": {k: list(v.shape) for k, v in art.tensors.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rewrite-edit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("apply", help="a base checkpoint plus edits, written in the base's layout")
    p.add_argument("base", type=Path)
    p.add_argument("edits", type=Path, nargs="+")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--key", default=None, help="entry of the base file that holds the state dict")
    p = sub.add_parser("stack", help="start (from a base) or extend (from a .json stack) an ordered stack")
    p.add_argument("base_or_stack", type=Path)
    p.add_argument("edits", type=Path, nargs="+")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--key", default=None)
    p = sub.add_parser("undo", help="drop the last edit of a stack")
    p.add_argument("stack", type=Path)
    p.add_argument("-o", "--out", type=Path, default=None, help="default: rewrite the stack file")
    p = sub.add_parser("export", help="the full checkpoint of a stack, in its base's layout")
    p.add_argument("stack", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p = sub.add_parser("show", help="describe an edit file or a stack (JSON)")
    p.add_argument("path", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.command == "apply":
            _, ckpt, state = _push(_start(args.base, args.key, EditArtifact.load(args.edits[0])), args.edits)
            print(ckpt.write(args.out, state))
        elif args.command == "stack":
            if args.out.suffix != ".json":
                raise ValueError(f"{args.out}: name a stack file *.json (other commands tell stacks by it)")
            stack, _, _ = _push(_start(args.base_or_stack, args.key, EditArtifact.load(args.edits[0])), args.edits)
            print(stack.save(args.out))
        elif args.command == "undo":
            stack = Stack.load(args.stack)
            if not stack.edits:
                raise ValueError(f"{args.stack} has no edit to undo")
            stack.edits.pop()
            print(stack.save(args.out or args.stack))
        elif args.command == "export":
            ckpt, state = Stack.load(args.stack).weights()
            print(ckpt.write(args.out, state))
        else:
            print(json.dumps(_describe(args.path), indent=2))
    except (ValueError, OSError, KeyError) as e:  # OSError: missing files, folders, permissions, a full disk
        print(f"rewrite-edit: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
