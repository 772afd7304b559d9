"""The data every rule of the catalogue writes, the symbolic sizes its closed forms are written
in, and the small helpers that spell an action in the spec language."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy

from symcomp.spec.model import CustomGroup

# The symbolic sizes of the closed forms.
d, L, h, g, k, f, V, T, r = sympy.symbols("d L h g k f V T r", positive=True, integer=True)
SIZE_SYMBOLS = {
    "width": d,
    "layers": L,
    "heads": h,
    "kv_heads": g,
    "head_width": k,
    "hidden": f,
    "vocab": V,
    "positions": T,
    "rotary_width": r,
}


@dataclass(frozen=True)
class GroupInfo:
    """One named group: its action (spec language), its size, and its geometry."""

    name: str
    catalogue_id: str
    group: CustomGroup
    acts_on: str
    per: str
    dimension: sympy.Expr
    """dimension of the Lie algebra of one unit, in the symbolic sizes"""
    units: sympy.Expr
    invariants: str
    chart: str
    projection: str
    instances: tuple[CustomGroup, ...] = ()
    """further copies, where one action per unit cannot be written with '*' (a norm of layer l
    read by layer l + 1 in a post-norm stack): each names its parameters in full"""

    @property
    def total(self) -> sympy.Expr:
        return sympy.expand(self.dimension * self.units)

    @property
    def all_groups(self) -> tuple[CustomGroup, ...]:
        return (self.group, *self.instances)


@dataclass(frozen=True)
class UnreadRows:
    """Rows of a table that no input reads: free directions, not a group."""

    parameter: str
    first: int  # the unread rows are ``first:stop`` of the table
    stop: int
    count: sympy.Expr

    @property
    def rows(self) -> int:
        return self.stop - self.first


@dataclass(frozen=True)
class Symmetries:
    """What :func:`derive_groups` finds in a graph."""

    groups: tuple[GroupInfo, ...]
    unread: tuple[UnreadRows, ...]

    def named(self, name: str) -> tuple[GroupInfo, ...]:
        return tuple(gi for gi in self.groups if gi.name == name)


@dataclass(frozen=True)
class Worked:
    """A worked count: what ``rule`` gives on the example ``specs/<spec>.yaml``, as a closed form
    in the size symbols (``count``) and as a number at the spec's sizes (``value``).

    Declared for the reader next to the rule; ``tests/test_catalogue.py`` checks it against the
    lines ``analyze`` derives for that spec, so a wrong declaration fails. The code never reads
    it: every count comes from the rules."""

    rule: Callable
    spec: str
    count: str
    value: int


# --- spelling an action ------------------------------------------------------------------------

_E = sympy.Symbol("experts", positive=True, integer=True)

# the shape of each parameter, by its local name: (rows, cols) whole, and under per kv_head /
# head / neuron
_SLICED = {
    "W_Q": ((d, h * k), (d, k)),
    "b_Q": ((1, h * k), (1, k)),
    "W_K": ((d, g * k), (d, k)),
    "b_K": ((1, g * k), (1, k)),
    "W_V": ((d, g * k), (d, k)),
    "b_V": ((1, g * k), (1, k)),
    "W_O": ((h * k, d), (k, d)),
    "W_up": ((d, f), (d, 1)),
    "W_gate": ((d, f), (d, 1)),
    "b_up": ((1, f), (1, 1)),
    "b_gate": ((1, f), (1, 1)),
    "W_down": ((f, d), (1, d)),
    "W_E": ((V, d), (V, d)),
    "W_P": ((T, d), (T, d)),
    "W_U": ((d, V), (d, V)),
    "b_U": ((1, V), (1, V)),
    "W_dense": ((d, d), (d, d)),
    # a mixture of experts' router: one column per expert (a constant of the spec, not a size)
    "W_router": ((d, _E), (d, _E)),
}


def _pattern(param: str) -> str:
    """``layers.0.attn.W_Q`` -> ``layers.*.attn.W_Q``: rules read layer 0 and act on all."""
    parts = param.split(".")
    if parts[0] == "layers":
        parts[1] = "*"
    return ".".join(parts)


def _keep(param: str) -> str:
    return param


def _short(param: str) -> str:
    return param.rsplit(".", 1)[-1]


def _tag(text: str) -> str:
    return text.replace(".", "_").replace("*", "i")


def _custom(name: str, group: str, per: str, size: str, acts: dict[str, str], **kw) -> CustomGroup:
    return CustomGroup.model_validate(
        {"name": name, "group": group, "per": per, "size": size, "acts": acts, **kw}
    )


def _size_text(expr: sympy.Expr) -> str:
    """A symbolic size as a spec-language size expression: ``h*k`` -> ``heads*head_width``."""
    names = {sym: sympy.Symbol(name) for name, sym in SIZE_SYMBOLS.items()}
    return str(expr.subs(names))
