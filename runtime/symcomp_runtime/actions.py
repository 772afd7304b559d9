"""The torch backend of the group-action engine: what a group does to a model's parameters.

Everything here is generic: ``groups.py`` lists this model's groups and their actions (rendered
by symcomp from the spec language), ``reduced.py`` lists the gauge-fixing steps. Conventions:

- a parameter is handled as a 2-D matrix (a vector is a 1 x n row);
- a unit is one copy of a group: ``(layer, index)``, ``layer`` None per model, ``index`` the
  kv head, head or neuron (None per layer);
- an element is n x n (``GL``, ``O``, ``SO``, ``permutation``) or a 1 x n row (``scaling``,
  ``translation``).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ActionError
from .layers import HEAD_SLICED, NEURON_SLICED, Q_SLICED, RELATIVE, at_layer, unit_layers

# --- the expression helpers the rendered actions call -----------------------------------------


def mm(a: Tensor | float, b: Tensor | float) -> Tensor:
    """Matrix product; a 1 x 1 (or python number) operand scales."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        return a * b  # type: ignore[operator, return-value]
    if a.shape == (1, 1) or b.shape == (1, 1):
        return a * b
    if a.dtype != b.dtype:  # a size-built constant (float64) meets a parameter
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
    return a @ b


def inv(a: Tensor) -> Tensor:
    return 1.0 / a if a.shape == (1, 1) else torch.linalg.inv(a)


def T(a: Tensor) -> Tensor:  # the spec language's transpose
    return a.mT


def diag(v: Tensor) -> Tensor:
    return torch.diag(v.reshape(-1))


def kron(a: Tensor, b: Tensor) -> Tensor:
    return torch.kron(a, b)


def sqrt(a: Tensor) -> Tensor:
    return torch.sqrt(a)


def total(a: Tensor) -> Tensor:
    return a.sum().reshape(1, 1)


_DTYPE = {"dtype": torch.float64}


def ones(n: int) -> Tensor:
    return torch.ones(1, n, **_DTYPE)


def eye(n: int) -> Tensor:
    return torch.eye(n, **_DTYPE)


def unit(n: int, i: int) -> Tensor:
    """The 1 x n row with a one at index i: one row of a table."""
    return torch.eye(n, **_DTYPE)[i : i + 1]


def as_sizes(sizes: object) -> dict[str, int]:
    """An instance's sizes as a dict (``Model.sizes`` is a dataclass)."""
    return dict(sizes) if isinstance(sizes, Mapping) else dict(vars(sizes))


def rotary_width(rope: Mapping[str, object], S: Mapping[str, int]) -> int:
    return int(S["head_width"] * float(rope["fraction"]))  # type: ignore[arg-type]


# --- groups -----------------------------------------------------------------------------------

Sizes = Mapping[str, int]
Params = Mapping[str, Tensor]
Unit = tuple[int | None, int | None]

_LAYER = re.compile(r"^layers\.(\d+)\.")


@dataclass(frozen=True)
class Act:
    """How a group moves one parameter: ``fn(v, element, S)`` gives its new 2-D value. ``form``
    is (side, f(E), offset) when the move is ``(c + X) f(E) - c`` (right) or ``f(E) X`` (left),
    X the parameter itself: then its Gram matrix is known in closed form. ``shift`` says the
    move is ``X + g(E)`` with ``g`` reading no parameter (the same from every point)."""

    target: str
    fn: Callable[..., Tensor]
    text: str
    form: tuple[str, str, float] | None = None
    shift: bool = False


@dataclass(frozen=True)
class Group:
    """A symmetry group of the model, as declared in (or derived for) the spec."""

    name: str
    catalogue_id: str
    kind: str  # GL, O, SO, scaling, translation, permutation
    per: str  # model, layer, kv_head, head, neuron
    size: Callable[[Sizes], int]
    acts: tuple[Act, ...]
    positive: bool = False
    fixes_ones: bool = False
    commutes_with_rope: bool = False
    layers: tuple[int, ...] | None = None  # the units' layers (negative: from the end); None: all
    reach: tuple[int, int] = (0, 0)  # offsets of its relative layer references ({i-1}, {i+1})

    @property
    def continuous(self) -> bool:
        return self.kind != "permutation"

    @property
    def is_matrix(self) -> bool:
        return self.kind in ("GL", "O", "SO", "permutation")


