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

Nothing is lost: `-o` may not name any file the command reads (the base, an edit file, a member of the stack
being read, the stack file itself except when `stack`/`undo` update it in place); apply/export write only a
checkpoint name (never a `.json` or an existing edit file), stack/undo only a `.json` stack file; a checkpoint
is written to a temporary file, read back and compared (sha256 of its tensors) before it replaces anything;
only finite weights are written. A refusal is one line `rewrite-edit: error: ...` on stderr, exit status 2.
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
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from rewrite.core.checkpoints import load_weights_only
from rewrite.core.files import atomic_write, file_sha256, state_fingerprint
from rewrite.editfile.artifact import FORMAT, EditArtifact, WrongBaseError

STACK_FORMAT = "rewrite-stack/1"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt", ".safetensors")


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
        """Save `state` in this checkpoint's layout (format and surrounding entries) to `out`, atomically and
        verified: the temporary file is read back and its tensors' sha256 compared with `state`'s before it
        replaces `out`, so a faulty write never takes the place of a good file."""
        want = state_fingerprint(state)
        if self.path.suffix == ".safetensors":
            tensors = {k: v.contiguous() for k, v in state.items()}

            def dump(tmp: Path) -> None:
                save_file(tensors, str(tmp))
        else:
            obj = state if self.key is None else {**self.obj, self.key: state}

            def dump(tmp: Path) -> None:
                torch.save(obj, tmp)

        def dump_and_verify(tmp: Path) -> None:
            dump(tmp)
            got = state_fingerprint(read_checkpoint(tmp, self.key).state)
            if got != want:
                raise OSError(f"{out}: the file written does not read back as the weights meant for it (sha256 "
                              f"{got[:16]}…, expected {want[:16]}…); nothing was replaced")

        return atomic_write(out, dump_and_verify)


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


def apply_edits(state: dict[str, Tensor], edits: Sequence[EditArtifact], names: Sequence[str],
                base_name: str) -> dict[str, Tensor]:
    """`state` with every edit applied in order (each checked against the weights it is applied to).

    Refuses a result with NaN/Inf anywhere (only finite numbers become weights), naming where it came from:
    the base `base_name`, or the last edit that changed the tensor (finite factors can still overflow)."""
    state = dict(state)
    source = dict.fromkeys(state, f"the base {base_name}")
    for i, (art, name) in enumerate(zip(edits, names, strict=True)):
        try:
            new = art.new_values(state)
        except WrongBaseError as e:
            where = "the base" if i == 0 else f"the base + the {i} edit(s) before it"
            raise WrongBaseError(f"{name} does not apply to {where}: {e}") from None
        state.update(new)
        source.update(dict.fromkeys(new, f"applying the edit {name}"))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{bad[0]} would be NaN/Inf (from {source[bad[0]]}); only finite numbers become "
                         "weights, nothing was written")
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
        return ckpt, apply_edits(ckpt.state, edits, [str(p) for p, _ in self.edits], str(self.base))

    def members(self, path: Path) -> list[tuple[str, Path]]:
        """(role, file) of the files this stack (read from `path`) is built of: `-o` must not name them."""
        return [(f"the base checkpoint of stack {path}", self.base),
                *((f"an edit file of stack {path}", p) for p, _ in self.edits)]


def _start(base_or_stack: Path, key: str | None, first_edit: Path) -> Stack:
    """A stack from a stack file, or a new empty one on a base checkpoint (where the base file holds several
    state dicts, the one `first_edit` was made on)."""
    if base_or_stack.suffix == ".json":
        if key is not None:
            raise ValueError("--key belongs to a base checkpoint; a stack file already names its key")
        return Stack.load(base_or_stack)
    ckpt = read_checkpoint(base_or_stack, key, (_edit_metadata(first_edit) or {}).get("base_sha256"))
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


def _below(base_or_stack: Path) -> tuple[list[tuple[str, Path]], Path]:
    """(role, file) of everything under the edits of apply/stack (a base checkpoint, or a stack file and its
    members), and the base checkpoint whose format an output keeps."""
    if base_or_stack.suffix != ".json":
        return [("the base checkpoint", base_or_stack)], base_or_stack
    stack = Stack.load(base_or_stack)
    return [("the stack file being read", base_or_stack), *stack.members(base_or_stack)], stack.base


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file: the same resolved path, or (links) the same file on disk."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: nothing there to overwrite
        return False


