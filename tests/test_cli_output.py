"""What `analyze` and `verify` show (issue 27): full names, shares, folded discrete groups, the
JSON (sizes, spec-language actions, verify's JSON alone on stdout), `analyze --report`, the exit
rule of `verify`, and `--version`. One measured analysis of a tiny spec serves the module."""

from __future__ import annotations

import json
import sys

import pytest

from symcomp.lang import parse_expr, unparse
from tests.conftest import SPECS

LLAMA = SPECS / "tiny" / "llama.yaml"


@pytest.fixture(scope="module")
def analysis(one_torch_thread):
    from symcomp.pipeline import analyze, load

    return analyze(load(LLAMA))


def test_version_names_the_package_and_the_runtime(run_cli):
    import symcomp_runtime

    import symcomp

    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.strip() == (
        f"symcomp {symcomp.__version__} (symcomp-runtime {symcomp_runtime.__version__})"
    )


def test_analyze_json_carries_sizes_shares_and_spec_language_actions(analysis):
    from symcomp.report import analysis_json
    from symcomp.spec import load_spec
    from symcomp.spec.params import sizes_of

    data = json.loads(json.dumps(analysis_json(analysis)))
    arch = load_spec(LLAMA).architecture
    assert data["sizes"]["d"] == arch.width and data["sizes"]["L"] == arch.layers
    assert data["sizes"]["V"] == sizes_of(arch).as_dict()["vocab"]
    groups = {g["name"]: g for g in data["groups"]}
    assert groups["qk_gauge"]["action"] == {
        "layers.*.attn.W_Q": "W_Q A",
        "layers.*.attn.W_K": "W_K A^-T",
    }
    for g in data["groups"]:
        for text in g["action"].values():
            assert "**" not in text and "DiagMatrix" not in text, text
            assert unparse(parse_expr(text)) == text  # the spec printer's own text
        assert g["percent"] == pytest.approx(100 * g["dimension"] / data["parameters"])
        assert sum(g["per_layer"].values()) <= max(g["dimension"], 0)
    assert sum(g["percent"] for g in data["groups"]) == pytest.approx(data["redundant_percent"])
    # one layer: the groups per layer lie in layer 0, those per model in none
    assert groups["mlp_scaling"]["per_layer"] == {"0": groups["mlp_scaling"]["dimension"]}
    assert groups["residual_rotation"]["per_layer"] == {}
    assert data["confirmed"] and data["measured"][0]["verdict"] == "exact"


def test_analyze_table_full_names_shares_and_folded_groups(run_cli, analysis):
    # the measurement is cached from the fixture's analysis: the same spec, formula and seed
    code, out, _ = run_cli("analyze", str(LLAMA))
    assert code == 0, out
    assert "norm_gain_scaling_layers_i_attn_norm" in out and "…" not in out
    assert "share" in out and "4.3%" in out  # vo_gauge: 32 of 744
    assert "2 groups of dimension 0 folded away" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert not any("head_permutation" in row for row in rows)
    assert f"{analysis.redundant:,} (15.1%)" in out


def test_report_writes_markdown_and_html_the_same_bytes_twice(analysis, tmp_path):
    pytest.importorskip("matplotlib")
    from symcomp.report import write_report

    md = write_report(analysis, tmp_path / "r.md")
    assert [p.name for p in md] == ["r.md", "r-groups.svg", "r-layers.svg"]
    first = [p.read_bytes() for p in md]
    assert [p.read_bytes() for p in write_report(analysis, tmp_path / "r.md")] == first
    text = md[0].read_text()
    assert "![redundancy per group](r-groups.svg)" in text and "| 0 | 68 |" in text
    assert "2 groups of dimension 0 folded away" in text
    for svg in md[1:]:
        body = svg.read_text()
        assert "<svg" in body and "<dc:date>" not in body
    assert "vo_gauge" in md[1].read_text() and "model" in md[2].read_text()
    (page,) = write_report(analysis, tmp_path / "r.html")
    html = page.read_text()
    assert html.count("<svg") == 2 and "<?xml" not in html and "4.3%" in html


