"""``use_numerics("transformers")``: the generated model rounds where transformers' modeling code
does (RMSNorm and RoPE's angles in float32, whatever the model's dtype), so that it reproduces
stock transformers, not only transformers with those float32 islands patched to float64."""

from __future__ import annotations

import pytest
import torch

from symcomp.hf import from_transformers

try:
    import hf_tiny
except ImportError:  # tests/ became a package
    from tests import hf_tiny

ROPE_FAMILIES = ["llama", "mistral", "qwen2", "gemma", "pythia", "phi"]


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (3, 6), generator=torch.Generator().manual_seed(0))


def _stock(family: str, dtype: torch.dtype = torch.float64):
    return hf_tiny.build(family, float64_norms=False).to(dtype)


def _gap(model, hf, ids) -> float:
    with torch.no_grad():
        expected = torch.log_softmax(hf(input_ids=ids).logits, dim=-1)
        return float((model.log_probs(ids) - expected).abs().max())


@pytest.mark.parametrize("family", ROPE_FAMILIES)
def test_transformers_numerics_reproduce_stock_transformers_in_float64(family):
    hf = _stock(family)
    model, reduced, _ = from_transformers(hf)
    ids = _ids(hf.config.vocab_size)
    own = _gap(model, hf, ids)
    assert own > 1e-10  # the float32 islands are real: symcomp's own numerics do not have them
    assert _gap(model.use_numerics("transformers"), hf, ids) <= 1e-13
    # the reduced model's islands round at its chart point, another point of the same orbit:
    # it agrees to float32's rounding, not to float64's
    assert _gap(reduced.use_numerics("transformers"), hf, ids) <= 1e-5
    assert _gap(model.use_numerics("symcomp"), hf, ids) == own


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_transformers_numerics_in_float32(family):
    hf = _stock(family, torch.float32)
    model, _, _ = from_transformers(_stock(family))
    model = model.to(torch.float32).use_numerics("transformers")
    assert _gap(model, hf, _ids(hf.config.vocab_size)) <= 1e-5


def test_an_unknown_numerics_is_refused():
    model, _, _ = from_transformers(_stock("llama"))
    with pytest.raises(ValueError, match="symcomp, transformers"):
        model.use_numerics("float16")
