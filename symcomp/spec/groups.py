"""Validation of the custom symmetry groups of a spec.

A custom group names its element (``A``, ``Q``, ``s``, ``t``, ``P`` by default) and gives, for each
parameter it moves, the parameter's new value as an expression (:mod:`symcomp.lang`). Each
check here yields a :class:`Problem` pointing at the key to fix; nothing is evaluated numerically.

**Shapes.** Every value is a matrix: a vector parameter of length n is a 1 x n row, a matrix
parameter is (in, out). The element of a group of size n is n x n (GL, O, SO, permutation) or a
1 x n row (scaling, translation); a size name is a 1 x 1 scalar.

**Slicing.** A group that is ``per`` something finer than a layer acts on one block of each
parameter that is split along that thing, and its actions are written for one block:

- ``per: kv_head``: ``W_K``, ``W_V`` are the columns of one key/value head (d x k), ``b_K``,
  ``b_V`` 1 x k; ``W_Q`` (d x k), ``b_Q`` (1 x k) and ``W_O`` (k x d, rows) are the blocks of ONE
  query head served by that key/value head, and the action applies to each served query head.
- ``per: head``: the same blocks, for one query head (and the key/value head serving it).
- ``per: neuron``: ``W_up``, ``W_gate`` are one column (d x 1), ``b_up``, ``b_gate`` 1 x 1,
  ``W_down`` one row (1 x d).
- ``per: layer`` and ``per: model``: parameters are whole.

Parameters not split (``b_O``, ``b_down``, norms, embeddings) are whole in every group. In the
action of such a parameter, a split name stands for the sum of the blocks of the served heads
(neurons), so it has the shape of one block: A4 is ``b_O: b_O - t W_O`` per kv_head.

**Names** in an action resolve, in order, to the group element, a size name, the acted-on
parameter's short name (``W_Q`` for ``layers.*.attn.W_Q``), then a parameter path relative to the
acted-on parameter's module (``W_O`` beside ``attn.b_O``), to its layer (``attn_norm.gain``,
``layers.*.mlp.W_up``), and finally a global path (``embed.W_E``, ``layers.0.attn.W_O``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from symcomp_runtime.layers import HEAD_SLICED, NEURON_SLICED, RELATIVE, reach

from symcomp.errors import KeyPath, Problem
from symcomp.lang import (
    FUNCTIONS,
    Expr,
    ExprError,
    Shape,
    evaluate_size_int,
    infer_shape,
    iter_names,
    parse_expr,
)
from symcomp.spec.model import DEFAULT_ELEMENT, Architecture, CustomGroup, RotaryPositions, Spec
from symcomp.spec.params import parameter_shapes, sizes_of
from symcomp.spec.source import Source

_SLICE_WORDS = {
    "kv_head": "one query head's block under per: kv_head",
    "head": "one query head's block under per: head",
    "neuron": "one neuron's slice under per: neuron",
}
_LAYER = re.compile(r"^layers\.(\d+)\.")


def local_path(path: str) -> str | None:
    """``layers.3.attn.W_Q`` -> ``attn.W_Q``; None for a parameter outside the layers."""
    return _LAYER.sub("", path) if _LAYER.match(path) else None


def layer_of(path: str) -> int | None:
    m = _LAYER.match(path)
    return int(m.group(1)) if m else None


def resolve_name(name: str, target: str, params: Collection[str]) -> str | None:
    """The parameter that ``name`` denotes in the action of ``target`` (a concrete parameter):
    ``target``'s own short name, then a path relative to its module, to its layer (``layers.*.``
    meaning the same layer), then a global path; None if nothing matches."""
    if name == target.rsplit(".", 1)[-1]:
        return target
    m = _LAYER.match(target)
    layer_prefix = m.group(0) if m else ""
    module = target.rsplit(".", 1)[0] + "." if "." in target else ""
    if layer_prefix:
        here = name.replace("layers.*.", layer_prefix, 1)
        if here.startswith("layers.") and here in params:
            return here
    for prefix in (module, layer_prefix, ""):
        if prefix + name in params:
            return prefix + name
    return None


def check_custom_groups(spec: Spec, source: Source) -> Iterator[Problem]:
    """Problems of the custom groups in ``spec.symmetries`` (a normalized spec)."""
    if isinstance(spec.symmetries, str):
        return
    seen: dict[str, int] = {}
    for i, item in enumerate(spec.symmetries):
        name = item if isinstance(item, str) else item.name
        path: KeyPath = ("symmetries", i) if isinstance(item, str) else ("symmetries", i, "name")
        if name in seen:
            yield source.error(
                "duplicate group name",
                path,
                found=repr(name),
                accepted=f"a name not used by symmetries[{seen[name]}]",
            ).first
        seen.setdefault(name, i)
        if isinstance(item, CustomGroup):
            yield from _GroupChecker(item, ("symmetries", i), spec.architecture, source).check()


@dataclass(frozen=True)
class _Target:
    """One acted-on parameter, represented by its first match (all layers share shapes)."""

    key: str  # the pattern as written
    path: str  # e.g. layers.0.attn.W_Q
    layer_prefix: str  # "layers.0." or ""
    module: str  # "layers.0.attn." or "final_norm." or ""


class _GroupChecker:
    def __init__(self, group: CustomGroup, path: KeyPath, arch: Architecture, source: Source):
        self.group = group
        self.path = path
        self.arch = arch
        self.source = source
        self.params = parameter_shapes(arch)
        self.sizes = sizes_of(arch).as_dict()
        self.element = group.element or DEFAULT_ELEMENT[group.group]

    def problem(self, message: str, *sub: str | int, at_key: bool = False, **kw: str) -> Problem:
        return self.source.error(message, (*self.path, *sub), at_key=at_key, **kw).first

    def check(self) -> Iterator[Problem]:
        yield from self.check_element()
        yield from self.check_layers()
        yield from self.check_commutes()
        yield from self.check_restrictions()
        size = self.group_size()
        if isinstance(size, Problem):
            yield size
            size = None
        claimed: dict[str, str] = {}
        used, all_parsed = False, True
        for key, text in self.group.acts.items():
            expr = self.parse(key, text)
            all_parsed = all_parsed and not isinstance(expr, Problem)
            if not isinstance(expr, Problem):
                used = used or any(n.name == self.element for n in iter_names(expr))
            target = self.match(key)
            if isinstance(target, Problem):
                yield target
                continue
            yield from self.check_overlap(key, claimed)
            if isinstance(expr, Problem):
                yield expr
                continue
            yield from self.check_action(target, text, expr, size)
        if all_parsed and not used:
            yield self.problem(
                f"the group element {self.element!r} appears in no action",
                "acts",
                found=", ".join(self.group.acts.values()),
                accepted=f"actions that use {self.element}",
            )

    # --- the group's own keys ------------------------------------------------------------

    def check_element(self) -> Iterator[Problem]:
        if self.element in self.sizes or self.element in FUNCTIONS:
            kind = "size" if self.element in self.sizes else "function"
            yield self.problem(
                f"the element name is already a {kind} name",
                "element",
                found=repr(self.element),
                accepted="a name that is not a size or function name",
            )

    def check_layers(self) -> Iterator[Problem]:
        texts = [key + " " + text for key, text in self.group.acts.items()]
        if any(RELATIVE.search(t) for t in texts):
            low, high = reach(texts)
            if self.group.per == "model":
                yield self.problem(
                    "a relative layer reference needs a group per layer (or finer)",
                    "per",
                    found="model",
                    accepted="per: layer, kv_head, head or neuron; or layers.*. / layers.3.",
                )
            elif high - low >= self.arch.layers:
                yield self.problem(
                    f"the layer references span {high - low + 1} layers; the model has "
                    f"{self.arch.layers}",
                    "acts",
                    found=", ".join(self.group.acts),
                    accepted="references within the model's layers",
                )
        if self.group.layers is None:
            return
        if self.group.per == "model":
            yield self.problem(
                "layers restricts per-layer (or finer) groups; this group is per: model",
                "layers",
                found=str(self.group.layers),
                accepted="no layers key, or per: layer, kv_head, head or neuron",
            )
        count = self.arch.layers
        named = [i % count for i in self.group.layers if -count <= i < count]
        if len(set(named)) != len(named):
            yield self.problem(
                "layers names a layer twice (negative indices count from the end)",
                "layers",
                found=str(self.group.layers),
                accepted="distinct layer indices",
            )
        for j, index in enumerate(self.group.layers):
            if not -count <= index < count:
                yield self.problem(
                    "layer index out of range",
                    "layers",
                    j,
                    found=str(index),
                    accepted=f"{-count} to {count - 1} (negative: from the end)",
                )

    def check_restrictions(self) -> Iterator[Problem]:
        # fixes: ones needs a square element acting on the residual width; positive needs scaling.
        matrix = self.group.group in ("GL", "O", "SO")
        if self.group.fixes and not matrix:
            yield self.problem(
                "fixes applies to matrix groups",
                "fixes",
                found=f"group {self.group.group}",
                accepted="group GL, O or SO, or no fixes",
            )
        if self.group.positive and self.group.group != "scaling":
            yield self.problem(
                "positive applies to scaling groups",
                "positive",
                found=f"group {self.group.group}",
                accepted="group scaling, or positive: false",
            )

    def check_commutes(self) -> Iterator[Problem]:
        for j, op in enumerate(self.group.commutes_with):
            if op == "rope" and not isinstance(self.arch.positions, RotaryPositions):
                yield self.problem(
                    "commutes_with: rope needs rotary positions",
                    "commutes_with",
                    j,
                    found=f"positions type {self.arch.positions.type}",
                    accepted="positions type rope, or no commutes_with",
                )

    def group_size(self) -> int | Problem:
        size = self.group.size
        accepted = f"a positive integer or an expression in the sizes ({', '.join(self.sizes)})"
        try:
            expr = parse_expr(size) if isinstance(size, str) else None
            if expr is None:
                if size >= 1:
                    return size
                raise ExprError(f"{size} is not a positive integer")
            return evaluate_size_int(expr, self.sizes)
        except ExprError as exc:
            return self.problem(
                f"invalid group size: {_describe(exc, size)}",
                "size",
                found=repr(size),
                accepted=exc.accepted or accepted,
            )

    # --- acts: keys ----------------------------------------------------------------------

    def match(self, key: str) -> _Target | Problem:
        # a relative reference (layers.{i+1}.x) names a parameter that every layer has
        pattern = re.compile(re.escape(RELATIVE.sub("layers.*.", key)).replace(r"\*", r"\d+"))
        matches = [name for name in self.params if pattern.fullmatch(name)]
        if not matches:
            names = dict.fromkeys(_LAYER.sub("layers.*.", name) for name in self.params)
            return self.problem(
                "no parameter matches this path ('*' stands for the layer index)",
                "acts",
                key,
                at_key=True,
                found=repr(key),
                accepted=", ".join(names),
            )
        path = matches[0]
        layer = _LAYER.match(path)
        module = path.rsplit(".", 1)[0] + "." if "." in path else ""
        return _Target(key, path, layer.group(0) if layer else "", module)

    def check_overlap(self, key: str, claimed: dict[str, str]) -> Iterator[Problem]:
        pattern = re.compile(re.escape(key).replace(r"\*", r"\d+"))
        for name in self.params:
            if not pattern.fullmatch(name):
                continue
            if name in claimed:
                yield self.problem(
                    f"{name} already has an action",
                    "acts",
                    key,
                    at_key=True,
                    found=repr(key),
                    accepted=f"one action per parameter (also matched by {claimed[name]!r})",
                )
                return
            claimed[name] = key

    # --- acts: expressions ---------------------------------------------------------------

    def parse(self, key: str, text: str) -> Expr | Problem:
        try:
            return parse_expr(text)
        except ExprError as exc:
            return self.problem(
                f"bad action expression: {_describe(exc, text)}",
                "acts",
                key,
                found=repr(text),
                accepted=exc.accepted,
            )

    def resolve(self, name: str, target: _Target) -> str | None:
        """The parameter path that ``name`` denotes in ``target``'s action, or None (a relative
        layer reference is read in the target's layer: every layer's parameters alike)."""
        name = RELATIVE.sub("layers.*.", name)
        if name == target.path.rsplit(".", 1)[-1]:
            return target.path
        if target.layer_prefix:
            name_here = name.replace("layers.*.", target.layer_prefix, 1)
            if name_here.startswith("layers.") and name_here in self.params:
                return name_here
        for prefix in (target.module, target.layer_prefix, ""):
            if prefix + name in self.params:
                return prefix + name
        return None

    def accepted_names(self, target: _Target) -> str:
        short = target.path.rsplit(".", 1)[-1]
        local = [
            name[len(prefix) :]
            for prefix in (target.module, target.layer_prefix)
            if prefix
            for name in self.params
            if name.startswith(prefix)
        ]
        glob = [name for name in self.params if not _LAYER.match(name)]
        names = dict.fromkeys([self.element, short, *self.sizes, *local, *glob])
        return ", ".join(names) + f"; functions {', '.join(FUNCTIONS)}"

    def check_action(
        self, target: _Target, text: str, expr: Expr, size: int | None
    ) -> Iterator[Problem]:
        shapes: dict[str, Shape] = {name: (1, 1) for name in self.sizes}
        unknown: set[str] = set()
        for node in iter_names(expr):
            if node.name == self.element or node.name in self.sizes or node.name in unknown:
                continue
            param = self.resolve(node.name, target)
            if param is None:
                unknown.add(node.name)
                yield self.problem(
                    f"unknown name {node.name!r} in the action{_at(node.pos)}",
                    "acts",
                    target.key,
                    found=repr(text),
                    accepted=self.accepted_names(target),
                )
            else:
                shapes[node.name] = self.block_shape(param)
        if unknown or size is None:
            return  # without every shape (or the element's size) no shape can be checked
        square = self.group.group not in ("scaling", "translation")
        shapes[self.element] = (size, size) if square else (1, size)
        try:
            result = infer_shape(expr, shapes, self.sizes)
        except ExprError as exc:
            yield self.problem(
                f"shape error in the action: {_describe(exc, text)}",
                "acts",
                target.key,
                found=repr(text),
                accepted=exc.accepted,
            )
            return
        expected = self.block_shape(target.path)
        if result != expected:
            note = _SLICE_WORDS.get(self.group.per) if expected != self.whole(target.path) else None
            yield self.problem(
                f"the action gives a {_fmt(result)} matrix, but {target.key} is "
                f"{_fmt(expected)}" + (f" ({note})" if note else ""),
                "acts",
                target.key,
                found=_fmt(result),
                accepted=_fmt(expected),
            )

    # --- shapes --------------------------------------------------------------------------

    def whole(self, path: str) -> Shape:
        shape = self.params[path]
        return (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])

    def block_shape(self, path: str) -> Shape:
        """The shape of ``path`` as this group's actions see it (see the module docstring)."""
        shape = list(self.whole(path))
        local = _LAYER.sub("", path) if _LAYER.match(path) else None
        per = self.group.per
        if per in ("kv_head", "head") and local in HEAD_SLICED:
            shape[HEAD_SLICED[local]] = self.sizes["head_width"]
        elif per == "neuron" and local in NEURON_SLICED:
            shape[NEURON_SLICED[local]] = 1
        return (shape[0], shape[1])


def _at(offset: int | None) -> str:
    return "" if offset is None else f" at character {offset + 1}"


def _describe(exc: ExprError, text: object) -> str:
    where = f"{_at(exc.offset)} of {text!r}" if exc.offset is not None else ""
    return exc.message + where


def _fmt(shape: Shape) -> str:
    return f"{shape[0]} x {shape[1]}"
