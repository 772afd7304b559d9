"""CLI conventions (issue 27): errors in symcomp's own words with "did you mean" for keys,
values, families and group names, and import-hf from a Hub id in the local cache (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPT2 = (ROOT / "specs" / "gpt2-small.yaml").read_text(encoding="utf-8")
GPT2_CONFIG = json.loads((ROOT / "tests/data/hf_configs/gpt2/config.json").read_text())


def _check(run_cli, tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    code, _, err = run_cli("check", str(path))
    assert code == 2 and err.startswith("error: ")
    return err


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("heads: 12", "haeds: 12", "unknown key (did you mean 'heads'?)"),
        ("gelu_tanh", "gelu_tahn", "value not accepted (did you mean 'gelu_tanh'?)"),
        ("type: learned", "type: learnd", "positions.type: value not accepted (did you mean"),
        ("symmetries: auto", "symmetries: [residual_rotaton]", "(did you mean 'residual_rotation"),
        ("heads: 12", "heads: twelve", "heads: expected an integer; found 'twelve'"),
        ("heads: 12", "heads: 0", "heads: too small; found 0; accepted: greater than 0"),
        ("tied: true", "tied: 3", "tied: expected true or false"),
    ],
)
def test_errors_are_in_symcomps_words_with_suggestions(run_cli, tmp_path, old, new, says):
    err = _check(run_cli, tmp_path, GPT2.replace(old, new))
    assert says in err
    assert "Input should" not in err and "pydantic" not in err
    assert err.count("\n") == 1  # one problem: no echo from a default derived from it


def test_import_hf_suggests_a_family_and_a_misspelt_key(run_cli, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GPT2_CONFIG, "model_type": "gtp2"}))
    assert "(did you mean 'gpt2'?)" in run_cli("import-hf", str(path))[2]
    config = dict(GPT2_CONFIG)
    config["n_layers"] = config.pop("n_layer")
    path.write_text(json.dumps(config))
    code, _, err = run_cli("import-hf", str(path))
    assert code == 2 and "n_layer: required key is missing (is 'n_layers' a misspelling?)" in err


def _cache(root: Path, repo_id: str) -> Path:
    """A Hugging Face Hub cache holding ``repo_id``'s config.json, laid out as the Hub client
    lays it out (refs/main names the snapshot)."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(GPT2_CONFIG))
    return root


def test_import_hf_reads_a_hub_id_from_the_local_cache(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(_cache(tmp_path / "hub", "openai-community/gpt2")))
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("import-hf", "openai-community/gpt2")
    assert code == 0
    assert "name: gpt2\n" in out and "config openai-community/gpt2 (model_type gpt2)" in out
    code, out, err = run_cli("import-hf", "meta-llama/Llama-2-7b-hf")
    assert code == 2 and "not" not in out
    assert "no config.json for the Hub id 'meta-llama/Llama-2-7b-hf'" in err
    assert "hf download meta-llama/Llama-2-7b-hf config.json" in err
