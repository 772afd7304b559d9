"""QuotientOptimizer: any optimizer's updates, made horizontal with the generated projection."""

from __future__ import annotations

import copy
import importlib
import warnings
from collections.abc import Callable

import pytest
import torch
from symcomp_runtime import geometry as runtime
from symcomp_runtime.optim import QuotientOptimizer

from generated.gpt2_small import Model, ReducedModel, project_horizontal, vertical_basis
from generated.gpt2_small.test_invariance import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model() -> Model:
    torch.manual_seed(0)
    model = Model(dtype=torch.float64, **TINY)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(
                torch.randn(p.shape, dtype=torch.float64) * 0.5 + (2.0 if "gain" in name else 0)
            )
    return model


def _ids() -> torch.Tensor:
    return torch.randint(
        0, TINY["vocab"], (4, TINY["positions"]), generator=torch.Generator().manual_seed(1)
    )


def _loss(model: Model) -> torch.Tensor:
    ids = _ids()
    return -model.log_probs(ids[:, :-1]).gather(-1, ids[:, 1:, None]).mean()


def _flat(model: Model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _step(model: Model, optimizer) -> torch.Tensor:
    """One step; returns the parameter change."""
    before = _flat(model)
    optimizer.zero_grad()
    _loss(model).backward()
    optimizer.step()
    return _flat(model) - before


def test_the_update_is_horizontal_and_plain_adamw_is_not():
    plain, quotient = _model(), _model()
    basis = vertical_basis(plain)  # the same point for both
    for _ in range(2):  # the first Adam step is sign-like; the second has moments
        delta_plain = _step(plain, torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.1))
    assert float((basis.T @ delta_plain).norm()) > 1e-3 * float(delta_plain.norm())
    inner = torch.optim.AdamW(quotient.parameters(), lr=1e-2, weight_decay=0.1)
    wrapped = QuotientOptimizer(quotient, inner)
    for _ in range(2):
        basis = vertical_basis(quotient)  # the vertical space at the point before the step
        delta = _step(quotient, wrapped)
        assert float(delta.norm()) > 0
        assert float((basis.T @ delta).norm()) <= 1e-10 * float(delta.norm())


def _gradient(model: Model) -> torch.Tensor:
    model.zero_grad()
    _loss(model).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _adam_update(model: Model) -> dict[str, torch.Tensor]:
    """Two plain AdamW steps from ``model``'s point (on a copy); the second step's update."""
    twin = _model()
    twin.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.1)
    _step(twin, optimizer)
    before = {n: p.detach().clone() for n, p in twin.named_parameters()}
    _step(twin, optimizer)
    return {n: p.detach() - before[n] for n, p in twin.named_parameters()}


@pytest.mark.parametrize("kind", ["random", "adam"])
def test_projection_removes_every_vertical_direction_and_only_first_order_flat_ones(kind):
    """What the projection removes is vertical (the loss does not change along it to first
    order); what it keeps has no vertical component left."""
    model = _model()
    if kind == "random":
        generator = torch.Generator().manual_seed(5)
        update = {
            n: torch.randn(p.shape, generator=generator, dtype=torch.float64)
            for n, p in model.named_parameters()
        }
    else:
        update = _adam_update(model)
    horizontal = project_horizontal(model, update)
    flat = torch.cat([update[n].reshape(-1) for n, _ in model.named_parameters()])
    kept = torch.cat([horizontal[n].reshape(-1) for n, _ in model.named_parameters()])
    removed = flat - kept
    basis = vertical_basis(model)
    assert float((basis.T @ kept).norm()) <= 1e-10 * float(flat.norm())
    assert float(removed.norm()) > 1e-3 * float(flat.norm())  # there was something to remove
    grad = _gradient(model)
    assert abs(float(grad @ removed)) <= 1e-10 * float(grad.norm() * removed.norm())
    # a check that can fail: along the update itself the loss does change to first order
    assert abs(float(grad @ flat)) > 1e-4 * float(grad.norm() * flat.norm())
    # and each removed direction one at a time: the basis vectors are all first-order flat
    assert float((grad @ basis).abs().max()) <= 1e-10 * float(grad.norm())


