"""One meaning of a group action: a spec's group bound to the runtime's engine.

A :class:`~symcomp.spec.model.CustomGroup` says which parameters its element moves and how, in
the spec language. :func:`bind` turns it into the runtime's data model
(:class:`symcomp_runtime.actions.Group`): which tensors (patterns, ``*`` for the layer of the
moved parameter, ``layers.{i+1}.`` relative to the unit's layer), which axes (the per-head and
per-neuron cuts) and which layers (its units). Every name an action reads is resolved here,
once, to a parameter pattern, exactly as the generated code's printed actions resolve it
(:mod:`symcomp.codegen.actions` calls :func:`resolved_names`).

The engine (:func:`symcomp_runtime.actions.apply`) then applies it on either backend:

- torch tensors (:data:`symcomp_runtime.actions.TORCH`): the numeric checks of ``verify``, the
  vertical vectors of ``analyze``, and, through the printed actions, every generated package;
- SymPy matrices (:data:`SYMPY`): the exact invariance proofs of :mod:`symcomp.verify.symbolic`.

The per-act evaluator differs by backend (a torch or a SymPy printer of the same expression
tree); the units, the cuts, the layer references and the order of reads and writes are the
engine's, shared.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy
from symcomp_runtime import actions
from symcomp_runtime.layers import RELATIVE, at_layer, reach, unit_layers

from symcomp.errors import DerivationError
from symcomp.lang import Expr, evaluate_size_int, iter_names, parse_expr
from symcomp.spec.groups import resolve_name
from symcomp.spec.model import DEFAULT_ELEMENT, Architecture, CustomGroup
from symcomp.spec.params import Sizes, parameter_shapes, sizes_of
from symcomp.symmetry.rational import rational_canon

_LAYER_PREFIX = re.compile(r"^layers\.(\d+)\.")
SIZE_NAMES = frozenset(Sizes.__dataclass_fields__)


class ActionError(DerivationError):
    """A group whose action cannot be evaluated (unknown name, shape mismatch, ...)."""


# --- resolving names --------------------------------------------------------------------------


def element_name(group: CustomGroup) -> str:
    return group.element or DEFAULT_ELEMENT[group.group]


def group_reach(group: CustomGroup) -> tuple[int, int]:
    """The lowest and highest offsets of its relative layer references (``{i-1}``: -1)."""
    return reach([target + " " + text for target, text in group.acts.items()])


def first_unit_layer(group: CustomGroup, arch: Architecture) -> int | None:
    """The layer of the group's first unit when it has relative references (the instance its
    actions are resolved on), else None."""
    if group.per == "model" or not any(RELATIVE.search(t + x) for t, x in group.acts.items()):
        return None
    return next(iter(unit_layers(group.layers, group_reach(group), arch.layers)), None)


def concrete(pattern: str, params: Mapping[str, object]) -> str | None:
    """A parameter that ``pattern`` (``*`` for a layer) matches: the first, or None."""
    regex = re.compile(re.escape(pattern).replace(r"\*", r"\d+"))
    return next((name for name in params if regex.fullmatch(name)), None)


def as_pattern(path: str, target: str, layer: int | None) -> str:
    """``layers.<l>.x`` -> ``layers.*.x`` when ``l`` is the target's own layer, and relative to
    the unit's ``layer`` (``layers.{i+1}.x``) for a group with relative references."""
    m, t = _LAYER_PREFIX.match(path), _LAYER_PREFIX.match(target)
    if m and t and m.group(1) == t.group(1):
        return "layers.*." + path[m.end() :]
    if m and layer is not None:
        d = int(m.group(1)) - layer
        return ("layers.{i}." if d == 0 else f"layers.{{i{d:+d}}}.") + path[m.end() :]
    return path


