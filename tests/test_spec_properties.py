"""Property tests: generated specs round-trip, and no input makes the loader crash."""

from __future__ import annotations

import copy
import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symcomp.errors import SpecError
from symcomp.spec import parameter_count, parameter_shapes, parse_spec
from symcomp.spec.writer import dump_spec
from tests.conftest import TINY_SPECS

BASES = [yaml.safe_load(p.read_text()) for p in TINY_SPECS]


@st.composite
def architectures(draw):
    heads = draw(st.integers(1, 4))
    kv_heads = draw(st.sampled_from([h for h in range(1, heads + 1) if heads % h == 0]))
    head_width = draw(st.sampled_from([2, 4, 6]))
    block = draw(st.sampled_from(["pre_norm", "post_norm", "parallel_one_norm"]))
    positions = draw(
        st.sampled_from(
            [
                {"type": "learned", "offset": 2},
                {"type": "rope", "base": 10.0, "pair_layout": "adjacent"},
                {"type": "alibi"},
                {"type": "none"},
            ]
        )
    )
    return {
        "kind": draw(st.sampled_from(["causal_lm", "masked_lm"])),
        "vocab_size": draw(st.integers(2, 40)),
        "max_positions": draw(st.integers(1, 16)),
        "width": draw(st.integers(1, 16)),
        "layers": draw(st.integers(1, 3)),
        "block": block,
        "norm": {"type": draw(st.sampled_from(["layernorm", "rmsnorm"])), "eps": 0.1},
        "attention": {
            "heads": heads,
            "kv_heads": kv_heads,
            "head_width": head_width,
            "bias": {n: draw(st.booleans()) for n in "qkvo"},
        },
        "positions": positions,
        "mlp": {
            "hidden": draw(st.integers(1, 20)),
            "activation": draw(st.sampled_from(["relu", "gelu", "swiglu", "geglu"])),
            "bias": draw(st.booleans()),
        },
        "embeddings": {"tied": draw(st.booleans()), "unembedding_bias": draw(st.booleans())},
    }


@settings(max_examples=60, deadline=None)
@given(architectures())
def test_generated_specs_round_trip_and_count(arch):
    spec = parse_spec(yaml.safe_dump({"name": "generated", "architecture": arch}))
    assert parse_spec(dump_spec(spec)) == spec
    shapes = parameter_shapes(spec.architecture)
    assert ("unembed.W_U" in shapes) != spec.architecture.embeddings.tied
    assert parameter_count(spec.architecture) == sum(math.prod(s) for s in shapes.values())


_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=5)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BASES), st.data())
def test_any_mutation_is_accepted_or_reported_never_a_crash(base, data):
    spec = copy.deepcopy(base)
    node = spec
    path = []
    while isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node)))
        path.append(key)
        if not isinstance(node[key], dict) or data.draw(st.booleans()):
            node[key] = data.draw(_leaves)
            break
        node = node[key]
    try:
        parse_spec(yaml.safe_dump(spec))
    except SpecError as exc:
        assert exc.problems and all(p.render() for p in exc.problems)
