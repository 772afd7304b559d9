"""Check candidate charts numerically, with the generated runtime itself, before emitting them.

:class:`ChartLab` writes the order-independent files of a package (``model.py``,
``groups.py``) to a temporary folder, imports them, and answers two questions on a random point
of the tiny instance, in float64:

- ``preserves(before, step, group)``: does ``group`` map the slice of ``step`` into itself, at
  the chart point of the steps ``before``? (Fix the step's gauge, move the point by a random
  element of the group, fix the gauge again: nothing may move.) ``fixes(before, step)``: how
  many entries the step determines there. :func:`symcomp.codegen.chart.derive_chart` orders the
  steps with them.
- ``check(steps)``: is the whole chart a function of the orbit, and does it determine exactly the
  redundant count of entries? A chart that fails is not emitted.

A candidate fails where it does not apply by raising what :attr:`ChartLab.failures` lists; any
other exception is a bug and propagates.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import torch
from symcomp_runtime import actions, gauge
from symcomp_runtime.errors import DegenerateError

from symcomp.codegen.chart import ChartError, StepCode
from symcomp.codegen.load import loaded_package

TOL = 1e-8


class ChartLab:
    def __init__(self, files: dict[str, str], tiny: dict[str, int], seed: int = 0):
        self._dir = Path(tempfile.mkdtemp(prefix="symcomp-chart-"))
        self._name = f"_symcomp_chart_lab_{id(self)}"
        package = self._dir / self._name
        package.mkdir()
        (package / "__init__.py").write_text("")
        for path in ("model.py", "groups.py"):
            (package / path).write_text(files[path])
        self._package = loaded_package(package, self._name)
        self._package.__enter__()
        # how a candidate fails at a point where it does not apply: an anchor it cannot normalize
        # (DegenerateError, raised by the runtime) or a singular or mis-shaped linear algebra
        # step (torch.linalg.LinAlgError and torch's other errors are RuntimeErrors)
        self.failures: tuple[type[Exception], ...] = (DegenerateError, RuntimeError)
        self.groups: ModuleType = importlib.import_module(f"{self._name}.groups")
        model = importlib.import_module(f"{self._name}.model").Model
        shell = model(dtype=torch.float64, **tiny)  # tiny; "meta" would import dynamo
        self.sizes = actions.as_sizes(shell.sizes)
        generator = torch.Generator().manual_seed(seed)
        self.point = {}
        for name, p in shell.named_parameters():
            value = 0.5 * torch.randn(tuple(p.shape), generator=generator, dtype=torch.float64)
            self.point[name] = value + (2.0 if name.endswith("gain") else 0.0)
        self._seed = seed
        self._memo: dict[tuple[StepCode, str], tuple[bool, int]] = {}
        self._fixed: dict[tuple[tuple[StepCode, ...], StepCode], int] = {}
        self._points: dict[tuple[StepCode, ...], dict] = {}

    def close(self) -> None:
        self._package.__exit__()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ChartLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the questions ------------------------------------------------------------------------

    def _chart(self, steps: tuple[StepCode, ...]):
        return gauge.Chart(
            groups=self.groups.GROUPS,
            steps=tuple(gauge.Step(**asdict(s)) for s in steps),
            rope=self.groups.ROPE,
            unread=self.groups.UNREAD,
        )

    def _moved(self, params: dict, names: list[str], seed: int) -> dict:
        generator = torch.Generator().manual_seed(seed)
        for name in names:
            group = self.groups.GROUPS[name]
            for unit in actions.units(group, self.sizes):
                element = actions.random_element(group, self.sizes, self.groups.ROPE, generator)
                params = actions.apply(group, params, unit, element, self.sizes)
        return params

    def _at(self, before: tuple[StepCode, ...]) -> dict:
        """The chart point of the steps ``before`` (cached: the search asks for it often)."""
        if before not in self._points:
            chart = self._chart(before)
            self._points[before] = gauge.canonicalize(chart, self.point, self.sizes)[0]
        return self._points[before]

    def fixes(self, before: tuple[StepCode, ...], step: StepCode) -> int:
        """How many entries ``step`` determines at the chart point of the steps ``before``."""
        key = (before, step)
        if key not in self._fixed:
            self._fixed[key] = self._fixes(before, step)
        return self._fixed[key]

    def _fixes(self, before: tuple[StepCode, ...], step: StepCode) -> int:
        shapes = {name: tuple(p.shape) for name, p in self.point.items()}
        try:
            point = self._at(before)
            if step.kind == "translation" and not self._linear(step, point):
                return -1
            _, record = gauge.canonicalize(self._chart((step,)), point, self.sizes)
            masks = gauge.determined(self._chart((step,)), record, shapes, self.sizes)
        except self.failures:  # a candidate that fails fixes nothing
            return 0
        unread = gauge._unread_masks(self._chart(()), shapes)
        skipped = sum(int(m.sum()) for m in unread.values())
        return sum(int(m.sum()) for m in masks.values()) - skipped

    def _linear(self, step: StepCode, point: dict) -> bool:
        """Whether the step's translations move its anchors linearly in t and compose by adding
        their t (at ``point``): the minimum-norm step solves a linear least-squares problem, and
        its point is on the orbit only for a group of translations (not, say, I + u t, whose
        minimum-norm point is where it is singular)."""
        chart = self._chart((step,))
        generator = torch.Generator().manual_seed(self._seed + 3)
        for name in step.groups:
            group = self.groups.GROUPS[name]
            for unit in actions.units(group, self.sizes):
                t1, t2 = (
                    actions.random_element(group, self.sizes, self.groups.ROPE, generator)
                    for _ in "ab"
                )

                def move(t, group=group, unit=unit):
                    moved = actions.apply(group, point, unit, t, self.sizes)
                    return gauge._anchor_vector(chart, chart.steps[0], moved, unit, self.sizes)

                def then(t, group=group, unit=unit, t1=t1):  # t after t1: a vector group adds them
                    moved = actions.apply(
                        group,
                        actions.apply(group, point, unit, t1, self.sizes),
                        unit,
                        t,
                        self.sizes,
                    )
                    return gauge._anchor_vector(chart, chart.steps[0], moved, unit, self.sizes)

                base = move(torch.zeros_like(t1))
                both = move(t1 + t2) - base
                scale = TOL * (1.0 + float(both.abs().max()))
                if float((both - (move(t1) - base) - (move(t2) - base)).abs().max()) > scale:
                    return False
                if float((then(t2) - base - both).abs().max()) > scale:
                    return False
        return True

    def preserves(self, before: tuple[StepCode, ...], step: StepCode, group: str) -> bool:
        """Whether ``group`` maps the slice of ``step`` into itself, at the chart point of the
        steps ``before`` (where the earlier gauges, norm gains included, are already fixed)."""
        # a group that preserves a slice at some chart point keeps doing so as more gauges
        # are fixed: remember True for good, and retry False when the steps before change
        key = (step, group)
        known = self._memo.get(key)
        if known is None or (not known[0] and known[1] != len(before)):
            self._memo[key] = (self._preserves(before, step, group), len(before))
        return self._memo[key][0]

    def _preserves(self, before: tuple[StepCode, ...], step: StepCode, group: str) -> bool:
        chart = self._chart((step,))
        try:
            start = self._at(before)
            on_slice, _ = gauge.canonicalize(chart, start, self.sizes)
            moved = self._moved(on_slice, [group], self._seed + 1)
            again, _ = gauge.canonicalize(chart, moved, self.sizes)
        except self.failures:  # a failure rules the candidate out
            return False
        return _gap(again, moved) <= TOL * (1.0 + _scale(moved))

    def check(self, steps: tuple[StepCode, ...], redundant: int) -> None:
        """Raise ChartError unless the chart is orbit-invariant and fixes ``redundant`` entries."""
        chart = self._chart(steps)
        continuous = [n for n, g in self.groups.GROUPS.items() if g.continuous]
        try:
            a, record = gauge.canonicalize(chart, self.point, self.sizes)
            moved = self._moved(self.point, continuous, self._seed + 2)
            b, _ = gauge.canonicalize(chart, moved, self.sizes)
            shapes = {name: tuple(p.shape) for name, p in self.point.items()}
            masks = gauge.determined(chart, record, shapes, self.sizes)
        except self.failures as exc:  # reported as why there is no chart
            raise ChartError(f"the derived chart fails on the tiny instance: {exc}") from None
        gap = _gap(a, b)
        if gap > TOL * (1.0 + _scale(a)):
            raise ChartError(f"the derived chart is not a function of the orbit (gap {gap:.1e})")
        fixed = sum(int(m.sum()) for m in masks.values())
        if fixed != redundant:
            raise ChartError(
                f"the derived chart fixes {fixed} entries, not the {redundant} redundant ones"
            )


def _gap(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).abs().max()) if a[n].numel() else 0.0 for n in a)


def _scale(a: dict) -> float:
    return max(float(v.abs().max()) if v.numel() else 0.0 for v in a.values())
