"""Geometry of a model for geodesic sharpness: the flat parameter vector, and the index layout
of its GL(k) pairs (per attention head ``G = [W_Q; b_Q]``, ``H = [W_K; b_K]`` and ``G = [W_V;
b_V]``, ``H = W_Oᵀ``) that the invariant metrics of :mod:`.metric` read, found from the pair
groups' actions (``gauge.view``). A generated package binds these to its own pairs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from . import actions as gauge
from .actions import Group
from .metric import Geometry, _sylvester_pair

# the GL(k) pair groups of a model: (group, ((parameter pattern, factor G or H, read transposed),
# ...)), hashable so that the index layouts can be cached per model shape
Pairs = tuple[tuple[Group, tuple[tuple[str, str, bool], ...]], ...]


def pair_groups(groups: Mapping[str, Group], pairs: Mapping[str, Mapping[str, tuple[str, bool]]]):
    """``Pairs`` from a package's tables: group name -> {pattern: (factor, transposed)}."""
    return tuple(
        (groups[name], tuple((t, f, tr) for t, (f, tr) in roles.items()))
        for name, roles in pairs.items()
    )


def flat_parameters(model: nn.Module) -> Tensor:
    """The model's parameters, in ``named_parameters`` order, as one flat float64 vector."""
    return torch.cat([p.detach().to(torch.float64).reshape(-1) for p in model.parameters()])


def unflatten(model: nn.Module, theta: Tensor) -> dict[str, Tensor]:
    """Named views of the flat vector ``theta`` (inverse of :func:`flat_parameters`)."""
    out, start = {}, 0
    for name, p in model.named_parameters():
        out[name] = theta[start : start + p.numel()].view(p.shape)
        start += p.numel()
    return out


def pair_indices(
    model: nn.Module, pairs: Pairs, names: list[str] | None = None
) -> list[tuple[Tensor, Tensor]]:
    """``(index_G, index_H)`` stacks into the flat vector of the parameters ``names`` (all of
    them, in ``named_parameters`` order, by default), one per shape of pair, every unit of every
    GL(k) pair group of the model."""
    shapes = _shapes(model)
    names = [name for name, _ in shapes] if names is None else names
    shape_of = dict(shapes)
    return _pair_indices(pairs, tuple((name, shape_of[name]) for name in names), _sizes(model))


