"""One capture-with-stop helper: hook a module for one forward pass, keep what a function picks from
its inputs and output, and optionally end the pass there (in the spirit of baukit's `Trace(stop=True)`).

    with Trace(layer, lambda args, kwargs, out: {"keys": args[0]}, before=True, stop=True) as t:
        model(z)
    keys = t["keys"]

Everything kept is detached and cloned inside the hook: a later in-place op (e.g. `ReLU(inplace=True)`)
would otherwise overwrite it before the pass ends. The hook is removed on exit, whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from torch import Tensor, nn

Pick = Callable[[tuple[Any, ...], dict[str, Any], Any], dict[str, Tensor]]
"""(positional args, keyword args, output — None before the module runs) -> tensors to keep."""


class StopForward(Exception):
    """Raised by a stopping trace's hook to end a forward pass once it has what it came for."""


class Trace:
    """Keep `pick(args, kwargs, out)` from `module`'s next call; `before=True` hooks its input (a pre-hook,
    so the module itself does not run), `stop=True` ends the forward pass right after."""

    def __init__(self, module: nn.Module, pick: Pick, *, before: bool = False, stop: bool = False,
                 name: str = "the edited layer") -> None:
        self.module, self.pick, self.before, self.stop, self.name = module, pick, before, stop, name
        self.kept: dict[str, Tensor] = {}

    def _keep(self, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        self.kept.update({k: t.detach().clone() for k, t in self.pick(args, kwargs, out).items()})
        if self.stop:
            raise StopForward

    def __enter__(self) -> Trace:
        if self.before:
            self._handle = self.module.register_forward_pre_hook(
                lambda _m, args, kwargs: self._keep(args, kwargs, None), with_kwargs=True)
        else:
            self._handle = self.module.register_forward_hook(
                lambda _m, args, kwargs, out: self._keep(args, kwargs, out), with_kwargs=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> bool:
        self._handle.remove()
        return self.stop and kind is StopForward

    def __getitem__(self, key: str) -> Tensor:
        if key not in self.kept:
            raise RuntimeError(f"the generator's forward pass never reached {self.name}")
        return self.kept[key]
