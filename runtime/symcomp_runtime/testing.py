"""The checks behind every generated package's ``test_invariance.py``.

A generated test binds one of these to its package (its ``Model``, groups, chart, reduced model,
tolerances) and pytest reports it under the property's name. Each check raises
``AssertionError`` with the gap it measured when the property fails, and ``unittest.SkipTest``
(which pytest reports as a skip) when the package has nothing to check; none needs pytest.
Everything runs on :class:`TinyInstance`: a tiny model of the package's structure, in float64,
at fixed seeds.
"""

from __future__ import annotations

import re
import unittest
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from . import actions
from .errors import DegenerateError
from .gauge import Chart
from .geometry import flat_parameters, unflatten

__all__ = [
    "TinyInstance",
    "check_chart_on_the_orbit",
    "check_circuits",
    "check_degenerate_head",
    "check_geometry",
    "check_group_action",
    "check_group_invariants",
    "check_projection",
    "check_reduced_count",
    "check_round_trip_float32",
    "check_round_trips",
    "check_vertical_dimension",
]

Params = dict[str, Tensor]


def _expect(ok: bool, message: str) -> None:
    """An assertion that ``python -O`` keeps."""
    __tracebackhide__ = True  # pytest shows the failing check, not this line
    if not ok:
        raise AssertionError(message)


def _gap(a: Tensor, b: Tensor) -> float:
    return float((a - b).detach().abs().max())


def _approx(a: float, b: float, rel: float) -> bool:
    """``a == pytest.approx(b, rel=rel)``: within ``rel`` of ``b``, or within 1e-12."""
    return abs(a - b) <= max(rel * abs(b), 1e-12)


def _flat(module: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


class TinyInstance:
    """A package's ``Model`` at the tiny ``sizes``, and the ``groups`` (with ``rope``) that move
    it: the random points, token ids and group moves every check starts from."""

    def __init__(
        self,
        model: type[nn.Module],
        sizes: Mapping[str, int],
        groups: Mapping[str, actions.Group],
        rope: Mapping[str, object] | None,
    ):
        self.Model, self.sizes, self.groups, self.rope = model, dict(sizes), groups, rope
        self._bases: dict[Callable, Tensor] = {}

    def model(self, seed: int = 0) -> nn.Module:
        """A random float64 model: matrices at scale 0.5, vectors at 1, gains moved away from
        zero (gauge fixing divides by gains)."""
        torch.manual_seed(seed)
        model = self.Model(dtype=torch.float64, **self.sizes)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.randn(p.shape, dtype=torch.float64) * (0.5 if p.ndim > 1 else 1.0))
                if name.endswith("gain"):
                    p.add_(2.0)
        return model

    def ids(self) -> Tensor:
        """Two sequences of token ids, as long as the positions."""
        g = torch.Generator().manual_seed(1)
        return torch.randint(0, self.sizes["vocab"], (2, self.sizes["positions"]), generator=g)

    def with_params(self, params: Mapping[str, Tensor]) -> nn.Module:
        """A float64 model holding ``params``."""
        out = self.Model(dtype=torch.float64, **self.sizes)
        with torch.no_grad():
            for name, value in params.items():
                out.get_parameter(name).copy_(value.reshape(out.get_parameter(name).shape))
        return out

    def moved(self, model: nn.Module, names: Iterable[str], generator: torch.Generator) -> Params:
        """``model``'s parameters moved by a random element of each group in ``names``, one unit
        at a time, drawn from ``generator``."""
        params = {name: p.detach() for name, p in model.named_parameters()}
        S = actions.as_sizes(model.sizes)
        for name in names:
            for unit in actions.units(self.groups[name], S):
                element = actions.random_element(self.groups[name], S, self.rope, generator)
                params = actions.apply(self.groups[name], params, unit, element, S)
        return params

    def transformed(self, model: nn.Module, seed: int) -> nn.Module:
        """``model`` moved by every continuous group (the chart fixes the continuous gauge;
        permutations of heads and neurons stay discrete)."""
        continuous = [name for name, group in self.groups.items() if group.continuous]
        return self.with_params(self.moved(model, continuous, torch.Generator().manual_seed(seed)))

    def vertical_basis(self, basis: Callable[[nn.Module], Tensor]) -> Tensor:
        """``basis(self.model())``, built once (the dense basis is the slow exact reference)."""
        if basis not in self._bases:
            self._bases[basis] = basis(self.model())
        return self._bases[basis]


