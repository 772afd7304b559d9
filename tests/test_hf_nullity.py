"""Ground truth: the Jacobian nullity of tiny transformers models, and the tool that measures it.

The three counts of the design note (GPT-2 style untied: 239; Llama style untied: 112, tied: 68)
validate the tool; for the nine tiny families the test only asserts that the nullity is stable
when the sample doubles and that the spectral gap is trustworthy (the measured values are
printed with ``pytest -s``); the derivation is compared against them in its own tests.
"""

from __future__ import annotations

import math

import pytest
import torch

from symcomp.spec import parameter_count
from symcomp.verify.nullity import (
    NullityMeasurement,
    covering_inputs,
    jacobian_of_logprobs,
    measure_nullity,
    null_space,
    nullity_report,
    randomize_,
    sample_inputs,
    sequences_needed,
)

try:
    import hf_tiny
except ImportError:  # tests/ became a package
    from tests import hf_tiny

# case -> (family, tied override)
CASES: dict[str, tuple[str, bool | None]] = {
    "gpt2-untied": ("gpt2", False),
    "llama-untied": ("llama", False),
    "llama-tied": ("llama", True),
    **{family: (family, None) for family in hf_tiny.FAMILIES},
}

DESIGN_NOTE = {"gpt2-untied": 239, "llama-untied": 112, "llama-tied": 68}

_cache: dict[tuple[str, bool, bool], NullityMeasurement] = {}


def measure(case: str, *, float64_norms: bool = True) -> NullityMeasurement:
    family, tied = CASES[case]
    spec = hf_tiny.tiny_spec(family, tied=tied)
    # one Jacobian per structure: "llama" is "llama-untied"
    key = (family, spec.architecture.embeddings.tied, float64_norms)
    if key not in _cache:
        model = hf_tiny.build(family, tied=tied, float64_norms=float64_norms)
        params = hf_tiny.hf_params(model)
        assert sum(p.numel() for p in params.values()) == parameter_count(spec.architecture)
        arch = spec.architecture
        _cache[key], _ = measure_nullity(
            hf_tiny.logprob_fn(model),
            params,
            vocab=arch.vocab_size,
            seq_len=arch.max_positions,
            generator=torch.Generator().manual_seed(7),
        )
    return _cache[key]


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    # Tiny tensors: one thread is far faster than several fighting over a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if not _cache:
        return
    print("\n\nfamily   tied   norms    params  nullity  stable  gap      trustworthy")
    for (family, tied, f64), m in _cache.items():
        r = m.report
        norms = "float64" if f64 else "float32"
        print(
            f"{family:8s} {tied!s:6s} {norms:8s} {r.parameters:6d} {r.nullity:8d}  "
            f"{m.stable!s:6s}  {r.gap:8.2g} {m.trustworthy}"
        )


@pytest.mark.parametrize("case", list(DESIGN_NOTE))
def test_design_note_counts(case: str) -> None:
    m = measure(case)
    assert m.stable, (m.half.summary(), m.report.summary())
    assert m.report.trustworthy and not m.report.ambiguous, m.report.summary()
    assert m.nullity == DESIGN_NOTE[case], m.report.summary()


@pytest.mark.parametrize("family", list(hf_tiny.FAMILIES))
def test_tiny_family_nullity_is_stable_and_trustworthy(family: str) -> None:
    m = measure(family)
    assert m.stable, (m.half.summary(), m.report.summary())
    assert m.trustworthy and not m.report.ambiguous, m.report.summary()


def test_float32_norms_blur_the_gap() -> None:
    """transformers computes RMSNorm in float32 even in a float64 model: the exact symmetries
    then sit at ~1e-6 instead of ~1e-13, and the tied Llama's gap falls below 1e3."""
    exact = measure("llama-tied")
    blurred = measure("llama-tied", float64_norms=False)
    assert blurred.report.gap < exact.report.gap / 100
    assert blurred.report.first_dropped > 1e-8


# --- the tool on known matrices and functions ------------------------------------------------


def test_report_finds_the_rank_of_a_known_matrix() -> None:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(200, 30, generator=g, dtype=torch.float64)
    B = torch.randn(30, 50, generator=g, dtype=torch.float64)
    J = A @ B  # rank 30 of 50 columns
    r = nullity_report(J)
    assert (r.rank, r.nullity, r.parameters, r.outputs) == (30, 20, 50, 200)
    assert r.trustworthy and not r.ambiguous
    N = null_space(J, r.nullity)
    assert N.shape == (50, 20)
    assert torch.allclose(N.T @ N, torch.eye(20, dtype=torch.float64), atol=1e-12)
    assert (J @ N).abs().max() < 1e-10


