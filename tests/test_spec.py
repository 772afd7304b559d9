"""The spec language: the example specs, defaults, round trips and the JSON Schema."""

from __future__ import annotations

import json

import pytest

from symcomp.spec import load_spec, parameter_count, parse_spec
from symcomp.spec.writer import dump_spec
from tests.conftest import EXAMPLE_SPECS, SPECS, TINY_SPECS

# Parameter counts of the published models, as transformers reports them
# (sum of numel over model.parameters(), tied tensors once).
PUBLISHED_COUNTS = {
    "gpt2-small": 124_439_808,
    "bert-base": 109_514_298,
    "llama-2-7b": 6_738_415_616,
    "mistral-7b": 7_241_732_096,
    "pythia-160m": 162_322_944,
    "opt-125m": 125_239_296,
    "gemma-2b": 2_506_172_416,
    "phi-2": 2_779_683_840,
    # transformers' own model of the config (meta device): StableLM 2 1.6B
    "stablelm-2-1_6b": 1_644_515_328,
}


def test_every_family_has_an_example_and_a_tiny_instance():
    assert {p.stem for p in EXAMPLE_SPECS} == set(PUBLISHED_COUNTS)
    tiny = {p.stem for p in TINY_SPECS}
    assert {"gpt2", "bert", "llama", "mistral", "qwen2", "pythia", "opt", "gemma", "phi"} <= tiny


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.stem)
def test_example_spec_matches_published_parameter_count(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert parameter_count(spec.architecture) == PUBLISHED_COUNTS[path.stem]


@pytest.mark.parametrize("path", TINY_SPECS, ids=lambda p: p.stem)
def test_tiny_instances_keep_the_trap_free_sizes(path):
    # symmetries.md: V > d and f >= d, or the tiny instance has null directions of its own.
    arch = load_spec(path).architecture
    assert arch.vocab_size > arch.width
    assert arch.mlp.hidden >= arch.width
    assert arch.attention.heads >= 2


@pytest.mark.parametrize("path", EXAMPLE_SPECS + TINY_SPECS, ids=lambda p: p.stem)
def test_dump_then_load_gives_the_same_spec(path):
    spec = load_spec(path)
    assert parse_spec(dump_spec(spec, header="round trip")) == spec


def test_defaults_are_filled_in():
    arch = load_spec(SPECS / "gpt2-small.yaml").architecture
    assert arch.attention.head_width == 64
    assert arch.attention.kv_heads == 12
    assert arch.norm.bias is True
    llama = load_spec(SPECS / "llama-2-7b.yaml").architecture
    assert llama.norm.bias is False
    assert (llama.mlp.activation, llama.mlp.gated) == ("silu", True)


def test_gated_shorthand_equals_explicit_form():
    base = (SPECS / "tiny" / "llama.yaml").read_text()
    explicit = base.replace("activation: swiglu", "activation: silu, gated: true")
    assert explicit != base
    assert parse_spec(explicit) == parse_spec(base)


def test_scientific_notation_reads_as_a_number():
    text = (SPECS / "tiny" / "llama.yaml").read_text().replace("eps: 0.1", "eps: 1e-5")
    assert parse_spec(text).architecture.norm.eps == 1e-5


def _walk_properties(schema, defs, seen=()):
    for name, definition in defs.items():
        for field, prop in definition.get("properties", {}).items():
            yield f"{name}.{field}", prop
    for field, prop in schema.get("properties", {}).items():
        yield f"Spec.{field}", prop


def test_schema_describes_every_field(run_cli):
    code, out, _ = run_cli("schema")
    assert code == 0
    schema = json.loads(out)
    fields = list(_walk_properties(schema, schema["$defs"]))
    assert len(fields) > 40
    undocumented = [name for name, prop in fields if not prop.get("description")]
    assert undocumented == []
