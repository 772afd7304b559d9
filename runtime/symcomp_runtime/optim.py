"""Training on the quotient: any torch optimizer, its updates made horizontal.

:class:`QuotientOptimizer` is a ``torch.optim.Optimizer`` that wraps an optimizer of a generated
``Model`` (a package ``symcomp compile`` wrote). Each ``step`` lets the inner optimizer compute
its update, then replaces it by its horizontal part at the point before the step. It projects
the *update*, not the gradient: the gradient of an invariant loss is already horizontal, but
Adam's per-coordinate scaling, momentum and weight decay are not, so their update has a vertical
part that moves the parameters along the orbits without changing the function. Decoupled weight
decay (AdamW) is part of the update and is projected with it, so it shrinks only what the
function sees.

It shares the inner optimizer's ``param_groups``, ``state`` and ``defaults``, so LR schedulers
(``torch.optim.lr_scheduler``), ``add_param_group``, ``zero_grad``, gradient clipping and
checkpoints (``state_dict`` / ``load_state_dict``) work as with the inner optimizer; closures are
passed through. The inner optimizer is an instance, or an optimizer class built here on
``params`` (the model's parameters by default, or a list of param groups) with ``**defaults``.

Projections (``projection=``):

- ``"joint"`` (the default): the package's ``project_horizontal``, every group's vertical part
  removed jointly, down to ``tol`` of the update's norm (by default 1e-12 for float64
  parameters, 1e-6 for lower precisions; see ``symcomp_runtime.quotient``);
- ``"heads"``: only the per-head gauges' vertical part (A1, A3: every GL(k) pair the package's
  ``geometry`` module finds), in closed form, one small Sylvester solve per head, batched. It is
  exact for those groups, which share no parameter with each other; the others' are kept.

Parameters the inner optimizer does not hold keep their values: the projection is exactly
horizontal when the optimizer holds every parameter the groups move.

The projection is timed: when it costs more than ``warn_fraction`` of the training step (the time
from one ``step`` call to the next; the first time, the inner optimizer's step), a
``RuntimeWarning`` says so, once. ``clock`` (``time.perf_counter`` by default) is injectable.

``recanonicalize_every=k`` brings the model back to the chart point of its orbit every ``k``
steps (the package's ``recanonicalize``). That moves the parameters along the orbit, so the inner
optimizer's state (Adam's moments) no longer matches the coordinates; the wrapper resets it.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .packages import package_module

PROJECTIONS = ("joint", "heads")


class QuotientOptimizer(torch.optim.Optimizer):
    """``optimizer``'s steps on ``model``, projected onto the horizontal space."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | type[torch.optim.Optimizer],
        params: Iterable[Any] | None = None,
        *,
        projection: str = "joint",
        recanonicalize_every: int = 0,
        tol: float | None = None,
        warn_fraction: float = 0.25,
        clock: Callable[[], float] = time.perf_counter,
        **defaults: Any,
    ):
        if projection not in PROJECTIONS:
            accepted = ", ".join(PROJECTIONS)
            raise ValueError(f"unknown projection {projection!r}; accepted: {accepted}")
        self._quotient = package_module(model, "quotient")
        self._geometry = package_module(model, "geometry")
        if isinstance(optimizer, type):
            optimizer = optimizer(model.parameters() if params is None else params, **defaults)
        elif params is not None or defaults:
            raise TypeError("params and optimizer settings go with an optimizer class, not one")
        self.model = model
        self.optimizer = optimizer
        self.projection = projection
        self.recanonicalize_every = recanonicalize_every
        self.tol = tol
        self.warn_fraction = warn_fraction
        self.clock = clock
        self.steps = 0
        self.last_cost: tuple[float, float] | None = None  # (projection, step) seconds
        self._warned = False
        self._last_call: float | None = None
        # what torch.optim.Optimizer.__init__ sets, without its param groups: they are the inner
        # optimizer's (the properties below), so that a scheduler's writes reach it
        for hooks in (
            "_optimizer_step_pre_hooks",
            "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks",
            "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks",
            "_optimizer_load_state_dict_post_hooks",
        ):
            setattr(self, hooks, OrderedDict())
        self._patch_step_function()

    # the inner optimizer's groups, state and defaults, shared (load_state_dict replaces them)
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        out = self.optimizer.state_dict()
        out["quotient"] = {"steps": self.steps, "projection": self.projection}
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        quotient = state_dict.pop("quotient", {"steps": 0})
        self.optimizer.load_state_dict(state_dict)
        self.steps = int(quotient["steps"])

    def __repr__(self) -> str:
        return f"QuotientOptimizer({self.projection}, {self.optimizer!r})"

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):  # type: ignore[override]
        """One step of the inner optimizer, its update made horizontal."""
        start = self.clock()
        held = {id(p) for group in self.param_groups for p in group["params"]}
        params = {n: p for n, p in self.model.named_parameters() if id(p) in held}
        before = {name: p.detach().clone() for name, p in params.items()}
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        update = {name: p.detach() - before[name] for name, p in params.items()}
        for name, p in params.items():  # the vertical space is the one at the point before
            p.copy_(before[name])
        for name, p in self.model.named_parameters():
            if name not in update:
                update[name] = torch.zeros_like(p)
        projected = self.clock()
        horizontal = self._horizontal(update)
        cost = self.clock() - projected
        for name, p in params.items():
            p.add_(horizontal[name].to(p.dtype))
        self.steps += 1
        if self.recanonicalize_every and self.steps % self.recanonicalize_every == 0:
            self._recanonicalize()
        end = self.clock()
        step = end - (start if self._last_call is None else self._last_call)
        self._last_call = end
        self._check_cost(cost, step)
        return loss

    def _check_cost(self, cost: float, step: float) -> None:
        self.last_cost = (cost, step)
        if self._warned or step <= 0 or cost <= self.warn_fraction * step:
            return
        self._warned = True
        advice = "projection='heads' is cheaper, or " if self.projection == "joint" else ""
        warnings.warn(
            f"QuotientOptimizer: the {self.projection} projection took {cost:.3g} s of a "
            f"{step:.3g} s training step ({cost / step:.0%}, more than "
            f"{self.warn_fraction:.0%}); {advice}project less often",
            RuntimeWarning,
            stacklevel=3,
        )

    def _horizontal(self, update: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.projection == "joint":
            tol = self.tol
            if tol is None:  # what the parameters' precision reaches
                dtype = next(iter(update.values())).dtype
                tol = 1e-12 if dtype == torch.float64 else 1e-6
            return self._quotient.project_horizontal(self.model, update, tol=tol)
        return self._geometry.project_heads(self.model, update)

    @torch.no_grad()
    def _recanonicalize(self) -> None:
        canonical = self._quotient.recanonicalize(self.model)
        for name, p in self.model.named_parameters():
            p.copy_(canonical.get_parameter(name))
        self.optimizer.state.clear()  # the moments belong to the old coordinates
