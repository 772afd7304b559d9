"""Pass: derive the gauge-fixing chart, one step per continuous group, from the groups' actions.

A step fixes a group on one *anchor* parameter that the group moves in a form the chart knows:

- ``X f(E)`` or ``f(E) X`` with ``f(E)`` one of ``E``, ``E^-1``, ``E^T``, ``E^-T`` (or ``diag(s)``,
  ``diag(s)^-1`` for scalings), possibly offset as ``(c + X) f(E) - c``;
- ``X + L(t)`` for translations, with ``L`` linear in ``t`` (and composing additively);
- ``X (eye(n) + u t)^-1`` for a translation-parametrized rank-one group (a norm bias whose readers
  have no bias of their own): every such X with X u != 0 is one orbit, so the step pins X to a
  unit vector (Sherman-Morrison gives the element in closed form).

Steps are ordered so that no later group moves an earlier step's anchor: each step's canonical
element then depends only on what the later steps leave alone, and the composite is a function
of the orbit. A group with no usable anchor (or no such order) makes the chart underivable;
:class:`ChartError` names the groups, and the compiler reports it rather than guessing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from symcomp_runtime.layers import RELATIVE, at_layer, unit_layers

from symcomp.codegen.actions import GroupCode
from symcomp.codegen.forms import is_self, multiplicative_form
from symcomp.errors import CodegenError
from symcomp.lang import (
    BinOp,
    Call,
    Inverse,
    Name,
    free_names,
    parse_expr,
)
from symcomp.spec.groups import HEAD_SLICED, NEURON_SLICED
from symcomp.spec.model import Architecture
from symcomp.spec.params import parameter_shapes

_Q_SLICED = ("attn.W_Q", "attn.b_Q", "attn.W_O", "attn.q_norm.gain")


class ChartError(CodegenError):
    """No chart could be derived for these groups."""


@dataclass(frozen=True)
class StepCode:
    group: str
    kind: str
    anchor: str
    side: str
    form: str
    offset: float
    joint: tuple[tuple[str, str], ...] = ()  # more (group, anchor) fixed in the same step

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group, *(name for name, _ in self.joint))

    @property
    def anchors(self) -> tuple[str, ...]:
        return (self.anchor, *(anchor for _, anchor in self.joint))


def _rank_one(group: GroupCode, target: str, text: str) -> bool:
    """Whether the action on ``target`` is ``X (eye(n) + u t)^-1`` with ``u`` free of X and t."""
    expr = parse_expr(text)
    if not (isinstance(expr, BinOp) and expr.op == "@"):
        return False
    if is_self(expr.left, target) != (True, 0.0):
        return False
    inner = expr.right.operand if isinstance(expr.right, Inverse) else None
    if not (isinstance(inner, BinOp) and inner.op == "+"):
        return False
    eye, update = inner.left, inner.right
    if not (isinstance(eye, Call) and eye.func == "eye"):
        return False
    if not (isinstance(update, BinOp) and update.op == "@" and update.right == Name(group.element)):
        return False
    short = target.rsplit(".", 1)[-1]
    return not free_names(update.left) & {group.element, short, target}


def _translation(group: GroupCode, target: str, text: str) -> bool:
    """Whether the action on ``target`` involves both the target and the element: a candidate
    for a minimum-norm step (the generated chart checks that the move is linear in t)."""
    expr = parse_expr(text)
    short = target.rsplit(".", 1)[-1]
    names = free_names(expr)
    return group.element in names and (short in names or target in names)


_KIND = {"GL": "gl", "O": "rotation", "SO": "rotation", "scaling": "scale"}


def candidate_steps(group: GroupCode, texts: dict[str, str], arch: Architecture) -> list[StepCode]:
    """Every anchor the group could be fixed on, in the order of its actions."""
    shapes = parameter_shapes(arch)
    out = []
    for act in group.acts:
        step = _candidate(group, act.target, texts[act.target], shapes)
        if step is not None:
            out.append(step)
    return out


def _candidate(group: GroupCode, target: str, text: str, shapes) -> StepCode | None:
    if not _can_anchor(group, target, shapes):
        return None
    if group.kind == "translation":
        if _rank_one(group, target, text):
            return StepCode(group.name, "rank_one", target, "right", "E", 0.0)
        if not _translation(group, target, text):
            return None
        return StepCode(group.name, "translation", target, "right", "E", 0.0)
    if not _chart_knows(group):
        return None
    found = multiplicative_form(group.kind, group.element, target, text)
    if found is None:
        return None
    side, form, offset = found
    shape = shapes[any_layer(target).replace("*", "0")]
    rows = shape[0] if len(shape) == 2 else 1
    if group.kind != "scaling" and side == "right" and rows < 2:
        return None  # a bias row cannot hold pivot rows
    return StepCode(group.name, _KIND[group.kind], target, side, form, offset)


def _can_anchor(group: GroupCode, target: str, shapes) -> bool:
    """Whether each unit of the group sees ``target`` as one block of one parameter."""
    local = re.sub(r"^layers\.\*\.", "", any_layer(target))
    if group.per in ("kv_head", "head") and (local in _Q_SLICED or local not in HEAD_SLICED):
        return False  # a query-sliced view is a sum of blocks; an unsliced one is shared
    if group.per == "neuron" and local not in NEURON_SLICED:
        return False
    if group.per == "model" and "*" in target:
        return False  # one unit, many layers
    return any_layer(target).replace("*", "0") in shapes


def _chart_knows(group: GroupCode) -> bool:
    """Whether the runtime has a canonical element for this kind of group."""
    if group.kind not in _KIND:
        return False
    if group.kind == "GL":
        return not group.fixes_ones
    return group.kind == "scaling" or not group.commutes_with_rope


class _Reach:
    """Which parameters a group's patterns name: ``*`` any layer for a group per model, the
    units' layers otherwise, a relative reference (``layers.{i+1}.``) each unit's layer plus its
    offset. Two groups declared once for all layers still move different parameters when their
    units sit in different layers (the last layer's norm against the others')."""

    def __init__(self, groups: tuple[GroupCode, ...], depth: int):
        self.groups = {g.name: g for g in groups}
        self.depth = depth

    @functools.cache  # noqa: B019 (one per chart derivation)
    def names(self, group: str, pattern: str) -> frozenset[str]:
        g = self.groups[group]
        if g.per == "model":
            return frozenset({pattern})
        layers = unit_layers(g.layers, g.reach, self.depth)
        return frozenset(at_layer(pattern, i).replace("layers.*.", f"layers.{i}.") for i in layers)

    def moves(self, group: GroupCode, anchor: str, owner: str) -> bool:
        """Whether ``group`` moves a parameter that ``anchor`` of the group ``owner`` names."""
        anchors = self.names(owner, anchor)
        return any(
            _overlap(a, b)
            for act in group.acts
            for a in self.names(group.name, act.target)
            for b in anchors
        )


@functools.cache
def _overlap(a: str, b: str) -> bool:
    """Whether the patterns ``a`` and ``b`` name a common parameter (``*``: any layer)."""
    return bool(_pattern(a).fullmatch(b) or _pattern(b).fullmatch(a))


def any_layer(pattern: str) -> str:
    """``pattern`` with its relative layer references (``layers.{i+1}.``) read as ``layers.*.``:
    all layers share their parameters' shapes and roles."""
    return RELATIVE.sub("layers.*.", pattern)


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", r"(\d+|\*)"))