def _check_output(command: str, out: Path, inputs: Sequence[tuple[str, Path]], base: Path | None) -> None:
    """Refuse an `-o` that names a file the command reads (writing it would destroy an input), a folder, or a
    name of the wrong kind: a checkpoint in `base`'s format for apply/export, a stack file (`base` None)."""
    for role, path in inputs:
        if _same_file(out, path):
            raise ValueError(f"-o {out} would overwrite {role} ({path}); refusing, choose another output name")
    if out.is_dir():
        raise IsADirectoryError(f"cannot write {out}: it is a folder")
    if base is None:
        _check_stack_out(out)
    else:
        _check_checkpoint_out(command, out, base)


def _edit_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of `path` if it is an edit file, else None: a cheap look that reads no tensors (the
    checked read is `EditArtifact.load`)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    return meta if meta.get("format") == FORMAT else None


def _check_checkpoint_out(command: str, out: Path, base: Path) -> None:
    """apply/export write a checkpoint in the base's format: refuse other names and existing edit files."""
    if out.suffix == ".json" or (out.suffix not in CHECKPOINT_SUFFIXES and out.suffix != base.suffix):
        raise ValueError(f"-o {out}: {command} writes a checkpoint, so name it like the base ({base.name}): "
                         f"{', '.join('*' + x for x in CHECKPOINT_SUFFIXES)} (*.json is for stack files)")
    if out.is_file() and _edit_metadata(out) is not None:
        raise ValueError(f"-o {out} is an edit file; {command} would replace it with a checkpoint, "
                         "choose another output name")
    if (out.suffix == ".safetensors") != (base.suffix == ".safetensors"):
        raise ValueError(f"-o {out}: the export keeps the base's layout, so its name must end like the base's "
                         f"({base.name})")


def _check_stack_out(out: Path) -> None:
    """stack/undo write a stack file: a `.json` name, and never over a JSON file that is not a stack."""
    if out.suffix != ".json":
        raise ValueError(f"{out}: name a stack file *.json (other commands tell stacks by it)")
    if out.is_file():
        try:
            data = json.loads(out.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or data.get("format") != STACK_FORMAT:
            raise ValueError(f"-o {out} exists and is not a stack file; refusing to overwrite it, "
                             "choose another output name")


def _describe(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        s = Stack.load(path)
        return {"stack": str(path), "base": str(s.base), "key": s.key, "edits": [str(p) for p, _ in s.edits]}
    art = EditArtifact.load(path)
    return {"edit": str(path), "kind": art.kind, "layer": art.layer, "changed": art.changed, "model": art.model,
            "base_sha256": art.base_sha256, "strategy": art.strategy, "request": art.request,
            "tensors": {k: list(v.shape) for k, v in art.tensors.items()}}


def _parser() -> argparse.ArgumentParser:
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
    return ap


def _run(args: argparse.Namespace) -> None:
    """One command; every check of `-o` comes before anything is read in full or written."""
    if args.command == "apply":
        below, base = _below(args.base)
        _check_output("apply", args.out, [*below, *(("an edit file being applied", p) for p in args.edits)], base)
        _, ckpt, state = _push(_start(args.base, args.key, args.edits[0]), args.edits)
        print(ckpt.write(args.out, state))
    elif args.command == "stack":
        below, _ = _below(args.base_or_stack)
        if args.base_or_stack.suffix == ".json":
            below = below[1:]  # the stack file being read: `stack` may update it in place
        _check_output("stack", args.out, [*below, *(("an edit file being added", p) for p in args.edits)], None)
        stack, _, _ = _push(_start(args.base_or_stack, args.key, args.edits[0]), args.edits)
        print(stack.save(args.out))
    elif args.command == "undo":
        stack = Stack.load(args.stack)
        out = args.out or args.stack  # rewriting the stack file itself is the default
        _check_output("undo", out, stack.members(args.stack), None)
        if not stack.edits:
            raise ValueError(f"{args.stack} has no edit to undo")
        stack.edits.pop()
        print(stack.save(out))
    elif args.command == "export":
        stack = Stack.load(args.stack)
        _check_output("export", args.out, [("the stack file being read", args.stack), *stack.members(args.stack)],
                      stack.base)
        ckpt, state = stack.weights()
        print(ckpt.write(args.out, state))
    else:
        print(json.dumps(_describe(args.path), indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    """Run `rewrite-edit`; a refused input is one line on stderr and exit status 2, as argparse does for its
    usage errors (no traceback: these are the user's files, not a bug)."""
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except (ValueError, OSError) as e:  # OSError: missing files, folders, permissions, a full disk
        message = " ".join(str(e).split())  # one line, even when a library's message has several
        print(f"rewrite-edit: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