def check_group_action(tiny: TinyInstance, group: str, tol: float) -> None:
    """A random element of ``group`` moves the parameters (unless the group is trivial at these
    sizes) and keeps the log-probabilities within ``tol``."""
    model, ids = tiny.model(), tiny.ids()
    params = tiny.moved(model, [group], torch.Generator().manual_seed(2))
    moved = tiny.with_params(params)
    G, S = tiny.groups[group], actions.as_sizes(model.sizes)
    trivial = G.size(S) == 1 and G.kind == "permutation"
    trivial = trivial or (G.continuous and not len(actions.algebra_basis(G, S, tiny.rope)))
    if not trivial:
        moves = max(_gap(params[n], p.detach()) for n, p in model.named_parameters())
        _expect(moves > 1e-6, f"{group}: a random element moved no parameter (by {moves:.3g})")
    gap = _gap(moved.log_probs(ids), model.log_probs(ids))
    _expect(gap <= tol, f"{group} changed the log-probabilities by {gap:.3g} > {tol}")


def check_circuits(
    tiny: TinyInstance,
    qk_circuit: Callable[..., object],
    ov_circuit: Callable[..., object],
    tol: float,
) -> None:
    """The OV circuits (their singular values and dense forms) and, without RoPE, the QK
    circuits of every head stay within ``tol`` under the head gauges."""
    model = tiny.model()
    gauges = [name for name in ("qk_gauge", "vo_gauge") if name in tiny.groups]
    moved = tiny.with_params(tiny.moved(model, gauges, torch.Generator().manual_seed(3)))
    S = actions.as_sizes(model.sizes)
    for layer in range(S["layers"]):
        for head in range(S["heads"]):
            where = f"layer {layer}, head {head}"
            a, b = ov_circuit(model, layer, head), ov_circuit(moved, layer, head)
            gap = _gap(a.singular_values(), b.singular_values())
            _expect(gap <= tol, f"OV singular values moved by {gap:.3g} at {where}")
            gap = _gap(a.dense(), b.dense())
            _expect(gap <= tol, f"OV circuit moved by {gap:.3g} at {where}")
            if tiny.rope is None:
                gap = _gap(
                    qk_circuit(model, layer, head).dense(), qk_circuit(moved, layer, head).dense()
                )
                _expect(gap <= tol, f"QK circuit moved by {gap:.3g} at {where}")


def _loss_and_gradient(tiny: TinyInstance, model: nn.Module) -> tuple[float, Tensor]:
    ids = tiny.ids()
    theta = flat_parameters(model).requires_grad_(True)
    logits = torch.func.functional_call(model, unflatten(model, theta), (ids[:, :-1],))
    loss = -logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).mean()
    (grad,) = torch.autograd.grad(loss, theta)
    return float(loss.detach()), grad