def units(group: Group, S: Sizes) -> list[Unit]:
    """The copies of ``group`` in an instance with sizes ``S``."""
    if group.per == "model":
        return [(None, None)]
    layers = unit_layers(group.layers, group.reach, S["layers"])
    count = {"layer": 0, "kv_head": S["kv_heads"], "head": S["heads"], "neuron": S["hidden"]}
    if group.per == "layer":
        return [(layer, None) for layer in layers]
    return [(layer, i) for layer in layers for i in range(count[group.per])]


def _local(path: str) -> str | None:
    return _LAYER.sub("", path) if _LAYER.match(path) else None


def _targets(pattern: str, layer: int | None, names: list[str]) -> list[str]:
    return list(_targets_cached(pattern, layer, tuple(names)))


@functools.lru_cache(maxsize=8192)
def _targets_cached(pattern: str, layer: int | None, names: tuple[str, ...]) -> tuple[str, ...]:
    # a relative reference names one layer; ``*`` and an absolute index, the unit's layer only
    relative = layer is not None and RELATIVE.match(pattern) is not None
    regex = re.compile(re.escape(at_layer(pattern, layer)).replace(r"\*", r"\d+"))
    out = []
    for name in names:
        m = _LAYER.match(name)
        mine = relative or layer is None or m is None or int(m.group(1)) == layer
        if mine and regex.fullmatch(name):
            out.append(name)
    return tuple(out)


def _slicing(group: Group, unit: Unit, S: Sizes) -> tuple[tuple[int, ...], int | None, int | None]:
    """(query-head blocks, kv-head block, neuron) that ``unit`` sees."""
    _, index = unit
    per_kv = S["heads"] // S["kv_heads"]
    if group.per == "kv_head":
        return tuple(range(index * per_kv, (index + 1) * per_kv)), index, None
    if group.per == "head":
        return (index,), index // per_kv, None
    if group.per == "neuron":
        return (), None, index
    return (), None, None


def _cut(group: Group, local: str | None, S: Sizes) -> tuple[int, int] | None:
    """(axis, block width) of a parameter that the unit cuts, None for a whole one."""
    if group.per in ("kv_head", "head") and local in HEAD_SLICED:
        return HEAD_SLICED[local], S["head_width"]
    if group.per == "neuron" and local in NEURON_SLICED:
        return NEURON_SLICED[local], 1
    return None


def _blocks(group: Group, local: str | None, sl: tuple) -> tuple[int, ...]:
    q_blocks, kv_block, neuron = sl
    if group.per in ("kv_head", "head") and local in HEAD_SLICED:
        return q_blocks if local in Q_SLICED else (kv_block,)
    if group.per == "neuron" and local in NEURON_SLICED:
        return (neuron,)
    return ()


class TorchBackend:
    """The engine's operations on torch tensors: the values a generated package moves. Another
    backend (symcomp's SymPy matrices, for the exact proofs) supplies the same five."""

    @staticmethod
    def matrix(value: Tensor) -> Tensor:
        """The 2-D form of a parameter (a vector is a 1 x n row)."""
        return value[None, :] if value.ndim == 1 else value

    @staticmethod
    def narrow(value: Tensor, axis: int, start: int, width: int) -> Tensor:
        return value.narrow(axis, start, width)

    @staticmethod
    def cat(parts: Sequence[Tensor], axis: int) -> Tensor:
        return torch.cat(list(parts), dim=axis)

    @staticmethod
    def fill(new: Tensor, shape: tuple[int, ...]) -> Tensor:
        """An action's value in the shape it replaces (a 1 x 1 value broadcasts)."""
        return new.expand(shape) if new.numel() == 1 and tuple(new.shape) != shape else new

    @staticmethod
    def restore(value: Tensor, like: Tensor) -> Tensor:
        """A 2-D value back in the parameter's own shape."""
        return value.reshape(like.shape)


TORCH = TorchBackend()


def view(
    group: Group,
    params: Params,
    unit: Unit,
    path: str,
    S: Sizes,
    block: int | None = None,
    backend=TORCH,
):
    """The unit's 2-D view of ``path``: the whole matrix, or the sum of its blocks."""
    value = backend.matrix(params[path])
    local = _local(path)
    cut = _cut(group, local, S)
    if cut is None:
        return value
    axis, width = cut
    blocks = _blocks(group, local, _slicing(group, unit, S))
    if block is not None and local in Q_SLICED:
        blocks = (block,)
    out = backend.narrow(value, axis, blocks[0] * width, width)
    for b in blocks[1:]:
        out = out + backend.narrow(value, axis, b * width, width)
    return out


