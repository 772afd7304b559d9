"""`symcomp import-hf` end to end: the written spec, and nothing written on bad input."""

from __future__ import annotations

import json

from symcomp.spec import load_spec
from tests.conftest import ROOT, SPECS

CONFIGS = ROOT / "tests" / "data" / "hf_configs"


def test_import_writes_a_spec_equal_to_the_example(run_cli, tmp_path):
    out = tmp_path / "llama.yaml"
    code, _, err = run_cli("import-hf", str(CONFIGS / "llama-2-7b-v5"), "-o", str(out))
    assert code == 0, err
    imported = load_spec(out)
    assert imported.architecture == load_spec(SPECS / "llama-2-7b.yaml").architecture
    assert [p.name for p in tmp_path.iterdir()] == ["llama.yaml"]  # no temporary left behind


def test_import_to_stdout_then_check(run_cli, tmp_path):
    code, out, _ = run_cli("import-hf", str(CONFIGS / "gpt2" / "config.json"))
    assert code == 0
    path = tmp_path / "gpt2.yaml"
    path.write_text(out)
    code, summary, _ = run_cli("check", str(path), "--json")
    assert code == 0 and json.loads(summary)["parameters"] == 124_439_808


def test_unsupported_family_exits_2_and_writes_nothing(run_cli, tmp_path):
    config = json.loads((CONFIGS / "gpt2" / "config.json").read_text())
    config["model_type"] = "t5"
    src = tmp_path / "config.json"
    src.write_text(json.dumps(config, indent=2))
    out = tmp_path / "out" / "spec.yaml"
    code, _, err = run_cli("import-hf", str(src), "-o", str(out))
    assert code == 2
    assert "model_type" in err and "gpt2" in err and "Traceback" not in err
    assert not out.exists()


def test_malformed_json_exits_2_with_its_position(run_cli, tmp_path):
    src = tmp_path / "config.json"
    src.write_text('{\n  "model_type": "gpt2",\n  "n_embd": 768,,\n}\n')
    out = tmp_path / "spec.yaml"
    code, _, err = run_cli("import-hf", str(src), "-o", str(out))
    assert code == 2
    assert f"{src}:3:" in err and "malformed JSON" in err
    assert not out.exists()


def test_failed_import_keeps_an_existing_output(run_cli, tmp_path):
    out = tmp_path / "spec.yaml"
    out.write_text("previous\n")
    code, _, _ = run_cli("import-hf", str(tmp_path / "missing"), "-o", str(out))
    assert code == 2
    assert out.read_text() == "previous\n"