def check_geometry(
    tiny: TinyInstance,
    geometry: Callable[[nn.Module, str], object],
    pairs: Iterable[str],
    metric: str,
    rel: float,
) -> None:
    """Under the GL(k) ``pairs`` the metric's gradient norm and the geodesic step's loss change
    by at most ``rel`` (relative), and the projection is orthogonal to the pairs' vertical
    vectors."""
    model = tiny.model()
    g = torch.Generator().manual_seed(4)
    moved = tiny.with_params(tiny.moved(model, pairs, g))
    stepped = []
    for m in (model, moved):
        geo = geometry(m, metric)
        _, grad = _loss_and_gradient(tiny, m)
        rgrad = geo.project(geo.rgrad(grad))
        direction = 0.3 * rgrad / geo.norm(rgrad)
        step_loss, _ = _loss_and_gradient(tiny, tiny.with_params(unflatten(m, geo.step(direction))))
        stepped.append((float(geo.inner(rgrad, rgrad)), step_loss))
        omegas = [
            torch.randn(b.G.shape[0], b.G.shape[2], b.G.shape[2], generator=g, dtype=torch.float64)
            for b in geo.blocks
        ]
        x = torch.randn(geo.dim, generator=g, dtype=torch.float64)
        h, v = geo.project(x), geo.vertical(omegas)
        inner, bound = abs(float(geo.inner(h, v))), 1e-10 * float(geo.norm(h) * geo.norm(v))
        _expect(inner <= bound, f"{metric}: <project(x), vertical> = {inner:.3g} > {bound:.3g}")
    (norm, loss), (moved_norm, moved_loss) = stepped
    for what, a, b in (("gradient norm", norm, moved_norm), ("step's loss", loss, moved_loss)):
        _expect(_approx(a, b, rel), f"{metric}: the {what} is {a!r}, {b!r} once moved")


def check_group_invariants(
    tiny: TinyInstance,
    chart: Chart,
    group_invariants: Callable[[nn.Module, str], dict[str, Tensor]],
    all_group_invariants: Callable[[nn.Module], dict[str, dict[str, Tensor]]],
    tol: float,
) -> None:
    """The chart fixes every continuous group; each group's invariants, from one
    canonicalization or from their own, stay within ``tol`` when the group moves the model."""
    model = tiny.model()
    names = [name for step in chart.steps for name in (step.group, *(n for n, _ in step.joint))]
    continuous = {name for name, group in tiny.groups.items() if group.continuous}
    _expect(set(names) == continuous, f"the chart fixes {sorted(names)}, not {sorted(continuous)}")
    everything = all_group_invariants(model)
    last = group_invariants(model, names[-1])
    for name in last:
        gap = _gap(last[name], everything[names[-1]][name])
        _expect(gap == 0, f"{names[-1]}.{name}: one canonicalization or one each differ by {gap}")
    for group in names:
        before = everything[group]
        moved = tiny.with_params(tiny.moved(model, [group], torch.Generator().manual_seed(5)))
        after = group_invariants(moved, group)
        for name, tensor in before.items():
            gap = _gap(tensor, after[name])
            _expect(gap <= tol, f"{group} moved its invariant {name} by {gap:.3g} > {tol}")


def check_reduced_count(tiny: TinyInstance, reduced: type[nn.Module], redundant: int) -> None:
    """The reduced model has ``redundant`` parameters fewer than the standard one."""
    model = tiny.model()
    total = sum(p.numel() for p in model.parameters())
    count = sum(p.numel() for p in reduced.from_standard(model).parameters())
    _expect(count == total - redundant, f"{count} reduced parameters, not {total} - {redundant}")


def check_chart_on_the_orbit(tiny: TinyInstance, reduced: type[nn.Module], tol: float) -> None:
    """A model and a copy moved by every continuous group have the same reduced parameters."""
    model = tiny.model()
    a = _flat(reduced.from_standard(model))
    b = _flat(reduced.from_standard(tiny.transformed(model, seed=6)))
    gap, bound = _gap(a, b), tol * max(1.0, float(a.abs().max()))
    _expect(gap <= bound, f"the chart point moved along the orbit by {gap:.3g} > {bound:.3g}")


def check_round_trips(tiny: TinyInstance, reduced: type[nn.Module], tol: float) -> None:
    """standard -> reduced -> standard keeps the function, and reduced -> standard -> reduced
    the parameters, within ``tol``."""
    model, ids = tiny.model(), tiny.ids()
    chart_point = reduced.from_standard(model)
    back = chart_point.to_standard()
    gap = _gap(back.log_probs(ids), model.log_probs(ids))
    _expect(gap <= tol, f"to_standard changed the log-probabilities by {gap:.3g}")
    gap = _gap(chart_point.log_probs(ids), model.log_probs(ids))
    _expect(gap <= tol, f"the reduced model's log-probabilities differ by {gap:.3g}")
    again, first = _flat(reduced.from_standard(back)), _flat(chart_point)
    gap, bound = _gap(again, first), tol * max(1.0, float(first.abs().max()))
    _expect(gap <= bound, f"from_standard(to_standard()) moved by {gap:.3g} > {bound:.3g}")