def derive_chart(
    groups: tuple[GroupCode, ...],
    texts: dict[str, dict[str, str]],
    arch: Architecture,
    preserves: Callable[[tuple[StepCode, ...], StepCode, str], bool],
    fixes: Callable[[tuple[StepCode, ...], StepCode], int],
) -> tuple[StepCode, ...]:
    """The chart's steps in order; ChartError when some group has no anchor or no order works.

    A step may come before a group that also moves its anchor only if that group maps the step's
    slice into itself (``preserves(steps, step, group)``, checked numerically by the caller at
    the chart point of the steps so far): then fixing
    the later gauges never undoes the earlier ones, and the composite is a function of the orbit.
    Among a group's anchors, those where it fixes the most entries after the steps so far
    (``fixes(steps, step)``) come first: a norm bias folded to zero leaves nothing to fix on the
    reader biases, but everything on the reader weights. A negative count rules an anchor out
    (a translation that moves it nonlinearly).
    """
    remaining = [g for g in groups if g.kind != "permutation"]
    candidates = {g.name: candidate_steps(g, texts[g.name], arch) for g in remaining}
    missing = [g.name for g in remaining if not candidates[g.name]]
    if missing:
        raise ChartError(f"no anchor the chart can fix for: {', '.join(missing)}")
    steps: list[StepCode] = []
    movers = _Reach(groups, arch.layers)
    while remaining:
        ranked = _Ranked(candidates, functools.partial(fixes, tuple(steps)))
        chosen = _next_step(
            movers,
            remaining,
            ranked,
            functools.partial(preserves, tuple(steps)),
            functools.partial(fixes, tuple(steps)),
        )
        if chosen is None:
            names = ", ".join(g.name for g in remaining)
            raise ChartError(f"no order fixes these groups one anchor at a time: {names}")
        steps.append(chosen)
        remaining = [g for g in remaining if g.name not in chosen.groups]
    return tuple(steps)


