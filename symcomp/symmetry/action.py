"""Numerical action of a custom symmetry group on a model's parameters.

A :class:`~symcomp.spec.model.CustomGroup` declares, for each parameter it moves, the new value as
an expression (:mod:`symcomp.lang`). This module evaluates those expressions on float64
torch tensors, with the semantics of :mod:`symcomp.spec.groups`:

- :func:`units` lists the copies of the group (one per model, layer, key/value head, query head
  or MLP neuron);
- :func:`random_element` draws one element per unit, respecting ``commutes_with: [rope]``,
  ``fixes: [ones]`` and ``positive``;
- :func:`apply_group` moves the parameters by those elements (each unit's actions evaluated on
  the values before that unit, then written; units one after another);
- :func:`lie_algebra_basis` and :func:`vertical_vectors` give the infinitesimal action: the
  tangent directions of the group orbit through a point, which must lie in the null space of the
  Jacobian of the log-probabilities when the group is a symmetry.

Everything is functional (new tensors, no in-place writes), so :func:`apply_group` can be
differentiated (:mod:`symcomp.symmetry.ad`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from symcomp_runtime import actions
from symcomp_runtime.errors import ActionError as RuntimeActionError
from torch import Tensor

from symcomp.ir.graph import Graph, build_graph
from symcomp.ir.interpreter import KERNELS
from symcomp.lang import evaluate_size_int, parse_expr
from symcomp.spec.model import DEFAULT_ELEMENT, Architecture, CustomGroup, Spec
from symcomp.spec.params import parameter_shapes, sizes_of
from symcomp.symmetry.ad import jacobian_columns
from symcomp.symmetry.engine import ActionError, bind

DTYPE = torch.float64
MATRIX_GROUPS = ("GL", "O", "SO", "permutation")


# --- units ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One copy of a group: ``layer`` (None per model) and ``index`` (the head, kv head or
    neuron; None per model and per layer)."""

    scope: str
    layer: int | None = None
    index: int | None = None

    def __str__(self) -> str:
        if self.layer is None:
            return "model"
        if self.index is None:
            return f"layer {self.layer}"
        return f"layer {self.layer} {self.scope.replace('_', ' ')} {self.index}"


def _arch(spec: Spec | Architecture) -> Architecture:
    return spec.architecture if isinstance(spec, Spec) else spec


def units(group: CustomGroup, arch: Spec | Architecture) -> list[Unit]:
    """The copies of ``group``: 1 per model; each layer (restricted by ``layers``); each (layer,
    kv head), (layer, head) or (layer, neuron)."""
    arch = _arch(arch)
    if group.per == "model":
        return [Unit("model")]
    engine_units = actions.units(bind(group, arch), sizes_of(arch).as_dict())
    return [Unit(group.per, layer, index) for layer, index in engine_units]


def group_size(group: CustomGroup, arch: Spec | Architecture) -> int:
    """The element's size n."""
    if isinstance(group.size, int):
        return group.size
    return evaluate_size_int(parse_expr(group.size), sizes_of(_arch(arch)).as_dict())


def element_name(group: CustomGroup) -> str:
    return group.element or DEFAULT_ELEMENT[group.group]


def identity_element(group: CustomGroup, arch: Spec | Architecture) -> Tensor:
    n = group_size(group, arch)
    if group.group in MATRIX_GROUPS:
        return torch.eye(n, dtype=DTYPE)
    if group.group == "scaling":
        return torch.ones(1, n, dtype=DTYPE)
    return torch.zeros(1, n, dtype=DTYPE)


# --- restrictions: RoPE commutant, fixed ones -------------------------------------------------


def rope_rotations(arch: Spec | Architecture, graph: Graph | None = None) -> Tensor:
    """(positions, k, k): the rotation R_p of one head's features at each position p, for row
    vectors (x -> x R_p), computed with the interpreter's own rope kernel."""
    arch = _arch(arch)
    graph = graph if graph is not None else build_graph(arch)
    op = next((op for op in graph.ops if op.kind == "rope"), None)
    if op is None:
        raise ActionError("commutes_with: rope on a model without rotary positions")
    k, T = graph.sizes.head_width, arch.max_positions
    basis = torch.eye(k, dtype=DTYPE)[:, None, :].expand(k, T, k).contiguous()
    out = KERNELS["rope"](op, basis)  # out[a, p] = e_a R_p
    return out.permute(1, 0, 2).contiguous()