def check_round_trip_float32(tiny: TinyInstance, reduced: type[nn.Module], tol: float) -> None:
    """The round trip of a float32 model keeps its log-probabilities within ``tol``."""
    model, ids = tiny.model(), tiny.ids()
    small = tiny.Model(dtype=torch.float32, **tiny.sizes)
    small.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    back = reduced.from_standard(small).to_standard()
    gap = _gap(back.log_probs(ids), small.log_probs(ids))
    _expect(gap <= tol, f"the float32 round trip changed the log-probabilities by {gap:.3g}")


def check_degenerate_head(tiny: TinyInstance, chart: Chart, reduced: type[nn.Module]) -> None:
    """A zero anchor of the first per-head gauge step makes ``from_standard`` raise
    :class:`DegenerateError` saying so (skipped without such a step)."""
    model = tiny.model()
    step = next((s for s in chart.steps if s.kind == "gl"), None)
    if step is None:
        raise unittest.SkipTest("no per-head gauge in this model")
    name = step.anchor.replace("*", "0")
    with torch.no_grad():
        model.get_parameter(name).zero_()
    try:
        reduced.from_standard(model)
    except DegenerateError as error:
        _expect(re.search("degenerate", str(error)) is not None, f"unclear message: {error}")
    else:
        raise AssertionError(f"no DegenerateError with {name} zero")


def check_vertical_dimension(
    tiny: TinyInstance, vertical_basis: Callable[[nn.Module], Tensor], redundant: int
) -> None:
    """The vertical space at a generic point has dimension ``redundant``."""
    rank = tiny.vertical_basis(vertical_basis).shape[1]
    _expect(rank == redundant, f"the vertical space has dimension {rank}, not {redundant}")


def _adam_update(tiny: TinyInstance, model: nn.Module) -> Params:
    """One Adam step's update on a log-likelihood loss (not horizontal in general)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = -model.log_probs(tiny.ids()).mean()
    loss.backward()
    opt.step()
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


def check_projection(
    tiny: TinyInstance,
    vertical_basis: Callable[[nn.Module], Tensor],
    vertical_space: Callable[[nn.Module], object],
    project_horizontal: Callable[..., Params],
    kind: str,
    tol: float,
) -> None:
    """The matrix-free projection of an update (``kind``: ``random`` or ``adam``) against the
    dense vertical basis, an exact reference: it removes the vertical part, and only that, and
    projecting twice changes nothing (within ``tol`` of the update's norm)."""
    model = tiny.model()
    basis = tiny.vertical_basis(vertical_basis)
    space = vertical_space(model)
    if kind == "random":
        g = torch.Generator().manual_seed(7)
        update = {
            n: torch.randn(p.shape, generator=g, dtype=torch.float64)
            for n, p in model.named_parameters()
        }
    else:
        update = _adam_update(tiny, tiny.model())
    flat = torch.cat([update[n].reshape(-1) for n, _ in model.named_parameters()])
    size, bound = float(flat.norm()), tol * float(flat.norm())
    vertical = float((basis.T @ flat).norm())
    _expect(vertical > 1e-6 * size, f"the {kind} update had no vertical part ({vertical:.3g})")
    out = project_horizontal(model, update, space)
    h = torch.cat([out[n].reshape(-1) for n, _ in model.named_parameters()])
    left = float((basis.T @ h).norm())
    _expect(left <= bound, f"a vertical part of norm {left:.3g} > {bound:.3g} is left")
    gap = float((h - (flat - basis @ (basis.T @ flat))).norm())
    _expect(gap <= bound, f"the projection is {gap:.3g} > {bound:.3g} from the dense one")
    twice = project_horizontal(model, out, space)
    gap = max(_gap(twice[n], out[n]) for n in out)
    _expect(gap <= bound, f"projecting twice moved the update by {gap:.3g} > {bound:.3g}")