def test_report_full_rank_and_wide_matrices() -> None:
    g = torch.Generator().manual_seed(1)
    J = torch.randn(100, 20, generator=g, dtype=torch.float64)
    assert nullity_report(J).nullity == 0
    wide = torch.randn(5, 20, generator=g, dtype=torch.float64)
    r = nullity_report(wide)
    assert (r.rank, r.nullity) == (5, 15)
    assert null_space(wide, 15).shape == (20, 15)


def test_report_flags_a_small_gap_and_a_second_tier() -> None:
    g = torch.Generator().manual_seed(2)
    U, _ = torch.linalg.qr(torch.randn(60, 20, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    s = torch.cat([torch.logspace(0, -1, 10), torch.full((5,), 1e-2), torch.full((5,), 1e-14)])
    r = nullity_report(U @ torch.diag(s.double()) @ V.T)
    assert r.nullity == 5 and r.trustworthy
    s = torch.cat([torch.logspace(0, -1, 10), torch.full((5,), 1e-6), torch.full((5,), 1e-14)])
    r = nullity_report(U @ torch.diag(s.double()) @ V.T)
    assert r.ambiguous and {r.nullity, *(k for k, _ in r.alternatives)} == {5, 10}
    s = torch.cat([torch.logspace(0, -1, 15), torch.full((5,), 1e-3)])
    assert nullity_report(U @ torch.diag(s.double()) @ V.T).nullity == 0  # full rank
    s = torch.logspace(0, -16, 20)  # no gap anywhere
    assert not nullity_report(U @ torch.diag(s.double()) @ V.T).trustworthy


def test_jacobian_matches_autograd_and_finds_a_scaling_symmetry() -> None:
    """f(W1, W2) = log_softmax(relu(x W1) W2): each hidden unit has a positive scaling."""
    g = torch.Generator().manual_seed(3)
    params = {"W1": torch.zeros(4, 6), "W2": torch.zeros(6, 5)}
    params = {k: v.double() for k, v in params.items()}
    randomize_(params, g)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)

    def fn(p, inputs):
        return torch.log_softmax(torch.relu(inputs @ p["W1"]) @ p["W2"], dim=-1)

    J = jacobian_of_logprobs(fn, params, x)
    J_loop = jacobian_of_logprobs(fn, params, x, use_vmap=False)
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def flat_fn(v):
        return fn({"W1": v[:24].view(4, 6), "W2": v[24:].view(6, 5)}, x).reshape(-1)

    J_ref = torch.autograd.functional.jacobian(flat_fn, flat)
    assert J.shape == (40 * 5, 54)
    assert torch.allclose(J, J_ref, atol=1e-12) and torch.allclose(J_loop, J_ref, atol=1e-12)
    # a positive scaling per hidden unit (6), and W2 -> W2 + c 1^T for any c (6): it adds the
    # same constant to every logit of a sample, which log_softmax ignores
    assert nullity_report(J).nullity == 12


def test_randomize_is_generic() -> None:
    model = hf_tiny.build("gpt2")
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert (p != 0).all(), name
        elif p.ndim == 1:
            assert (p != 1).all() and p.std() > 0.05, name
        else:
            assert 0.1 < p.std() < 1.0, name


def test_sample_size_rule() -> None:
    assert sequences_needed(772, 6, 11) == math.ceil(7720 / 60)
    x = sample_inputs(11, 6, 5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 6) and x.dtype == torch.long and x.min() >= 0 and x.max() < 11


def test_covering_sample_reads_every_token_evenly() -> None:
    # 7 x 6 = 42 tokens of 40: every token once, two of them twice
    x = covering_inputs(40, 6, 7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 6) and x.dtype == torch.long
    counts = torch.bincount(x.reshape(-1), minlength=40)
    assert int(counts.min()) == 1 and int(counts.max()) == 2 and int(counts.sum()) == 42
    uniform = sample_inputs(40, 6, 7, torch.Generator().manual_seed(0))
    assert int((torch.bincount(uniform.reshape(-1), minlength=40) == 0).sum()) > 0
