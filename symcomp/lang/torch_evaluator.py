"""The matrix language on torch tensors (float64 by default): the numerical group actions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from symcomp.lang.matrix import MatrixEvaluator
from symcomp.lang.nodes import Name
from symcomp.lang.parser import ExprError


class TorchEvaluator(MatrixEvaluator):
    """Evaluates an expression on 2-D tensors. ``names`` maps a name to its tensor, or to a
    function giving it (called when read); a size name reads as a 1 x 1 tensor. Elementwise
    operations use torch's broadcasting."""

    _default_settings: ClassVar[dict[str, Any]] = {"dtype": torch.float64}

    names: Mapping[str, Tensor | Callable[[], Tensor]]

    @property
    def dtype(self) -> torch.dtype:
        return self._settings["dtype"]

    def _print_Name(self, node: Name) -> Tensor:
        if node.name in self.sizes:
            return self._scalar(float(self.sizes[node.name]))
        value = self.names.get(node.name)
        if value is None:
            raise ExprError(f"unknown name {node.name!r}", node.pos)
        return value() if callable(value) else value

    def _scalar(self, value: float) -> Tensor:
        return torch.full((1, 1), value, dtype=self.dtype)

    def _elementwise(self, op: str, a: Tensor, b: Tensor) -> Tensor:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        return a / b

    def _matmul(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b

    def _reciprocal(self, x: Tensor) -> Tensor:
        return 1.0 / x

    def _inverse(self, x: Tensor) -> Tensor:
        return torch.linalg.inv(x)

    def _power(self, x: Tensor, exponent: float) -> Tensor:
        return x**exponent

    def _ones(self, n: int) -> Tensor:
        return torch.ones(1, n, dtype=self.dtype)

    def _eye(self, n: int) -> Tensor:
        return torch.eye(n, dtype=self.dtype)

    def _call_diag(self, x: Tensor) -> Tensor:
        return torch.diag(x.reshape(-1))

    def _call_kron(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.kron(a, b)

    def _call_sqrt(self, x: Tensor) -> Tensor:
        return torch.sqrt(x)

    def _call_sum(self, x: Tensor) -> Tensor:
        return x.sum().reshape(1, 1)
