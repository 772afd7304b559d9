"""How group actions are read and rendered for the generated package (symcomp.codegen.actions)."""

from __future__ import annotations

import pytest
import torch

from symcomp.codegen.actions import moves_by_constant
from symcomp.lang import TorchSourcePrinter, parse_expr


@pytest.mark.parametrize(
    ("target", "text", "element", "constant"),
    [
        ("layers.*.attn.W_O", "W_O + t^T ones(width)", "t", True),  # a writer's centring
        ("embed.W_E", "ones(vocab)^T t + W_E", "t", True),
        ("layers.*.mlp.b_down", "b_down - t ones(width)", "t", True),
        ("layers.*.attn.b_K", "b_K + t", "t", True),
        # reads the norm's gain: the move depends on the point
        ("layers.*.attn.W_Q", "W_Q + diag(gain)^-1 ones(width)^T t", "t", False),
        ("layers.*.attn.b_O", "b_O - t W_O", "t", False),  # reads W_O
        ("layers.*.attn.W_O", "t - W_O", "t", False),  # not a translation of W_O
        ("layers.*.attn.W_O", "W_O diag(s)", "s", False),
    ],
)
def test_moves_by_constant(target, text, element, constant):
    assert moves_by_constant(parse_expr(text), element, target) is constant


def test_inverse_of_a_diagonal_renders_as_a_division():
    names = {"gain": "layers.*.norm.gain", "W": "W"}
    printer = TorchSourcePrinter({"names": names, "element": "t"})
    source = printer.doprint(parse_expr("diag(gain)^-1 W"))
    assert "inv(" not in source
    gain = torch.rand(1, 5, dtype=torch.float64) + 0.5
    W = torch.randn(5, 3, dtype=torch.float64)
    namespace = {
        "v": {"layers.*.norm.gain": gain, "W": W}.__getitem__,
        "diag": lambda x: torch.diag(x.reshape(-1)),
        "mm": lambda a, b: a @ b,
    }
    value = eval(source, namespace)  # our own rendered source, on test data
    expected = torch.linalg.inv(torch.diag(gain.reshape(-1))) @ W
    assert torch.allclose(value, expected, rtol=1e-14, atol=0)
