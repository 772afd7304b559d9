"""The CLI under hostile input: mutated specs, mutated config.json files and random expressions
(strategies in ``tests/fuzzing.py``). Each must be accepted or refused with a clean error (exit
2, naming the file), within seconds: never a traceback, never a hang. A bounded number of
examples runs here; ``python bench/run.py --only fuzz`` runs 10,000 of each and records them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.fuzzing import check_expression, config_files, expressions, run_cli, spec_files

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CLEAN = ("accepted", "clean error")


def _written(raw: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="symcomp-fuzz-"))
    path = folder / name
    path.write_bytes(raw)
    return path


@FUZZ
@given(spec_files())
def test_a_mutated_spec_is_accepted_or_refused_cleanly(raw):
    outcome = run_cli(["check", str(_written(raw, "spec.yaml"))])
    assert outcome.kind in CLEAN, outcome.detail


@FUZZ
@given(config_files())
def test_a_mutated_config_is_imported_or_refused_cleanly(raw):
    config = _written(raw, "config.json")
    outcome = run_cli(["import-hf", str(config)])
    assert outcome.kind in CLEAN, outcome.detail
    if outcome.kind == "accepted":  # what import-hf writes, check reads
        spec = config.with_name("imported.yaml")
        spec.write_text(outcome.output, encoding="utf-8")
        checked = run_cli(["check", str(spec)])
        assert checked.kind == "accepted", checked.detail


@settings(max_examples=300, deadline=None, database=None)
@given(expressions)
def test_any_expression_parses_and_evaluates_or_is_refused_cleanly(text):
    outcome = check_expression(text)
    assert outcome.kind in CLEAN, outcome.detail