def _resolve(pattern: str, target: str, layer: int | None = None) -> str:
    """The parameter ``pattern`` names in the action on ``target`` of a unit at ``layer``."""
    m = _LAYER.match(target)
    pattern = at_layer(pattern, layer)
    return pattern.replace("layers.*.", m.group(0), 1) if m else pattern


def _contexts(group: Group, names: list[str], unit: Unit, S: Sizes):
    """(act, target, cut, block, start) for every parameter view the unit's action writes: one
    per target the act's pattern matches, and one per query block (``block``) where a kv-head
    unit sees several; ``start`` is the first written index along the cut axis."""
    sl = _slicing(group, unit, S)
    for act in group.acts:
        for target in _targets(act.target, unit[0], names):
            local = _local(target)
            cut = _cut(group, local, S)
            if cut is None:
                yield act, target, None, None, 0
            elif local in Q_SLICED:
                for block in sl[0]:
                    yield act, target, cut, block, block * cut[1]
            else:
                yield act, target, cut, None, _blocks(group, local, sl)[0] * cut[1]


def act_views(group: Group, params: Params, unit: Unit, S: Sizes) -> list[tuple[Act, Tensor]]:
    """(act, the 2-D view it moves) for every view the unit's action writes."""
    return [
        (act, view(group, params, unit, target, S, block))
        for act, target, _, block, _ in _contexts(group, list(params), unit, S)
    ]


def apply(group: Group, params: Params, unit: Unit, element, S: Sizes, backend=TORCH) -> dict:
    """New parameters: ``params`` moved by ``element`` acting as ``unit`` (functional). Every
    action of the unit reads the values before it; then all are written. ``backend`` says how to
    cut and join the values (torch tensors by default)."""
    writes = []
    for act, target, cut, block, start in _contexts(group, list(params), unit, S):

        def v(pattern: str, target: str = target, block: int | None = block):
            return view(group, params, unit, _resolve(pattern, target, unit[0]), S, block, backend)

        old = backend.matrix(params[target])
        shape = tuple(old.shape) if cut is None else _cut_shape(old.shape, cut)
        new = backend.fill(act.fn(v, element, S), shape)
        if tuple(new.shape) != shape:
            raise ActionError(
                f"{group.name}: the action on {target} gives {tuple(new.shape)}, not {shape}"
            )
        writes.append((target, cut, start, new))
    out = dict(params)
    for target, cut, start, new in writes:
        old = backend.matrix(out[target])
        if cut is None:
            value = new
        else:
            axis, width = cut
            rest = old.shape[axis] - start - width
            parts = (
                backend.narrow(old, axis, 0, start),
                new,
                backend.narrow(old, axis, start + width, rest),
            )
            value = backend.cat(parts, axis)
        out[target] = backend.restore(value, params[target])
    return out


def _cut_shape(shape, cut: tuple[int, int]) -> tuple[int, ...]:
    axis, width = cut
    return tuple(width if i == axis else n for i, n in enumerate(shape))


def apply_all(group: Group, params: Params, elements: Mapping[Unit, Tensor], S: Sizes):
    for unit, element in elements.items():
        params = apply(group, params, unit, element, S)
    return params


# --- Lie algebras -----------------------------------------------------------------------------


def rope_rotations(rope: Mapping[str, object], k: int, positions: int) -> Tensor:
    """(positions, k, k): the rotation of one head's features at each position (x -> x R_p)."""
    r = rotary_width(rope, {"head_width": k})
    freqs = 1.0 / float(rope["base"]) ** (torch.arange(0, r, 2, **_DTYPE) / r)
    angles = torch.arange(positions, **_DTYPE)[:, None] / float(rope["position_divisor"]) * freqs
    out = torch.eye(k, **_DTYPE).repeat(positions, 1, 1)
    half = r // 2
    for i in range(half):
        a, b = (i, i + half) if rope["pair_layout"] == "split_half" else (2 * i, 2 * i + 1)
        c, s = angles[:, i].cos(), angles[:, i].sin()
        out[:, a, a], out[:, a, b], out[:, b, a], out[:, b, b] = c, s, -s, c
    return out


