"""Generated models as people use them: padded batches (``attention_mask``), the key/value cache
and greedy decoding (``generate``), each against transformers' own model of the same config.

Positions count the tokens, not the padding (transformers' ``generate`` does the same), so a
padded forward is compared with transformers given those position ids, its float32 islands
lifted to float64 (the same formulas): log-probs agree within 1e-10. Greedy decoding runs on
stock transformers (some of those patches have no cache) and agrees token for token.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from symcomp.hf import from_transformers

try:
    import hf_families
    import hf_tiny
except ImportError:  # tests/ became a package
    from tests import hf_families, hf_tiny

# one family per way of placing tokens: learned positions (gpt2, gpt_bigcode's multi-query),
# learned with an offset (opt), encoders (bert; roberta's positions from its padding ids), RoPE
# with a window (mistral), ALiBi (bloom), soft-capping with alternating windows (gemma2),
# sinusoids (xglm), NoPE layers (smollm3), a mixture of experts (mixtral)
FAMILIES = [
    "gpt2",
    "opt",
    "bert",
    "roberta",
    "mistral",
    "bloom",
    "gemma2",
    "xglm",
    "smollm3",
    "gpt_bigcode",
    "mixtral",
]
SLOW_FAMILIES = sorted((set(hf_tiny.FAMILIES) | set(hf_families.CONFIGS)) - set(FAMILIES))

# transformers' own limits, and how the tests step around them
FLOAT32 = {"xglm"}  # its masked attention fills with finfo(float64).min, which overflows a float
RIGHT_PADDED = {"gemma2"}  # its eager attention gives NaN behind a left-padded prompt

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def _transformers_model(family: str, *, float64: bool = False) -> torch.nn.Module:
    """transformers' model of the family's tiny config: stock, or with its float32 islands in
    float64 (``float64``)."""
    if family in hf_families.CONFIGS:
        model = hf_families.build(hf_families.CONFIGS[family]())
        if float64:
            hf_families.patch_float64_(model)
    else:
        model = hf_tiny.build(family, float64_norms=float64)
        if float64:
            hf_tiny.float64_rope_(model)
        if family == "opt":  # hf_tiny sets OPT's LayerNorm eps on the modules; its config says 1e-5
            for module in model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.eps = 1e-5
    return model.float() if family in FLOAT32 else model


def _prompts(hf, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts of 4 tokens: one padded by 2, one by 1, one whole (left or right)."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, hf.config.vocab_size, (3, 4), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    mask[1, :1] = 0
    if not left:
        mask = mask.flip(1)
    pad = hf.config.pad_token_id
    if pad is not None:  # where a model reads padding off the ids (RoBERTa's positions)
        ids = ids.masked_fill(mask == 0, pad)
    return ids, mask


def _hf_log_probs(hf, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    kwargs = {"attention_mask": mask}
    if (
        "position_ids" in inspect.signature(hf.forward).parameters
        and hf.config.pad_token_id is None
    ):
        kwargs["position_ids"] = (mask.cumsum(1) - 1).masked_fill(mask == 0, 0)
    with torch.no_grad():
        return torch.log_softmax(hf(input_ids=ids, **kwargs).logits, dim=-1)


def _check_padded(family: str) -> None:
    hf = _transformers_model(family, float64=True)
    model, _, _ = from_transformers(hf)
    causal = hasattr(model, "generate")
    for left in (False, True) if causal and family not in RIGHT_PADDED else (False,):
        ids, mask = _prompts(hf, left=left)
        with torch.no_grad():
            ours = model.log_probs(ids, mask)
        gap = (ours - _hf_log_probs(hf, ids, mask))[mask.bool()].abs().max()
        assert float(gap) <= TOLERANCE[ours.dtype], (family, left, float(gap))
        assert torch.isfinite(ours).all()  # padding queries read themselves: finite, unread


def _check_generate(family: str) -> None:
    hf = _transformers_model(family)
    model, reduced, _ = from_transformers(hf)
    ids, mask = _prompts(hf, left=True)
    if family in RIGHT_PADDED:
        mask = torch.ones_like(ids)
    expected = hf.generate(
        ids, attention_mask=mask, max_new_tokens=3, do_sample=False, num_beams=1, pad_token_id=0
    )
    assert torch.equal(model.generate(ids, 3, attention_mask=mask), expected)
    assert torch.equal(reduced.generate(ids, 3, attention_mask=mask), expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_padded_batch_gives_transformers_log_probs(family):
    _check_padded(family)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("bert", "roberta")])
def test_greedy_decoding_matches_transformers_token_for_token(family):
    _check_generate(family)


@pytest.mark.slow
@pytest.mark.parametrize("family", SLOW_FAMILIES)
def test_every_other_family_pads_and_decodes_as_transformers(family):
    _check_padded(family)
    _check_generate(family)


def test_decoding_stops_at_eos_and_pads_as_transformers():
    hf = _transformers_model("mistral")
    model, _, _ = from_transformers(hf)
    ids, mask = _prompts(hf, left=True)
    first = model.generate(ids, 1, attention_mask=mask)[:, -1]
    eos, pad = int(first[1]), 0  # row 1 ends at once, the others go on
    kwargs = {"attention_mask": mask, "eos_token_id": eos, "pad_token_id": pad}
    ours = model.generate(ids, 3, **kwargs)
    expected = hf.generate(ids, max_new_tokens=3, do_sample=False, num_beams=1, **kwargs)
    assert torch.equal(ours, expected)
    assert ours[1, 5:].eq(pad).all() and ours[1, 4] == eos


def test_the_cache_gives_the_logits_of_one_forward():
    model, _, _ = from_transformers(_transformers_model("llama"))
    from symcomp_runtime.decoding import Cache

    ids = torch.randint(0, model.sizes.vocab, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(ids)
        cache = Cache()
        parts = [model(ids[:, :3], cache=cache), model(ids[:, 3:5], cache=cache)]
        parts.append(model(ids[:, 5:], cache=cache))
    assert cache.length == 6
    assert (torch.cat(parts, dim=1) - whole).abs().max() <= 1e-12


def test_bad_masks_and_overlong_inputs_are_refused_in_words():
    model, _, _ = from_transformers(_transformers_model("gpt2"))
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 4\); expected \(2, 3\)"):
        model(ids, torch.ones(2, 4))
    with pytest.raises(ValueError, match="7 tokens: longer than the 6 positions"):
        model.generate(torch.zeros(1, 6, dtype=torch.long), 2)
    encoder, encoder_reduced, _ = from_transformers(_transformers_model("bert"))
    assert not hasattr(encoder, "generate")
    with pytest.raises(TypeError, match="not a causal language model"):
        encoder_reduced.generate(ids, 1)