def _rope_operators(n: int, arch: Architecture, graph: Graph | None) -> Tensor:
    R = rope_rotations(arch, graph)
    k = R.shape[-1]
    if n % k:
        raise ActionError(f"commutes_with: rope needs a size that is a multiple of {k}, not {n}")
    eye = torch.eye(n // k, dtype=DTYPE)
    return torch.stack([torch.kron(eye, r) for r in R])


def _null_space(M: Tensor, tol: float = 1e-9) -> Tensor:
    """Orthonormal rows spanning {v : M v = 0}."""
    if M.shape[0] == 0:
        return torch.eye(M.shape[1], dtype=DTYPE)
    _, S, Vh = torch.linalg.svd(M, full_matrices=True)
    scale = float(S.max()) if S.numel() else 1.0
    cut = tol * max(scale, 1.0)
    rank = int(torch.count_nonzero(S.ge(cut)))
    return Vh[rank:]


def _matrix_constraints(group: CustomGroup, n: int, arch: Architecture, graph: Graph | None):
    """Linear maps X -> residual whose common kernel is the Lie algebra (n x n matrices)."""
    maps: list[Callable[[Tensor], Tensor]] = []
    if group.group in ("O", "SO"):
        maps.append(lambda X: X + X.T)
    if "ones" in group.fixes:
        ones = torch.ones(1, n, dtype=DTYPE)
        maps.append(lambda X: ones @ X)
    if "rope" in group.commutes_with:
        R = _rope_operators(n, arch, graph)
        maps.append(lambda X: R @ X - X @ R)
    return maps


def lie_algebra_basis(
    group: CustomGroup, arch: Spec | Architecture, graph: Graph | None = None
) -> Tensor:
    """A basis of the group's Lie algebra: (dim, n, n) for matrix groups, (dim, n) for scaling
    and translation (the directions of s or t); dimension 0 for permutations."""
    arch = _arch(arch)
    n = group_size(group, arch)
    if group.group == "permutation":
        return torch.zeros(0, n, n, dtype=DTYPE)
    if group.group in ("scaling", "translation"):
        if not group.commutes_with:
            return torch.eye(n, dtype=DTYPE)
        R = _rope_operators(n, arch, graph)
        if group.group == "translation":  # t R_p = t
            M = (R - torch.eye(n, dtype=DTYPE)).transpose(1, 2).reshape(-1, n)
        else:  # diag(x) commutes with R_p
            M = torch.stack(
                [
                    (R @ torch.diag(e) - torch.diag(e) @ R).reshape(-1)
                    for e in torch.eye(n, dtype=DTYPE)
                ],
                1,
            )
        return _cleanup(_null_space(M))
    maps = _matrix_constraints(group, n, arch, graph)
    E = torch.eye(n * n, dtype=DTYPE).reshape(n * n, n, n)
    if not maps:
        return E
    if group.group in ("O", "SO") and len(maps) == 1:
        i, j = torch.triu_indices(n, n, 1)
        return E.reshape(n, n, n, n)[i, j] - E.reshape(n, n, n, n)[j, i]
    columns = [torch.cat([f(X).reshape(-1) for f in maps]) for X in E]
    basis = _null_space(torch.stack(columns, 1))
    return _cleanup(basis).reshape(-1, n, n)


def _cleanup(basis: Tensor) -> Tensor:
    """Zero the round-off entries of a numerical basis (keeps it exact where it is sparse)."""
    return torch.where(basis.abs() < 1e-13, torch.zeros_like(basis), basis)


# --- random elements --------------------------------------------------------------------------


def _haar_orthogonal(n: int, generator: torch.Generator) -> Tensor:
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=DTYPE))
    return Q * torch.sign(torch.diagonal(R))[None, :]


def _well_conditioned(n: int, generator: torch.Generator) -> Tensor:
    U, V = _haar_orthogonal(n, generator), _haar_orthogonal(n, generator)
    s = 0.5 * 4.0 ** torch.rand(n, generator=generator, dtype=DTYPE)  # in [0.5, 2]
    return U @ torch.diag(s) @ V


def _combination(basis: Tensor, generator: torch.Generator, scale: float) -> Tensor:
    c = torch.randn(basis.shape[0], generator=generator, dtype=DTYPE)
    c = c / max(1.0, math.sqrt(basis.shape[0]))  # Frobenius norm about ``scale``
    return scale * torch.einsum("i,i...->...", c, basis)


