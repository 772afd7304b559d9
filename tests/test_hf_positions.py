"""The position features of issue 24 at the edges: what import-hf refuses (one error naming the
key and the missing feature, exit 2), what the spec checks reject, and the kernels' position
rows against transformers' own formulas. The families themselves run in test_hf_families."""

from __future__ import annotations

import math

import pytest
import torch
import transformers

from symcomp.hf import import_hf_config
from symcomp.ir.interpreter import padded_position_rows, sinusoid_table
from symcomp.spec import load_spec

try:
    import hf_families
except ImportError:  # tests/ became a package
    from tests import hf_families


def _refused(run_cli, tmp_path, cfg, key: str, words: str) -> None:
    cfg.save_pretrained(tmp_path)
    code, out, err = run_cli("import-hf", str(tmp_path), "-o", str(tmp_path / "spec.yaml"))
    assert code == 2, out + err
    assert key in err and words in err, err
    assert "Traceback" not in err


def test_smollm3_sliding_nope_layers_refused(run_cli, tmp_path):
    cfg = hf_families.CONFIGS["smollm3"]()
    cfg.use_sliding_window, cfg.sliding_window = True, 3
    cfg.layer_types = None  # derived again from the NoPE layers: layer 1 slides
    _refused(run_cli, tmp_path, cfg, "use_sliding_window", "per-layer attention window")


def test_xglm_zeroed_row_that_a_position_reads_refused(run_cli, tmp_path):
    cfg = hf_families.CONFIGS["xglm"]()
    cfg.pad_token_id = 4  # row 4 = position 2 + offset 2
    _refused(run_cli, tmp_path, cfg, "pad_token_id", "zeroed row")


def test_roberta_without_padding_token_refused(run_cli, tmp_path):
    cfg = hf_families.CONFIGS["roberta"]()
    cfg.pad_token_id = None
    _refused(run_cli, tmp_path, cfg, "pad_token_id", "needs one")


def test_smollm3_default_nope_layers(tmp_path):
    cfg = hf_families.config(
        "smollm3", hidden_size=8, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=8
    )
    cfg.save_pretrained(tmp_path)
    assert import_hf_config(tmp_path).architecture.positions.nope_layers == [3, 7]


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("nope_layers", [1, 0], "increasing"),
        ("nope_layers", [2], "below layers"),
    ],
)
def test_bad_nope_layers_rejected(tmp_path, key, value, words):
    text = f"""
name: nope
architecture:
  kind: causal_lm
  vocab_size: 40
  max_positions: 6
  width: 8
  layers: 2
  block: pre_norm
  norm: {{type: rmsnorm, eps: 0.1}}
  attention: {{heads: 2, bias: false}}
  positions: {{type: rope, base: 10, {key}: {value}}}
  mlp: {{hidden: 12, activation: swiglu, bias: false}}
  embeddings: {{tied: false}}
"""
    path = tmp_path / "nope.yaml"
    path.write_text(text)
    with pytest.raises(Exception, match=words):
        load_spec(path)


def test_padding_needs_an_offset(tmp_path):
    path = tmp_path / "pad.yaml"
    path.write_text(
        """
name: pad
architecture:
  kind: masked_lm
  vocab_size: 40
  max_positions: 6
  width: 8
  layers: 1
  block: post_norm
  norm: {type: layernorm, eps: 0.1}
  attention: {heads: 2, bias: true}
  positions: {type: learned, padding_token: 1}
  mlp: {hidden: 12, activation: gelu, bias: true}
  embeddings: {tied: true}
"""
    )
    with pytest.raises(Exception, match="offset >= 1"):
        load_spec(path)


def test_position_rows_match_transformers():
    ids = torch.tensor([[5, 1, 7, 1, 1, 9], [1, 1, 3, 4, 1, 2]])
    roberta = transformers.models.roberta.modeling_roberta.RobertaEmbeddings
    expected = roberta.create_position_ids_from_input_ids(ids, 1)
    assert torch.equal(padded_position_rows(ids, 1, 2), expected)


def test_sinusoid_table_matches_xglm():
    xglm = transformers.models.xglm.modeling_xglm.XGLMSinusoidalPositionalEmbedding
    for width in (8, 9):
        expected = xglm.get_embedding(10, width).double()  # float32 inside
        got = sinusoid_table(10, width, 10000.0, 0)
        assert float((got - expected).abs().max()) < 1e-6
        assert got[3, 0] == pytest.approx(math.sin(3.0), abs=1e-15)