class _Ranked(dict):
    """A group's candidates, those that fix the most entries first (negative counts dropped),
    ranked when first asked for: each count is a canonicalization, and the search usually
    settles on one of the first groups."""

    def __init__(self, candidates: dict[str, list[StepCode]], fixes: Callable[[StepCode], int]):
        super().__init__()
        self._candidates, self._fixes = candidates, fixes

    def __missing__(self, name: str) -> list[StepCode]:
        counts = {step: self._fixes(step) for step in self._candidates[name]}
        self[name] = sorted((s for s in counts if counts[s] >= 0), key=lambda s: -counts[s])
        return self[name]


def _next_step(
    movers: _Reach,
    remaining: list[GroupCode],
    candidates: dict[str, list[StepCode]],
    preserves: Callable[[StepCode, str], bool],
    fixes: Callable[[StepCode], int],
) -> StepCode | None:
    """The next step: the first (group, anchor) that fixes something and whose slice every
    other remaining group preserves (translations that share their anchor with another
    remaining translation wait); then a joint step over translations that share anchors; then
    a group that fixes nothing new (its directions are all shared with groups fixed before)."""
    for group in remaining:
        for step in candidates[group.name]:
            if _shared_translation(movers, step, remaining):
                continue  # overlapping translations are fixed jointly, below
            if fixes(step) > 0 and _acceptable(movers, step, remaining, preserves):
                return step
    for step in _joint_translations(movers, remaining, candidates):
        if fixes(step) >= 0 and _acceptable(movers, step, remaining, preserves):
            return step
    for group in remaining:
        for step in candidates[group.name]:
            if _acceptable(movers, step, remaining, preserves):
                return step
    return None


def _shared_translation(movers: _Reach, step: StepCode, remaining: list[GroupCode]) -> bool:
    """A translation step whose anchor another remaining translation also moves."""
    return step.kind == "translation" and any(
        o.kind == "translation"
        and o.name != step.group
        and movers.moves(o, step.anchor, step.group)
        for o in remaining
    )


def _acceptable(movers: _Reach, step: StepCode, remaining, preserves) -> bool:
    owned = tuple(zip(step.groups, step.anchors, strict=True))
    moving = {
        o.name
        for o in remaining
        if o.name not in step.groups
        and any(movers.moves(o, anchor, owner) for owner, anchor in owned)
    }
    return all(preserves(step, other) for other in sorted(moving))


def _joint_translations(movers: _Reach, remaining: list[GroupCode], candidates) -> list[StepCode]:
    """One joint step per cluster of translations (same units) that move each other's anchors."""
    translations = [g for g in remaining if g.kind == "translation"]
    clusters: list[list[GroupCode]] = []
    for g in translations:
        linked = [
            c
            for c in clusters
            if c[0].per == g.per
            and c[0].layers == g.layers
            and any(
                _touches(movers, g, h, candidates) or _touches(movers, h, g, candidates) for h in c
            )
        ]
        merged = [g] + [h for c in linked for h in c]
        clusters = [c for c in clusters if c not in linked] + [merged]
    out = []
    for cluster in clusters:
        if len(cluster) < 2:
            continue
        cluster.sort(key=lambda g: translations.index(g))
        first, *rest = cluster
        linear = {
            g.name: [s for s in candidates[g.name] if s.kind == "translation"] for g in cluster
        }
        if any(not steps for steps in linear.values()):
            continue
        head = linear[first.name][0]
        joint = tuple((g.name, linear[g.name][0].anchor) for g in rest)
        out.append(StepCode(first.name, "translation", head.anchor, "right", "E", 0.0, joint))
    return out


def _touches(movers: _Reach, g: GroupCode, h: GroupCode, candidates) -> bool:
    """Whether g moves one of h's candidate anchors."""
    return any(movers.moves(g, step.anchor, h.name) for step in candidates[h.name])
