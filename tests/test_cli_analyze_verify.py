"""`symcomp analyze` and `symcomp verify` end to end, false claims included."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, SPECS

try:
    from custom_catalogue import HEAD_MIXING
except ImportError:  # tests/ became a package
    from tests.custom_catalogue import HEAD_MIXING

CONFIGS = ROOT / "tests" / "data" / "hf_configs"


def test_analyze_json_has_the_promised_fields(run_cli):
    code, out, _ = run_cli("analyze", str(SPECS / "gpt2-small.yaml"), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["parameters"] == 124_439_808
    assert data["reduced_parameters"] == data["parameters"] - data["redundant"]
    assert sum(g["dimension"] for g in data["groups"]) == data["redundant"]
    assert {g["name"] for g in data["groups"]} >= {"qk_gauge", "vo_gauge", "overlap"}
    assert "L*g*k**2" in data["formula"]


def test_analyze_from_a_hugging_face_config(run_cli):
    _, from_spec, _ = run_cli("analyze", str(SPECS / "llama-2-7b.yaml"), "--json")
    code, from_hf, _ = run_cli("analyze", "--hf", str(CONFIGS / "llama-2-7b"), "--json")
    assert code == 0
    assert json.loads(from_hf)["redundant"] == json.loads(from_spec)["redundant"]


def test_analyze_prints_a_table(run_cli):
    code, out, _ = run_cli("analyze", str(SPECS / "mistral-7b.yaml"))
    assert code == 0
    assert "residual_rotation" in out and "reduced parameters" in out


@pytest.mark.parametrize(
    "argv",
    [("analyze", "missing.yaml"), ("analyze",), ("verify", "missing.yaml")],
    ids=["missing", "neither", "verify-missing"],
)
def test_bad_input_exits_2(run_cli, argv):
    code, _, err = run_cli(*argv)
    assert code == 2 and "Traceback" not in err


@pytest.mark.slow  # 13 min in CI: the full symbolic run and two Jacobians
def test_verify_passes_on_a_true_spec(run_cli):
    code, out, err = run_cli("verify", str(SPECS / "tiny" / "llama.yaml"), "--json")
    assert code == 0, err
    report = json.loads(out)  # stdout holds the JSON alone; the text went to stderr
    assert report["ok"] and report["measured"] == report["derived"] == 112
    assert report["verdict"] == "exact" and report["instance"]["d"] == 8
    assert "ok  qk_gauge" in err
    assert all(c["symbolic"] == "proven" for c in report["checks"])


@pytest.mark.slow  # verify measures two instances; analyze's refusal of the claim runs in CI
def test_verify_rejects_head_mixing_with_its_measured_error(run_cli, tmp_path):
    path = tmp_path / "claim.yaml"
    path.write_text((SPECS / "tiny" / "gpt2.yaml").read_text() + "symmetries:" + HEAD_MIXING)
    code, out, _ = run_cli("verify", str(path))
    assert code == 1
    assert "REJECTED head_mixing" in out
    assert float(out.split("max |d log p| = ")[1].split()[0]) > 1e-4


@pytest.mark.parametrize(
    ("spec", "tied"), [pytest.param("bert", None, marks=pytest.mark.slow), ("llama", True)]
)
def test_verify_rejects_a_rotation_the_graph_does_not_admit(run_cli, tmp_path, spec, tied):
    # a post-norm stream (BERT), and a tied unembedding behind a final gain
    text = (SPECS / "tiny" / f"{spec}.yaml").read_text()
    if tied:
        text = text.replace("embeddings: {tied: false}", "embeddings: {tied: true}")
    path = tmp_path / "claim.yaml"
    path.write_text(text + "symmetries: [residual_rotation]\n")
    code, out, _ = run_cli("verify", str(path), "--no-symbolic")
    assert code == 1
    assert "REJECTED residual_rotation: symbolic not admitted by this graph" in out


def test_verify_names_the_directions_a_partial_list_leaves_unexplained(run_cli, tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text((SPECS / "tiny" / "llama.yaml").read_text() + "symmetries: [qk_gauge]\n")
    code, out, _ = run_cli("verify", str(path), "--no-symbolic")
    assert code == 0  # a list need not be complete; nothing it claims is false
    assert "declared 8 of measured 112" in out and "tiny-llama: verified" in out
    touched = {
        line.split(" move ")[1].split(":")[0] for line in out.splitlines() if " move " in line
    }
    assert "layers.0.attn.W_V" in touched and "layers.0.mlp.W_down" in touched
    assert "layers.0.attn.W_Q" in touched  # residual rotation moves it too; A1 alone explains less


# --- the printed count is a measurement ------------------------------------------------------


def _listing(run_cli, tmp_path, symmetries: str, *extra: str) -> tuple[int, str]:
    path = tmp_path / "listed.yaml"
    path.write_text((SPECS / "tiny" / "llama.yaml").read_text() + f"symmetries: {symmetries}\n")
    code, out, _ = run_cli("analyze", str(path), *extra)
    return code, out


def test_analyze_confirms_its_count_with_the_jacobian(run_cli):
    code, out, _ = run_cli("analyze", str(SPECS / "tiny" / "llama.yaml"), "--json")
    assert code == 0
    data = json.loads(out)
    (measured,) = data["measured"]
    assert data["confirmed"] and measured["measured"] == measured["derived"] == 112
    assert dict(measured["instance"])["d"] == 8 and measured["trustworthy"]


def test_analyze_reports_a_partial_list_and_discovers_the_rest(run_cli, tmp_path):
    code, out = _listing(run_cli, tmp_path, "[qk_gauge, head_permutation]", "--discover")
    assert code == 0, out
    assert "declared 8 of measured 112" in out
    assert "104 null directions lie outside the named groups" in out
    assert "move layers.0.attn.W_V" in out and "move layers.0.mlp.W_down" in out


def test_analyze_of_discrete_groups_only(run_cli, tmp_path):
    code, out = _listing(run_cli, tmp_path, "[head_permutation, neuron_permutation]")
    assert code == 0, out
    assert "declared 0 of measured 112" in out


def test_analyze_refuses_a_listed_group_that_moves_the_log_probs(run_cli, tmp_path):
    path = tmp_path / "claim.yaml"
    path.write_text((SPECS / "tiny" / "gpt2.yaml").read_text() + "symmetries:" + HEAD_MIXING)
    code, out, _ = run_cli("analyze", str(path))
    assert code == 1
    assert "COUNT NOT CONFIRMED (contradicted)" in out
    assert "groups that change the log-probabilities: head_mixing" in out


def test_verify_measures_a_second_instance_differing_in_every_size(run_cli):
    code, out, err = run_cli(
        "verify", str(SPECS / "tiny" / "llama.yaml"), "--no-symbolic", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    first, second = (w["instance"] for w in report["witnesses"])
    assert all(first[s] != second[s] for s in first), (first, second)
    assert all(w["measured"] == w["derived"] for w in report["witnesses"])