def random_element(
    group: CustomGroup,
    arch: Spec | Architecture,
    generator: torch.Generator,
    graph: Graph | None = None,
) -> Tensor:
    """One random element of the group (for one unit): n x n, or a 1 x n row for scaling and
    translation."""
    arch = _arch(arch)
    n = group_size(group, arch)
    kind = group.group
    restricted = bool(group.commutes_with or group.fixes)
    if kind == "permutation":
        perm = torch.randperm(n, generator=generator)
        return torch.eye(n, dtype=DTYPE)[perm]
    if kind == "translation":
        return _combination(lie_algebra_basis(group, arch, graph), generator, 1.0)[None, :]
    if kind == "scaling":
        if group.commutes_with:
            x = _combination(lie_algebra_basis(group, arch, graph), generator, 0.5)
            return torch.exp(x)[None, :]
        s = 0.5 * 4.0 ** torch.rand(1, n, generator=generator, dtype=DTYPE)
        if not group.positive:
            s = s * torch.where(torch.rand(1, n, generator=generator) < 0.5, -1.0, 1.0)
        return s
    if not restricted:
        if kind == "GL":
            return _well_conditioned(n, generator)
        Q = _haar_orthogonal(n, generator)
        if kind == "SO" and torch.linalg.det(Q) < 0:
            Q = torch.cat([-Q[:, :1], Q[:, 1:]], dim=1)
        return Q
    if kind in ("O", "SO") and not group.commutes_with:  # fixes ones: rotate the complement of 1
        u = torch.full((n, 1), 1.0 / math.sqrt(n), dtype=DTYPE)
        B = _null_space(u.T).T  # n x (n - 1), orthonormal, 1 B = 0
        R = _haar_orthogonal(n - 1, generator)
        if kind == "SO" and torch.linalg.det(R) < 0:
            R = torch.cat([-R[:, :1], R[:, 1:]], dim=1)
        return u @ u.T + B @ R @ B.T
    basis = lie_algebra_basis(group, arch, graph)
    if kind in ("O", "SO"):
        return torch.linalg.matrix_exp(_combination(basis, generator, 1.0))
    for _ in range(100):  # GL: I + 0.3 * a random element of the algebra, well conditioned
        A = torch.eye(n, dtype=DTYPE) + _combination(basis, generator, 0.3 * math.sqrt(n))
        S = torch.linalg.svdvals(A)
        if S.min() > 0.25 and S.max() / S.min() < 20:
            return A
    raise ActionError(f"no well-conditioned random element of {group.name}")  # pragma: no cover


def random_elements(
    group: CustomGroup,
    arch: Spec | Architecture,
    generator: torch.Generator,
    graph: Graph | None = None,
) -> list[Tensor]:
    """One random element per unit, in the order of :func:`units`."""
    return [random_element(group, arch, generator, graph) for _ in units(group, arch)]


# --- the action -------------------------------------------------------------------------------


def _apply_pairs(
    bound: actions.Group,
    S: Mapping[str, int],
    params: Mapping[str, Tensor],
    pairs: Sequence[tuple[Unit, Tensor]],
) -> dict[str, Tensor]:
    """``params`` moved by each (unit, element) in turn, through the runtime's engine (``bound``:
    the group bound once, :func:`symcomp.symmetry.engine.bind`)."""
    state = {name: p.to(DTYPE) for name, p in params.items()}
    try:
        for unit, element in pairs:
            state = actions.apply(bound, state, (unit.layer, unit.index), element.to(DTYPE), S)
    except (RuntimeActionError, KeyError) as exc:
        raise ActionError(f"{bound.name}: {exc}") from None
    return state


def apply_group(
    group: CustomGroup,
    arch: Spec | Architecture,
    params: Mapping[str, Tensor],
    elements: Sequence[Tensor] | Mapping[Unit, Tensor],
) -> dict[str, Tensor]:
    """New parameters: ``params`` moved by one element per unit (a sequence in the order of
    :func:`units`, or a mapping from some units to their elements; the others stay put)."""
    arch = _arch(arch)
    if isinstance(elements, Mapping):
        pairs = list(elements.items())
    else:
        all_units = units(group, arch)
        if len(elements) != len(all_units):
            raise ActionError(f"{group.name}: {len(all_units)} units, {len(elements)} elements")
        pairs = list(zip(all_units, elements, strict=True))
    return _apply_pairs(bind(group, arch), sizes_of(arch).as_dict(), params, pairs)


# --- the infinitesimal action -----------------------------------------------------------------


def vertical_vectors(
    group: CustomGroup,
    arch: Spec | Architecture,
    graph: Graph | None,
    params: Mapping[str, Tensor],
) -> Tensor:
    """(total parameters, units x Lie algebra dimension): the derivative at eps = 0 of the action
    of ``I + eps X`` (``1 + eps x`` for scaling, ``eps x`` for translation) on one unit, for each
    unit and each basis element X, by forward-mode AD. Parameters flattened in the order of
    :func:`parameter_shapes`."""
    arch = _arch(arch)
    order = [name for name in parameter_shapes(arch) if name in params]
    params = {name: params[name].to(DTYPE) for name in order}
    total = sum(p.numel() for p in params.values())
    basis = lie_algebra_basis(group, arch, graph)
    if basis.shape[0] == 0:
        return torch.zeros(total, 0, dtype=DTYPE)
    base = identity_element(group, arch)
    directions = basis if basis.ndim == 3 else basis[:, None, :]
    bound, S = bind(group, arch), sizes_of(arch).as_dict()  # once: every column replays it
    columns = []
    for unit in units(group, arch):

        def moved(xi: Tensor, unit: Unit = unit) -> Tensor:
            new = _apply_pairs(bound, S, params, [(unit, base + xi)])
            return torch.cat([new[name].reshape(-1) for name in order])

        columns.append(jacobian_columns(moved, torch.zeros_like(directions[0]), directions).T)
    return torch.cat(columns, dim=1)
