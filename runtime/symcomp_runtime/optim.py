"""Training on the quotient: any torch optimizer, its updates made horizontal.

:class:`QuotientOptimizer` wraps an optimizer of a generated ``Model`` (a package ``symcomp
compile`` wrote). Each ``step`` lets the inner optimizer compute its update, then replaces it by
its horizontal part at the point before the step, with the package's ``project_horizontal``. It
projects the *update*, not the gradient: the gradient of an invariant loss is already
horizontal, but Adam's per-coordinate scaling, momentum and weight decay are not, so their
update has a vertical part that moves the parameters along the orbits without changing the
function. Decoupled weight decay (AdamW) is part of the update and is projected with it, so it
shrinks only what the function sees.

``projection="heads"`` removes only the per-head gauges' vertical part (A1, A3: every GL(k)
pair the package's ``geometry`` module finds), in closed form: one small Sylvester solve per
head, batched, instead of the joint iterative solve over every group. It is exact for those
groups, which share no parameter with each other; the other groups' directions are kept.

``recanonicalize_every=k`` brings the model back to the chart point of its orbit every ``k``
steps (the package's ``recanonicalize``). That moves the parameters along the orbit, so the inner
optimizer's state (Adam's moments) no longer matches the coordinates; the wrapper resets it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .packages import package_module

PROJECTIONS = ("joint", "heads")


class QuotientOptimizer:
    """``optimizer``'s steps on ``model``, projected onto the horizontal space."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        projection: str = "joint",
        recanonicalize_every: int = 0,
        tol: float = 1e-12,
    ):
        if projection not in PROJECTIONS:
            accepted = ", ".join(PROJECTIONS)
            raise ValueError(f"unknown projection {projection!r}; accepted: {accepted}")
        self.model = model
        self.projection = projection
        self.optimizer = optimizer
        self.recanonicalize_every = recanonicalize_every
        self.tol = tol
        self.steps = 0
        self._quotient = package_module(model, "quotient")
        self._geometry = package_module(model, "geometry")

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """One step of the inner optimizer, its update made horizontal."""
        params = dict(self.model.named_parameters())
        before = {name: p.detach().clone() for name, p in params.items()}
        loss = self.optimizer.step(closure)
        update = {name: params[name].detach() - before[name] for name in params}
        for name, p in params.items():  # the vertical space is the one at the point before
            p.copy_(before[name])
        horizontal = self._horizontal(update)
        for name, p in params.items():
            p.add_(horizontal[name])
        self.steps += 1
        if self.recanonicalize_every and self.steps % self.recanonicalize_every == 0:
            self._recanonicalize()
        return loss

    def _horizontal(self, update: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.projection == "joint":
            return self._quotient.project_horizontal(self.model, update, tol=self.tol)
        return self._geometry.project_heads(self.model, update)

    @torch.no_grad()
    def _recanonicalize(self) -> None:
        canonical = self._quotient.recanonicalize(self.model)
        for name, p in self.model.named_parameters():
            p.copy_(canonical.get_parameter(name))
        self.optimizer.state.clear()  # the moments belong to the old coordinates