def _shapes(model: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


def _sizes(model: nn.Module) -> tuple:
    return tuple(sorted(gauge.as_sizes(model.sizes).items()))


def _pair_members(pairs: Pairs, shapes, sizes: tuple) -> list[list[tuple[str, str, Tensor]]]:
    """Every unit of every GL(k) pair group, as its members ``(factor, parameter, block)``:
    the block's flat indices into the parameter (transposed where the factor reads it so), the
    G members first, each factor's in the order the action lists them."""
    S, shape_of, names = dict(sizes), dict(shapes), [name for name, _ in shapes]
    out = []
    for group, members_of in pairs:
        roles = {t: (f, tr) for t, f, tr in members_of}
        for unit in gauge.units(group, S):
            members = []
            for act, target, _, block, _ in gauge._contexts(group, names, unit, S):
                numbered = torch.arange(math.prod(shape_of[target]), dtype=torch.float64)
                numbered = numbered.reshape(shape_of[target])
                index = gauge.view(group, {target: numbered}, unit, target, S, block)
                factor, transposed = roles[act.target]
                members.append((factor, target, (index.T if transposed else index).round().long()))
            members.sort(key=lambda member: member[0])  # stable: G, then H
            out.append(members)
    return out


@functools.lru_cache(maxsize=16)
def _pair_indices(
    pairs: Pairs, shapes: tuple[tuple[str, tuple[int, ...]], ...], sizes: tuple
) -> list:
    offsets, start = {}, 0
    for name, shape in shapes:
        offsets[name] = start
        start += math.prod(shape)
    stacks: dict[tuple, tuple[list[Tensor], list[Tensor]]] = {}
    for members in _pair_members(pairs, shapes, sizes):
        G, H = (
            torch.cat([index + offsets[t] for f, t, index in members if f == factor])
            for factor in ("G", "H")
        )
        stack = stacks.setdefault((G.shape, H.shape), ([], []))
        stack[0].append(G)
        stack[1].append(H)
    return [(torch.stack(Gs), torch.stack(Hs)) for Gs, Hs in stacks.values()]


def project_heads(
    model: nn.Module, pairs: Pairs, update: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """The per-head least-squares projection of ``update`` (name -> tensor) at the model's
    parameters: ``geometry(model, "euclidean").project`` restricted to the parameters the pairs
    move (the others come back as they are), so that its cost is that of the heads alone. It
    runs in the parameters' dtype (float64 for a float64 model), on strided views of the
    weights (no index gathers) when every unit's block is a strided slice of its parameter."""
    names, layout = _pair_views(pairs, _shapes(model), _sizes(model))
    if not names:
        return dict(update)
    if layout is None:
        return _project_heads_gathered(model, pairs, update, names)
    params = dict(model.named_parameters())
    dtype = params[names[0]].dtype
    out = dict(update)
    written: dict[str, Tensor] = {}
    for G_views, H_views in layout:
        G, H = _read(params, G_views, dtype), _read(params, H_views, dtype)
        x_G, x_H = _read(update, G_views, dtype), _read(update, H_views, dtype)
        Gt, Ht = G.transpose(-1, -2), H.transpose(-1, -2)
        omega = _sylvester_pair(Gt @ G, Ht @ H, Gt @ x_G - x_H.transpose(-1, -2) @ H)
        _write(out, written, G_views, x_G - G @ omega)
        _write(out, written, H_views, x_H + H @ omega.transpose(-1, -2))
    return out


View = tuple[str, tuple[int, ...], tuple[int, ...], int]  # (parameter, size, stride, offset)


@functools.lru_cache(maxsize=16)
def _pair_views(
    pairs: Pairs, shapes, sizes: tuple
) -> tuple[list[str], list[tuple[list[View], list[View]]] | None]:
    """The parameters the pairs move (in ``named_parameters`` order) and, per stack of units
    with the same members, the G and H members as strided views ``(name, (units, rows, k),
    strides, offset)``; the layout is None when some block is not a strided slice."""
    every = _pair_members(pairs, shapes, sizes)
    moved = {target for members in every for _, target, _ in members}
    names = [name for name, _ in shapes if name in moved]
    stacks: dict[tuple, list[list[Tensor]]] = {}
    for members in every:
        key = tuple((factor, target, tuple(index.shape)) for factor, target, index in members)
        stacks.setdefault(key, []).append([index for _, _, index in members])
    layout = []
    for key, per_unit in stacks.items():
        views: dict[str, list[View]] = {"G": [], "H": []}
        for position, (factor, target, _) in enumerate(key):
            strided = _strided(torch.stack([indices[position] for indices in per_unit]))
            if strided is None:
                return names, None
            views[factor].append((target, *strided))
        layout.append((views["G"], views["H"]))
    return names, layout


def _strided(index: Tensor) -> tuple[tuple[int, ...], tuple[int, ...], int] | None:
    """(size, stride, offset) when ``index[u, i, j] = offset + u s_u + i s_i + j s_j``."""
    offset = int(index[0, 0, 0])
    stride = tuple(
        int(index.narrow(d, 1, 1).reshape(-1)[0]) - offset if index.shape[d] > 1 else 0
        for d in range(3)
    )
    grid = torch.meshgrid(*(torch.arange(n) for n in index.shape), indexing="ij")
    expected = offset + sum(g * s for g, s in zip(grid, stride, strict=True))
    return (tuple(index.shape), stride, offset) if torch.equal(index, expected) else None


def _read(tensors: Mapping[str, Tensor], views: list[View], dtype: torch.dtype) -> Tensor:
    """The members' blocks side by side (rows of G or H), in ``dtype``."""
    parts = []
    for name, size, stride, offset in views:
        t = tensors[name].detach().contiguous()
        parts.append(t.as_strided(size, stride, t.storage_offset() + offset).to(dtype))
    return torch.cat(parts, dim=1)


def _write(out: dict[str, Tensor], written: dict[str, Tensor], views: list[View], value: Tensor):
    row = 0
    for name, size, stride, offset in views:
        if name not in written:  # a copy of the update, written in place from here on
            written[name] = out[name].detach().clone(memory_format=torch.contiguous_format)
            out[name] = written[name]
        t = written[name]
        t.as_strided(size, stride, t.storage_offset() + offset).copy_(value[:, row : row + size[1]])
        row += size[1]


def _project_heads_gathered(
    model: nn.Module, pairs: Pairs, update: Mapping[str, Tensor], names: list[str]
):
    """:func:`project_heads` through the flat vector's index stacks (any block layout)."""
    params = dict(model.named_parameters())
    dtype = params[names[0]].dtype
    theta = torch.cat([params[n].detach().to(dtype).reshape(-1) for n in names])
    x = torch.cat([update[n].to(dtype).reshape(-1) for n in names])
    flat = Geometry(theta, pair_indices(model, pairs, names), "euclidean").project(x, inplace=True)
    out = dict(update)
    for name, part in zip(names, flat.split([params[n].numel() for n in names]), strict=True):
        out[name] = part.view(update[name].shape).to(update[name].dtype)
    return out


def geometry(
    model: nn.Module, pairs: Pairs, metric: str = "inv", *, second_order: bool = True
) -> Geometry:
    """The metric ``metric`` frozen at the model's parameters (see :class:`.metric.Geometry`);
    ``geometry(model, "euclidean").project(update)`` is the per-head projection of an update."""
    indices = pair_indices(model, pairs) if metric != "elementwise" else []
    return Geometry(flat_parameters(model), indices, metric, second_order=second_order)
