"""Relative layer references: a per-layer group declared once.

In a post-norm stack the bias of layer l's MLP norm shifts through the next layer's query, key,
value and output biases. Written with ``layers.{i}`` and ``layers.{i+1}``, one declaration covers
every layer but the last (whose norm the head reads): ``check`` accepts it, the closed form counts
``L - 1`` units, the float64 check and the SymPy proof accept it, and the same shift written
into the wrong layer (``{i}`` for ``{i+1}``) is refuted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sympy

from symcomp.errors import SpecError
from symcomp.spec import parse_spec
from symcomp.symmetry.action import units
from symcomp.symmetry.catalogue import SIZE_SYMBOLS
from symcomp.symmetry.catalogue.custom import custom_group_info
from symcomp.verify.invariance import TOLERANCE, measure_invariance
from symcomp.verify.symbolic import prove_invariance

ROOT = Path(__file__).resolve().parents[1]


def _spec(group: str, layers: int = 3):
    text = (
        (ROOT / "specs" / "tiny" / "bert.yaml")
        .read_text()
        .replace("layers: 1", f"layers: {layers}")
    )
    return parse_spec(text.split("symmetries:")[0] + "symmetries:\n" + group, "relative.yaml")


SHIFT = """\
  - name: post_norm_bias_shift
    group: translation
    per: layer
    size: width
    acts:
      layers.{i}.mlp_norm.bias: bias + t
      layers.{i+1}.attn.b_Q: b_Q - t W_Q
      layers.{i+1}.attn.b_K: b_K - t W_K
      layers.{i+1}.attn.b_V: b_V - t W_V
      layers.{i+1}.attn.b_O: b_O - t
"""


def test_a_relative_group_is_declared_once_and_holds():
    spec = _spec(SHIFT)
    (group,) = spec.symmetries
    assert [u.layer for u in units(group, spec)] == [0, 1]  # the last layer's norm: the head's
    info = custom_group_info(group, spec.architecture.layers)
    L, d = SIZE_SYMBOLS["layers"], SIZE_SYMBOLS["width"]
    assert sympy.expand(info.total - (L - 1) * d) == 0
    assert measure_invariance(spec, group).max_error <= TOLERANCE
    proof = prove_invariance(spec, group, shrink=False)
    assert proof.holds, proof


def test_the_same_shift_into_the_wrong_layer_is_refuted():
    spec = _spec(SHIFT.replace("{i+1}", "{i}"))
    (group,) = spec.symmetries
    assert measure_invariance(spec, group).max_error > 1e-3


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("per: layer", "per: model"), "needs a group per layer"),
        (("{i+1}.attn.b_O", "{i+5}.attn.b_O"), "span"),
    ],
)
def test_bad_relative_references_are_named(edit, message):
    with pytest.raises(SpecError, match=message):
        _spec(SHIFT.replace(*edit))


def test_negative_layers_count_from_the_end():
    last = SHIFT.replace("    size: width\n", "    size: width\n    layers: [-2]\n")
    spec = _spec(last, layers=4)
    assert [u.layer for u in units(spec.symmetries[0], spec)] == [2]
