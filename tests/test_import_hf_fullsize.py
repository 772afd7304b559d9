"""Every full-size published config in ``tests/data/hf_configs`` imports, and the imported spec
has exactly the parameter count of the transformers model built from the same config.

The transformers model is built on the meta device (no memory, no initialisation), so a
7B-parameter config costs a fraction of a second; the count catches a wrong size, a missing or
extra bias, norm or head that a tiny config might hide.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from symcomp.errors import ImportHFError
from symcomp.hf import import_hf_config
from symcomp.spec import parameter_count

DATA = Path(__file__).resolve().parent / "data" / "hf_configs"
FOLDERS = sorted(p.name for p in DATA.iterdir() if (p / "config.json").is_file())
MASKED_LM = {"bert", "roberta"}


def test_every_folder_is_listed() -> None:
    # a guard against an empty or moved data directory silently skipping every case
    assert len(FOLDERS) >= 30


@pytest.mark.parametrize("folder", FOLDERS)
def test_fullsize_config_imports_with_transformers_parameter_count(
    folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = import_hf_config(DATA / folder)
    config = transformers.AutoConfig.from_pretrained(os.fspath(DATA / folder))
    assert spec.hf_model_type == config.model_type
    auto = (
        transformers.AutoModelForMaskedLM
        if config.model_type in MASKED_LM
        else transformers.AutoModelForCausalLM
    )
    with torch.device("meta"):
        model = auto.from_config(config)
    # parameters() yields a tied (shared) tensor once
    expected = sum(p.numel() for p in model.parameters())
    assert parameter_count(spec.architecture) == expected


# Keys released configs carry that transformers never reads but that name the function the
# checkpoint was trained with (or a twin of a key transformers reads): only the value
# transformers computes is accepted. (folder, key, value, words of the message)
REFUSED = [
    ("gpt-j-6b", "rotary", False, "always applies rotary"),
    ("gpt-j-6b", "scale_attn_weights", False, "1/sqrt(head width)"),
    ("phi3-mini-4k", "attention_bias", True, "no attention biases"),
    ("starcoder2-7b", "norm_type", "rms_norm", "LayerNorm"),
    ("starcoder2-7b", "mlp_type", "gated", "ungated MLP"),
    ("starcoder2-7b", "layer_norm_epsilon", 1e-6, "differ"),
    ("gemma2-9b", "hidden_act", "silu", "different activations"),
    ("falcon-7b", "apply_residual_connection_post_layernorm", True, "after the norm"),
    # a key no builder knows is still refused for these families
    ("bloom-560m", "not_a_bloom_key", 1, "key not known"),
]


def _edited(tmp_path: Path, folder: str, **changes: Any) -> Path:
    config = json.loads((DATA / folder / "config.json").read_text())
    config.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(config, indent=2))
    return tmp_path


@pytest.mark.parametrize(("folder", "key", "value", "words"), REFUSED)
def test_refused(tmp_path: Path, folder: str, key: str, value: Any, words: str) -> None:
    with pytest.raises(ImportHFError) as info:
        import_hf_config(_edited(tmp_path, folder, **{key: value}))
    problem = info.value.problems[0]
    assert problem.key_path == (key,) and words in problem.message


def test_falcon_position_limit_defaults_to_falcon_config(tmp_path: Path) -> None:
    # falcon-7b's config has no max_position_embeddings: FalconConfig's 2048 applies
    assert "max_position_embeddings" not in json.loads((DATA / "falcon-7b/config.json").read_text())
    assert import_hf_config(DATA / "falcon-7b").architecture.max_positions == 2048
    given = _edited(tmp_path, "falcon-7b", max_position_embeddings=4096)
    assert import_hf_config(given).architecture.max_positions == 4096