def resolved_names(
    group: CustomGroup, target: str, expr: Expr, arch: Architecture
) -> tuple[str, dict[str, str]] | None:
    """(a concrete parameter the target pattern matches, {spec name: parameter pattern}) for
    one action; None when the pattern matches no parameter of this architecture."""
    params = parameter_shapes(arch)
    layer = first_unit_layer(group, arch)
    found = concrete(at_layer(target, layer), params)
    if found is None:
        return None
    element = element_name(group)
    names: dict[str, str] = {}
    for name in dict.fromkeys(n.name for n in iter_names(expr)):
        if name == element or name in SIZE_NAMES:
            continue
        path = resolve_name(at_layer(name, layer), found, params)
        if path is None:
            raise ActionError(f"{group.name}: {name!r} in the action on {target} names nothing")
        names[name] = as_pattern(path, found, layer)
    return found, names


# --- binding ----------------------------------------------------------------------------------

# a backend's evaluator of one expression: (expression, {name: value}, sizes) -> value
Evaluate = Callable[[Expr, Mapping[str, Any], Mapping[str, int]], Any]


def torch_evaluate(expr: Expr, env: Mapping[str, Any], sizes: Mapping[str, int]) -> Any:
    from symcomp.lang.torch_evaluator import TorchEvaluator

    return TorchEvaluator(dict(env), dict(sizes)).doprint(expr)


def sympy_evaluate(expr: Expr, env: Mapping[str, Any], sizes: Mapping[str, int]) -> Any:
    from symcomp.lang.sympy_printer import SympyMatrixEvaluator

    return SympyMatrixEvaluator(dict(env), dict(sizes)).doprint(expr)


def _act_fn(expr: Expr, names: dict[str, str], element: str, evaluate: Evaluate):
    def fn(v, X, S):
        env = {name: v(pattern) for name, pattern in names.items()}
        env[element] = X
        return evaluate(expr, env, S)

    return fn


def bind(
    group: CustomGroup, arch: Architecture, evaluate: Evaluate = torch_evaluate
) -> actions.Group:
    """The runtime's data model of ``group`` on this architecture, its actions evaluated by
    ``evaluate`` (:func:`torch_evaluate` or :func:`sympy_evaluate`)."""
    element = element_name(group)
    acts = []
    for target, text in group.acts.items():
        expr = parse_expr(text)
        found = resolved_names(group, target, expr, arch)
        if found is not None:
            acts.append(actions.Act(target, _act_fn(expr, found[1], element, evaluate), text))
    size = group.size
    size_expr = parse_expr(size) if isinstance(size, str) else None

    def size_of(S: Mapping[str, int]) -> int:
        return int(size) if size_expr is None else evaluate_size_int(size_expr, S)

    return actions.Group(
        name=group.name,
        catalogue_id="",
        kind=group.group,
        per=group.per,
        size=size_of,
        acts=tuple(acts),
        positive=group.positive,
        fixes_ones="ones" in group.fixes,
        commutes_with_rope="rope" in group.commutes_with,
        layers=tuple(group.layers) if group.layers is not None else None,
        reach=group_reach(group),
    )


def sizes(arch: Architecture) -> dict[str, int]:
    return sizes_of(arch).as_dict()


# --- the SymPy backend ------------------------------------------------------------------------


class SympyBackend:
    """The engine's operations on SymPy matrices (parameters are 2-D already)."""

    @staticmethod
    def matrix(value: sympy.Matrix) -> sympy.Matrix:
        return value

    @staticmethod
    def narrow(value: sympy.Matrix, axis: int, start: int, width: int) -> sympy.Matrix:
        if axis == 0:
            return value[start : start + width, :]
        return value[:, start : start + width]

    @staticmethod
    def cat(parts: Sequence[sympy.Matrix], axis: int) -> sympy.Matrix:
        parts = [p for p in parts if p.rows and p.cols]
        return sympy.Matrix.vstack(*parts) if axis == 0 else sympy.Matrix.hstack(*parts)

    @staticmethod
    def fill(new: sympy.Matrix, shape: tuple[int, ...]) -> sympy.Matrix:
        if new.shape == (1, 1) and tuple(shape) != (1, 1):
            new = sympy.Matrix(shape[0], shape[1], lambda i, j, v=new[0, 0]: v)
        return new.applyfunc(rational_canon)

    @staticmethod
    def restore(value: sympy.Matrix, like: sympy.Matrix) -> sympy.Matrix:
        return value


SYMPY = SympyBackend()