def test_training_lowers_the_loss_and_recanonicalization_keeps_the_function():
    model = _model()
    wrapped = QuotientOptimizer(
        model, torch.optim.Adam(model.parameters(), lr=3e-2), recanonicalize_every=3
    )
    start = float(_loss(model))
    for _ in range(2):
        _step(model, wrapped)
    assert wrapped.optimizer.state  # Adam has moments
    with torch.no_grad():
        before = model.log_probs(_ids())
    wrapped._recanonicalize()
    with torch.no_grad():
        assert float((model.log_probs(_ids()) - before).abs().max()) <= 1e-10  # same function
    chart = ReducedModel.from_standard(model).to_standard()
    assert float((_flat(chart) - _flat(model)).abs().max()) <= 1e-8  # at the chart point
    assert not wrapped.optimizer.state  # the moments belonged to the old coordinates
    _step(model, wrapped)  # the third step re-fixes the gauge on its own
    assert wrapped.steps == 3 and not wrapped.optimizer.state
    assert float(_loss(model)) < start


def _pair_vertical_basis(model: Model) -> torch.Tensor:
    """An orthonormal basis of the A1/A3 vertical space, from the geometry's pair layout."""
    from generated.gpt2_small import geometry

    pairs = geometry.geometry(model, "euclidean")
    columns = []
    for b_index, block in enumerate(pairs.blocks):
        units, _, k = block.G.shape
        for flat in range(units * k * k):
            omegas = [torch.zeros(b.G.shape[0], k, k, dtype=torch.float64) for b in pairs.blocks]
            omegas[b_index].view(-1)[flat] = 1.0
            columns.append(pairs.vertical(omegas))
    return torch.linalg.qr(torch.stack(columns, 1)).Q


def test_heads_projection_removes_the_head_gauges_alone():
    """projection="heads": no A1/A3 vertical component is left; the other groups' are kept."""
    model = _model()
    heads, everything = _pair_vertical_basis(model), vertical_basis(model)  # before the step
    inner = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    delta = _step(model, QuotientOptimizer(model, inner, projection="heads"))
    assert float((heads.T @ delta).norm()) <= 1e-10 * float(delta.norm())
    assert float((everything.T @ delta).norm()) > 1e-3 * float(delta.norm())
    plain = _model()
    delta_plain = _step(plain, torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.1))
    assert float((heads.T @ delta_plain).norm()) > 1e-3 * float(delta_plain.norm())
    with pytest.raises(ValueError, match="accepted: joint, heads"):
        QuotientOptimizer(model, inner, projection="pairs")


def test_project_heads_is_the_flat_projection_on_the_paired_parameters():
    """geometry.project_heads touches only what the pairs move, and there agrees with the
    projection of the whole flat vector."""
    from generated.gpt2_small import geometry

    model = _model()
    g = torch.Generator().manual_seed(2)
    update = {
        n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in model.named_parameters()
    }
    flat = torch.cat([u.reshape(-1) for u in update.values()])
    want = geometry.unflatten(model, geometry.geometry(model, "euclidean").project(flat))
    got = geometry.project_heads(model, update)
    moved = [n for n in update if not torch.equal(got[n], update[n])]
    assert moved and all(".attn." in n for n in moved)
    for name in update:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("package", "kv_heads"), [("gpt2_small", 4), ("llama_2_7b", 2), ("bert_base", 4)]
)
def test_project_heads_reads_strided_views(package, kv_heads):
    """Every unit's block is a strided slice of its weight (grouped-query blocks too), so
    project_heads reads views instead of gathering, and agrees with the gathered path."""
    geometry = importlib.import_module(f"generated.{package}.geometry")
    model = importlib.import_module(f"generated.{package}").Model(
        dtype=torch.float64, layers=2, width=32, heads=4, kv_heads=kv_heads, head_width=8,
        hidden=64, vocab=50, positions=16,
    )  # fmt: skip
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    update = {
        n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in model.named_parameters()
    }
    pairs, shapes, sizes = geometry._PAIRS, runtime._shapes(model), runtime._sizes(model)
    names, layout = runtime._pair_views(pairs, shapes, sizes)
    assert layout is not None
    got = geometry.project_heads(model, update)
    want = runtime._project_heads_gathered(model, pairs, update, names)
    assert sum(not torch.equal(got[n], update[n]) for n in update) >= 4
    for name in update:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12)


def test_the_reduced_model_trains():
    """Adam on the gauge-fixed model: finite gradients (the chart's translation solve once
    differentiated through an SVD with repeated singular values, giving NaN) and a lower loss."""
    reduced = ReducedModel.from_standard(_model())
    optimizer = torch.optim.Adam(reduced.parameters(), lr=1e-2)
    ids = _ids()

    def loss() -> torch.Tensor:
        return -reduced.log_probs(ids[:, :-1]).gather(-1, ids[:, 1:, None]).mean()

    start = float(loss().detach())
    for _ in range(5):
        optimizer.zero_grad()
        loss().backward()
        assert all(torch.isfinite(p.grad).all() for p in reduced.parameters() if p.numel())
        optimizer.step()
    assert float(loss().detach()) < start