def test_report_without_matplotlib_names_the_extra(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    code, _, err = run_cli("analyze", str(LLAMA), "--report", str(tmp_path / "r.md"))
    assert code == 2 and "symcomp[report]" in err and "Traceback" not in err
    assert not (tmp_path / "r.md").exists()


def test_report_of_an_unknown_type_is_refused(run_cli, tmp_path):
    code, _, err = run_cli("analyze", str(LLAMA), "--report", str(tmp_path / "r.pdf"))
    assert code == 2 and ".md or .html" in err


# --- verify: the exit rule, on reports made up to the case ------------------------------------


def _witness(derived: int, measured: int, auto: bool, not_null=()):
    from symcomp.verify.witness import Witness

    return Witness((("d", 8),), 100, derived, measured, 1e8, True, auto, 0, (), tuple(not_null))


def _check(name: str, symbolic: str, error: float):
    from symcomp.verify.report import GroupCheck

    return GroupCheck(name, symbolic, (), error)


@pytest.mark.parametrize(
    ("checks", "witness", "code"),
    [
        ([("qk_gauge", "proven", 1e-13)], (8, 112, False), 0),  # a listed subset: partial
        ([("qk_gauge", "refuted", 1e-13)], (112, 112, True), 1),  # a refuted group
        ([("rotation", "not admitted by this graph", float("inf"))], (8, 112, False), 1),
        ([("qk_gauge", "proven", 1e-13)], (76, 144, True), 1),  # auto undercounts
        ([("qk_gauge", "proven", 1e-13)], (150, 144, True), 1),  # auto overcounts
    ],
    ids=["partial", "refuted", "not-admitted", "undercount", "overcount"],
)
def test_verify_exit_rule_and_json_alone_on_stdout(run_cli, monkeypatch, checks, witness, code):
    import symcomp.pipeline
    from symcomp.verify.report import VerifyReport

    def fake(spec, *, symbolic, progress):
        progress("group qk_gauge at d=8")
        made = tuple(_check(*c) for c in checks)
        return VerifyReport(spec.name, made, (_witness(*witness),) * 2, instance=(("d", 8),))

    monkeypatch.setattr(symcomp.pipeline, "verify", fake)
    got, out, err = run_cli("verify", str(LLAMA), "--json")
    assert got == code, err
    data = json.loads(out)  # stdout holds the JSON alone
    assert data["ok"] == (code == 0) and data["instance"] == {"d": 8}
    assert (data["derived"], data["measured"]) == witness[:2]
    assert "tiny instance of the same structure: d=8" in err
    if witness[0] < witness[1] and not witness[2]:
        assert "declared 8 of measured 112" in err and data["verdict"] == "partial"
    if checks[0][2] == float("inf"):
        assert data["checks"][0]["numeric_error"] is None  # JSON has no Infinity
    assert ("NOT VERIFIED" in err) == (code == 1)


def test_verify_tells_its_progress_naming_the_instance(one_torch_thread):
    # the measurements are cached from test_cli_analyze_verify when it ran first in the process
    from symcomp.pipeline import load, verify

    steps: list[str] = []
    report = verify(load(LLAMA), symbolic=False, progress=steps.append)
    sizes = ", ".join(f"{k}={v}" for k, v in report.instance)
    assert dict(report.instance)["d"] == 8
    assert f"group qk_gauge at {sizes}" in steps
    nullity = [s for s in steps if s.startswith("Jacobian nullity at ")]
    assert len(nullity) == 2 and nullity[0] != nullity[1]


def test_per_layer_breakdown_adds_up_on_a_post_norm_stack(one_torch_thread):
    # unmeasured: the per-layer split is read off the groups (BERT: pinned per-layer copies)
    from symcomp.pipeline import analyze, load
    from symcomp.report import per_layer

    a = analyze(load(SPECS / "bert-base.yaml"), measured=False)
    layers, each, whole = per_layer(a)
    assert layers == list(range(12))
    assert sum(map(sum, each.values())) + sum(whole.values()) == a.redundant
    qk = next(g for g in a.groups if g.name == "qk_gauge")
    assert each["qk_gauge"] == [qk.dimension // 12] * 12
    for g in a.groups:  # a group per model lies in no layer
        if g.per == "model" and g.dimension:
            assert g.name in whole and g.name not in each, g.name