def _null_space(M: Tensor, tol: float = 1e-9) -> Tensor:
    """Orthonormal rows spanning {x : M x = 0}."""
    if M.shape[0] == 0:
        return torch.eye(M.shape[1], **_DTYPE)
    _, sv, Vh = torch.linalg.svd(M, full_matrices=True)
    rank = int(torch.count_nonzero(sv > tol * max(float(sv.max()), 1.0)))
    basis = Vh[rank:]
    return torch.where(basis.abs() < 1e-13, torch.zeros_like(basis), basis)


def algebra_basis(group: Group, S: Sizes, rope: Mapping[str, object] | None) -> Tensor:
    """A basis of the Lie algebra: (dim, n, n), or (dim, 1, n) for scaling and translation."""
    n = group.size(S)
    if group.kind == "permutation":
        return torch.zeros(0, n, n, **_DTYPE)
    R = None
    if group.commutes_with_rope:
        rot = rope_rotations(rope, S["head_width"], S["positions"])  # type: ignore[arg-type]
        R = torch.stack([torch.kron(torch.eye(n // S["head_width"], **_DTYPE), r) for r in rot])
    if group.kind in ("scaling", "translation"):
        if R is None:
            return torch.eye(n, **_DTYPE)[:, None, :]
        E = torch.eye(n, **_DTYPE)
        if group.kind == "translation":  # t R_p = t
            M = (R - E).transpose(1, 2).reshape(-1, n)
        else:  # diag(x) commutes with every R_p
            M = torch.stack([(R @ torch.diag(e) - torch.diag(e) @ R).reshape(-1) for e in E], 1)
        return _null_space(M)[:, None, :]
    maps: list[Callable[[Tensor], Tensor]] = []
    if group.kind in ("O", "SO"):
        maps.append(lambda X: X + X.T)
    if group.fixes_ones:
        maps.append(lambda X: torch.ones(1, n, **_DTYPE) @ X)
    if R is not None:
        maps.append(lambda X: R @ X - X @ R)
    E = torch.eye(n * n, **_DTYPE).reshape(n * n, n, n)
    if not maps:
        return E
    M = torch.stack([torch.cat([f(X).reshape(-1) for f in maps]) for X in E], 1)
    return _null_space(M).reshape(-1, n, n)


def identity(group: Group, S: Sizes) -> Tensor:
    n = group.size(S)
    if group.is_matrix:
        return torch.eye(n, **_DTYPE)
    return (torch.ones if group.kind == "scaling" else torch.zeros)(1, n, **_DTYPE)


def random_element(group: Group, S: Sizes, rope, generator: torch.Generator) -> Tensor:
    """A random element near the identity (well conditioned), exp of a random algebra element
    for the matrix groups; a random permutation for permutations."""
    n = group.size(S)
    if group.kind == "permutation":
        perm = torch.randperm(n, generator=generator)
        if n > 1 and bool((perm == torch.arange(n)).all()):
            perm = perm.roll(1)  # never the identity: a test of the action must move something
        return torch.eye(n, **_DTYPE)[perm]
    basis = algebra_basis(group, S, rope)
    c = torch.randn(basis.shape[0], generator=generator, **_DTYPE) / math.sqrt(basis.shape[0])
    X = torch.einsum("i,i...->...", c, basis)
    if group.kind == "translation":
        return X
    if group.kind == "scaling":
        s = torch.exp(0.5 * X)
        if not group.positive and not group.commutes_with_rope:
            signs = torch.randint(0, 2, (1, n), generator=generator).to(s) * 2 - 1
            s = s * signs
        return s
    Q = torch.linalg.matrix_exp(0.8 * X)
    if group.kind == "O" and not group.fixes_ones and not group.commutes_with_rope:
        Q = Q * torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(Q)[:, None]
    return Q


def tangent(group: Group, params: Params, unit: Unit, X: Tensor, S: Sizes) -> dict[str, Tensor]:
    """The derivative at the identity of the action along the algebra direction ``X``."""
    base = identity(group, S)
    names = list(params)

    def moved(eps: Tensor) -> tuple[Tensor, ...]:
        new = apply(group, params, unit, base + eps * X, S)
        return tuple(new[name] for name in names)

    zero = torch.zeros((), dtype=X.dtype)
    _, out = torch.func.jvp(moved, (zero,), (torch.ones((), dtype=X.dtype),))
    return dict(zip(names, out, strict=True))
