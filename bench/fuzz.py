"""The long fuzz run: 10,000 mutated specs through ``check``, 10,000 mutated config.json files
through ``import-hf`` (and what it writes through ``check``), 10,000 expressions, and
``analyze`` + ``compile`` on 30 accepted mutants. The strategies and the runner are the fuzz
tests' (``tests/fuzzing.py``); here every outcome is counted instead of asserted.

    python bench/run.py --only fuzz --out bench/RESULTS-fuzz.md
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzzing import (
    OUTCOMES,
    ROOT,
    Outcome,
    check_expression,
    config_files,
    expressions,
    run_cli,
    spec_files,
)


class _Tally:
    """Outcome counts, the slowest input, and the first input of each bad kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.slowest = 0.0
        self.bad: dict[str, str] = {}

    def record(self, outcome: Outcome, seconds: float, what: str) -> None:
        self.counts[outcome.kind] += 1
        self.slowest = max(self.slowest, seconds)
        if outcome.kind in ("traceback", "hang") and outcome.kind not in self.bad:
            self.bad[outcome.kind] = f"{what}: {outcome.detail}"
            print(f"    {outcome.kind}: {what}: {outcome.detail[-400:]}", flush=True)


def _explore(strategy, examples: int, body) -> None:
    """Run ``body`` on ``examples`` inputs drawn from ``strategy``, generation only (no
    shrinking, no database): a failure is counted by ``body``, never raised."""
    run = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(body))
    run()


def _timed(fn, *args, **kwargs) -> tuple[Outcome, float]:
    start = time.perf_counter()
    outcome = fn(*args, **kwargs)
    return outcome, time.perf_counter() - start


def fuzz_specs(examples: int, keep: int, folder: Path) -> tuple[_Tally, list[Path]]:
    tally, accepted = _Tally(), []

    def body(raw: bytes) -> None:
        path = folder / f"spec-{sum(tally.counts.values())}.yaml"
        path.write_bytes(raw)
        outcome, seconds = _timed(run_cli, ["check", str(path)])
        tally.record(outcome, seconds, path.name)
        if outcome.kind == "accepted" and len(accepted) < keep:
            accepted.append(path)
        elif outcome.kind != "traceback":
            path.unlink()

    _explore(spec_files(), examples, body)
    return tally, accepted


def fuzz_configs(examples: int, folder: Path) -> tuple[_Tally, _Tally]:
    imported, checked = _Tally(), _Tally()

    def body(raw: bytes) -> None:
        path = folder / f"config-{sum(imported.counts.values())}.json"
        path.write_bytes(raw)
        outcome, seconds = _timed(run_cli, ["import-hf", str(path)])
        imported.record(outcome, seconds, path.name)
        if outcome.kind == "accepted":
            spec = path.with_suffix(".yaml")
            spec.write_text(outcome.output, encoding="utf-8")
            result, seconds = _timed(run_cli, ["check", str(spec)])
            checked.record(result, seconds, spec.name)
        if outcome.kind != "traceback":
            path.unlink()

    _explore(config_files(), examples, body)
    return imported, checked


def fuzz_expressions(examples: int) -> _Tally:
    tally = _Tally()

    def body(text: str) -> None:
        outcome, seconds = _timed(check_expression, text)
        tally.record(outcome, seconds, repr(text)[:200])

    _explore(expressions, examples, body)
    return tally


def deep_commands(specs: list[Path], folder: Path, seconds: float) -> _Tally:
    """``analyze`` and ``compile`` of accepted mutants (each measures a Jacobian: slower)."""
    tally = _Tally()
    for i, spec in enumerate(specs):
        for argv in (["analyze", str(spec)], ["compile", str(spec), "-o", str(folder / f"p{i}")]):
            outcome, took = _timed(run_cli, argv, seconds=seconds)
            if outcome.kind == "traceback" and "exit 1:" in outcome.detail:
                outcome = Outcome("clean error", outcome.detail)  # a measured contradiction
            tally.record(outcome, took, f"{argv[0]} {spec.name}")
    return tally


def _progress(name: str, tally: _Tally) -> None:
    counts = ", ".join(f"{kind} {tally.counts[kind]}" for kind in OUTCOMES)
    print(f"    {name}: {counts}; slowest {tally.slowest:.2f} s", flush=True)


def bench_fuzz(results, quick: bool) -> None:
    examples, deep = (10, 1) if quick else (10_000, 30)
    folder = Path(tempfile.mkdtemp(prefix="symcomp-fuzz-"))
    specs, accepted = fuzz_specs(examples, deep, folder)
    _progress("specs", specs)
    imported, checked = fuzz_configs(examples, folder)
    _progress("configs", imported)
    _progress("their specs", checked)
    exprs = fuzz_expressions(examples)
    _progress("expressions", exprs)
    tiny = sorted((ROOT / "specs" / "tiny").glob("*.yaml"))
    accepted += tiny[: deep - len(accepted)]  # few mutants accepted: real tiny specs fill in
    commands = deep_commands(accepted, folder, seconds=300.0)
    _progress("analyze + compile", commands)
    rows = [
        ("check on mutated specs", specs, 10.0),
        ("import-hf on mutated config.json files", imported, 10.0),
        ("check on what import-hf wrote", checked, 10.0),
        ("expressions: parse, print, evaluate", exprs, 10.0),
        (f"analyze + compile of {len(accepted)} accepted specs", commands, 300.0),
    ]
    for name, tally, limit in rows:
        tried = sum(tally.counts.values())
        bad = tally.counts["traceback"] + tally.counts["hang"]
        counts = ", ".join(f"{kind} {tally.counts[kind]}" for kind in OUTCOMES)
        note = f"{counts}; slowest {tally.slowest:.2f} s (limit {limit:g} s)"
        if tally.bad:
            note += "; first: " + "; ".join(f"{k}: {v[-200:]}" for k, v in tally.bad.items())
        results.add(
            "fuzz",
            f"{name}: tracebacks + hangs of {tried} tried",
            bad,
            "",
            target="0",
            met=bad == 0,
            note=note.replace("|", "/").replace("\n", " "),
        )