def test_a_model_symcomp_did_not_generate_is_refused():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="does not come from a package symcomp compiled"):
        QuotientOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.1))


def _counter() -> Callable[[], float]:
    """A clock that advances by one at every reading: the projection is read as one tick of a
    step of three (start, before and after the projection, end), a third of it."""
    ticks = iter(range(10**6))
    return lambda: float(next(ticks))


def test_it_is_a_torch_optimizer_that_schedulers_and_clipping_drive():
    model = _model()
    inner = torch.optim.AdamW(
        [
            {"params": [p for n, p in model.named_parameters() if "attn" in n], "lr": 1e-2},
            {"params": [p for n, p in model.named_parameters() if "attn" not in n]},
        ],
        lr=2e-2,
        weight_decay=0.1,
    )
    wrapped = QuotientOptimizer(model, inner, warn_fraction=1.0)
    assert isinstance(wrapped, torch.optim.Optimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(wrapped, step_size=1, gamma=0.5)
    for _ in range(2):
        basis = vertical_basis(model)
        wrapped.zero_grad()
        _loss(model).backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
        assert float(norm) > 1e-3  # it did clip
        before = _flat(model)
        wrapped.step()
        scheduler.step()
        delta = _flat(model) - before
        assert float(delta.norm()) > 0
        assert float((basis.T @ delta).norm()) <= 1e-9 * float(delta.norm())
    assert [g["lr"] for g in inner.param_groups] == [2.5e-3, 5e-3]  # the scheduler's halvings
    assert wrapped.param_groups is inner.param_groups and wrapped.state is inner.state


def test_a_class_with_settings_builds_the_inner_optimizer_and_closures_pass_through():
    model = _model()
    wrapped = QuotientOptimizer(
        model, torch.optim.SGD, lr=1e-2, momentum=0.9, projection="heads", warn_fraction=1.0
    )
    assert isinstance(wrapped.optimizer, torch.optim.SGD) and wrapped.defaults["momentum"] == 0.9

    def closure() -> torch.Tensor:
        wrapped.zero_grad()
        loss = _loss(model)
        loss.backward()
        return loss

    first = wrapped.step(closure)
    assert float(wrapped.step(closure)) < float(first)
    with pytest.raises(TypeError, match="optimizer class"):
        QuotientOptimizer(model, wrapped.optimizer, lr=1.0)


def test_the_state_dict_round_trip_resumes_the_same_trajectory():
    def make(model):  # the per-head projection: the state, not the projection, is tested
        inner = torch.optim.Adam(model.parameters(), lr=1e-2)
        return QuotientOptimizer(model, inner, projection="heads", warn_fraction=1.0)

    model = _model()
    wrapped = make(model)
    for _ in range(2):
        _step(model, wrapped)
    saved = copy.deepcopy(wrapped.state_dict())  # as a checkpoint would (it holds references)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert saved["quotient"]["steps"] == 2 and saved["state"]
    twin = _model()
    twin.load_state_dict(weights)
    resumed = make(twin)
    resumed.load_state_dict(saved)
    assert resumed.steps == 2 and resumed.state is resumed.optimizer.state
    delta, delta_resumed = _step(model, wrapped), _step(twin, resumed)
    torch.testing.assert_close(delta_resumed, delta, rtol=1e-10, atol=1e-13)
    fresh = make(_model())
    fresh_delta = _step(fresh.model, fresh)
    assert float((fresh_delta - delta).norm()) > 1e-3 * float(delta.norm())  # state mattered


def test_a_costly_projection_warns_once():
    model = _model()
    inner = torch.optim.Adam(model.parameters(), lr=1e-2)
    wrapped = QuotientOptimizer(model, inner, projection="heads", clock=_counter())
    with pytest.warns(RuntimeWarning, match="projection took") as caught:
        for _ in range(3):
            _step(model, wrapped)
    assert len([w for w in caught if "projection took" in str(w.message)]) == 1
    assert wrapped.last_cost == (1.0, 4.0)  # later steps count from the previous one's end
    quiet = QuotientOptimizer(model, inner, projection="heads", clock=_counter(), warn_fraction=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _step(model, quiet)
