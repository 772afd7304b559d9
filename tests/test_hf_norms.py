"""The norms families' importer: what it reads from a config, and one error (exit 2) naming the
key for what the spec language cannot express. (The end-to-end checks against transformers are
tests/test_hf_families.py.)"""

from __future__ import annotations

import json

import pytest

try:
    import hf_families
except ImportError:  # tests/ became a package
    from tests import hf_families

from symcomp.hf import import_hf_config


def _write(tmp_path, name: str, **overrides) -> str:
    cfg = hf_families.CONFIGS[name]().to_dict()
    cfg.update(overrides)
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    return str(folder)


@pytest.mark.parametrize(
    ("name", "key", "value", "words"),
    [
        ("cohere", "use_qk_norm", True, "own gain"),
        ("qwen3", "attention_bias", True, "QK-norm"),
        ("olmo2", "attention_bias", True, "QK-norm"),
        ("gemma2", "layer_types", ["full_attention", "chunked_attention"], "layer types"),
        ("gemma2", "layer_types", ["full_attention"], "one type per layer"),
    ],
)
def test_unsupported_key_is_one_error_naming_it(tmp_path, run_cli, name, key, value, words):
    code, out, err = run_cli("import-hf", _write(tmp_path, name, **{key: value}))
    assert code == 2 and not out
    assert key in err and words in err and "Traceback" not in err


def test_what_the_builders_read(tmp_path):
    gemma2 = import_hf_config(_write(tmp_path, "gemma2")).architecture
    assert gemma2.block == "sandwich" and gemma2.norm.gain == "one_plus_w"
    assert gemma2.attention.sliding_window == 3 and gemma2.attention.sliding_layers == [0]
    assert gemma2.attention.scale == 7**-0.5 and gemma2.attention.softcap == 1.5
    assert gemma2.embeddings.logit_softcap == 2.0 and gemma2.embeddings.scale == "sqrt(width)"
    granite = import_hf_config(_write(tmp_path, "granite")).architecture
    assert (granite.residual_scale, granite.attention.scale) == (0.7, 0.3)
    assert granite.embeddings.logit_scale == 1 / 2.5 and granite.embeddings.scale == 3.0
    qwen3 = import_hf_config(_write(tmp_path, "qwen3")).architecture
    assert qwen3.attention.qk_norm == "per_head" and qwen3.block == "pre_norm"
    olmo2 = import_hf_config(_write(tmp_path, "olmo2")).architecture
    assert olmo2.attention.qk_norm == "full_width" and olmo2.block == "post_sublayer_norm"
    cohere = import_hf_config(_write(tmp_path, "cohere")).architecture
    assert cohere.positions.pair_layout == "adjacent" and cohere.embeddings.logit_scale == 0.3
    assert cohere.block == "parallel_one_norm" and not cohere.norm.bias


# Variants beyond the CI configs: untied (B7 against the final soft-cap), multi-query and
# one layer, every multiplier at once; each the full check of tests/hf_families.py.
VARIANTS = {
    "gemma2": dict(
        tie_word_embeddings=False, num_attention_heads=2, num_key_value_heads=1,
        num_hidden_layers=1, layer_types=["sliding_attention"],
    ),
    "qwen3": dict(num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True),
    "olmo2": dict(num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=2),
    "granite": dict(num_hidden_layers=2, tie_word_embeddings=True),
    # V = 72: layer 0's gated MLP of a parallel block reads the current token only, and at
    # V = 40 (V d = 320 against its 3 d f = 288 weights) the instance had 9 null directions of
    # its own (nullity 253 against 244); see symmetry.analysis.parallel_vocab
    "cohere": dict(
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False, vocab_size=72,
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_reduces_and_counts_exactly(name, run_cli, tmp_path, monkeypatch):
    base = hf_families.CONFIGS[name]

    def variant():
        cfg = base()
        for key, value in VARIANTS[name].items():
            setattr(cfg, key, value)
        return cfg

    key = f"{name}-variant"
    monkeypatch.setitem(hf_families.CONFIGS, key, variant)
    if name in hf_families.STOCK_TOLERANCE:
        monkeypatch.setitem(hf_families.STOCK_TOLERANCE, key, hf_families.STOCK_TOLERANCE[name])
    hf_families.check_family(key, run_cli, tmp_path)
