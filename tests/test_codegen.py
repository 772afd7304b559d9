"""The compiler end to end: generated packages match the analysis, the interpreter and their
committed copies; compile refuses to overwrite what it did not write."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from symcomp_runtime.slices import reconstruct, translation_slices

from symcomp.codegen.emit import MANIFEST, OverwriteError, write_package
from symcomp.ir.graph import build_graph
from symcomp.ir.interpreter import interpret
from symcomp.pipeline import analyze, compile_package
from symcomp.spec import load_spec
from symcomp.verify.generic import generic_point
from symcomp.verify.nullity import measure_nullity
from tests.conftest import EXAMPLE_SPECS, ROOT, TINY_SPECS


def _compiled(spec_path: Path, out: Path, name: str):
    spec = load_spec(spec_path)
    write_package(compile_package(spec, spec_path.read_text()), out / name)
    sys.path.insert(0, str(out))
    try:
        return spec, importlib.import_module(name)
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    """Compile each tiny spec once per module: (spec, package module, its folder)."""
    cache: dict[str, tuple] = {}
    root = tmp_path_factory.mktemp("tiny_packages")

    def get(stem: str):
        if stem not in cache:
            name = f"tiny_{stem}"
            spec, pkg = _compiled(ROOT / "specs" / "tiny" / f"{stem}.yaml", root, name)
            cache[stem] = (spec, pkg, root / name)
        return cache[stem]

    return get


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.stem)
def test_generated_is_what_compile_writes(path):
    """generated/ holds the compiled example specs, byte for byte (CI fails on any drift)."""
    package = compile_package(load_spec(path), path.read_text())
    folder = ROOT / "generated" / path.stem.replace("-", "_")
    written = {p.name for p in folder.iterdir() if p.name not in (MANIFEST, "__pycache__")}
    assert written == {f.path for f in package.files}
    for f in package.files:
        assert (folder / f.path).read_text() == f.text, f"{folder / f.path} is stale: recompile"


@pytest.mark.parametrize("path", TINY_SPECS, ids=lambda p: p.stem)
def test_generated_model_matches_the_interpreter_and_the_analysis(path, tiny_package):
    spec, pkg, _ = tiny_package(path.stem)
    torch.manual_seed(0)
    model = pkg.Model(dtype=torch.float64)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            p.copy_(
                torch.randn(p.shape, dtype=torch.float64) * 0.5 + (2.0 if "gain" in pname else 0)
            )
    ids = torch.randint(0, model.sizes.vocab, (2, 6))
    params = dict(model.named_parameters())
    expected = interpret(build_graph(spec), params, ids)
    assert float((model.log_probs(ids) - expected).abs().max()) <= 1e-12
    names = {re.sub(r"^layers\.\d+\.", "layers.{i}.", n) for n, _ in model.named_parameters()}
    assert set(pkg.model.HF_NAMES) == names  # the Hugging Face name of every parameter
    analysis = analyze(spec, measured=False)
    groups = {key for key in pkg.invariants(model) if key.startswith("group.")}
    continuous = {f"group.{name}" for name, g in pkg.GROUPS.items() if g.continuous}
    assert groups == continuous
    reduced = pkg.ReducedModel.from_standard(model)
    assert sum(p.numel() for p in reduced.parameters()) == analysis.reduced_parameters
    assert float((reduced.log_probs(ids) - expected).abs().max()) <= 1e-10


@pytest.mark.parametrize("path", TINY_SPECS, ids=lambda p: p.stem)
def test_translation_slices_solve_what_the_dense_solve_does(path, tiny_package):
    """The reduced model's forward solves the translation steps through sparse slices (C's
    nonzeros measured by a few probes, or kept when the move is constant, and units merged);
    the rebuilt parameters and their gradients are those of the dense solve from C, which
    forms and factors C at the point."""
    _, pkg, _ = tiny_package(path.stem)
    chart = pkg.reduced.CHART
    torch.manual_seed(0)
    model = pkg.Model(dtype=torch.float64)
    with torch.no_grad():  # a generic point (a fresh model's zero biases are degenerate)
        for name, p in model.named_parameters():
            p.copy_(
                torch.randn(p.shape, dtype=torch.float64) * 0.5 + (2.0 if "gain" in name else 0)
            )
    reduced = pkg.ReducedModel.from_standard(model)
    record, masks = reduced._layout()
    free = {name: reduced.free[name.replace(".", "__")] for name in reduced._shapes}
    slices = translation_slices(chart, record, reduced._shapes, reduced.sizes)
    translations = [i for i, step in enumerate(chart.steps) if step.kind == "translation"]
    assert sorted(slices) == translations
    fast = reconstruct(chart, free, record, masks, reduced.sizes, slices)
    dense = reconstruct(chart, free, record, masks, reduced.sizes)
    weights = {name: torch.randn(value.shape, dtype=torch.float64) for name, value in fast.items()}
    grads = []
    for params in (fast, dense):
        loss = sum((weights[name] * value).sum() for name, value in params.items())
        grads.append(torch.autograd.grad(loss, list(free.values())))
    for name in fast:
        assert torch.allclose(fast[name], dense[name], rtol=0, atol=1e-12), name
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    # and both are the derivative: a central difference along a random direction
    step = {name: torch.randn(value.shape, dtype=torch.float64) for name, value in free.items()}
    with torch.no_grad():
        ends = [
            sum(
                (weights[name] * value).sum()
                for name, value in reconstruct(
                    chart,
                    {name: free[name] + sign * 1e-6 * step[name] for name in free},
                    record,
                    masks,
                    reduced.sizes,
                    slices,
                ).items()
            )
            for sign in (1, -1)
        ]
    along = sum((g * step[name]).sum() for g, name in zip(grads[0], free, strict=True))
    assert abs(float((ends[0] - ends[1]) / 2e-6 - along)) <= 1e-6 * (1 + abs(float(along)))
    # and the chart point is the standard model's orbit point: same function
    ids = torch.randint(0, model.sizes.vocab, (2, 6))
    with torch.no_grad():
        assert float((reduced.log_probs(ids) - model.log_probs(ids)).abs().max()) <= 1e-10


@pytest.mark.parametrize("path", TINY_SPECS, ids=lambda p: p.stem)
def test_generated_tests_pass(path, tiny_package):
    """The package's own test_invariance.py, run as a user would (pytest in the package), on
    this checkout's runtime (not whichever one is installed)."""
    _, _, folder = tiny_package(path.stem)
    runtime = os.pathsep.join(filter(None, [str(ROOT / "runtime"), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        capture_output=True,
        text=True,
        cwd=folder.parent,
        env={**os.environ, "PYTHONPATH": runtime},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout


@pytest.mark.parametrize("path", TINY_SPECS, ids=lambda p: p.stem)
def test_generated_model_nullity_is_the_redundancy(path, tiny_package):
    """The Jacobian nullity of the generated standard model itself equals `analyze`'s count."""
    spec, pkg, _ = tiny_package(path.stem)
    model = pkg.Model(dtype=torch.float64)
    # a generic point: every parameter drawn, ReLU neurons of mixed sign (as for transformers)
    params = generic_point(build_graph(spec), seed=1)

    def fn(params, ids):
        return torch.func.functional_call(model, params, (ids,)).log_softmax(-1)

    measurement, _ = measure_nullity(
        fn, params, vocab=model.sizes.vocab, seq_len=6, generator=torch.Generator().manual_seed(2)
    )
    assert measurement.nullity == analyze(spec, measured=False).redundant


def test_compile_refuses_foreign_and_edited_folders(tmp_path):
    path = ROOT / "specs" / "tiny" / "llama.yaml"
    package = compile_package(load_spec(path), path.read_text())
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my work")
    with pytest.raises(OverwriteError, match="not generated by symcomp"):
        write_package(package, foreign)
    assert (foreign / "notes.txt").read_text() == "my work"
    out = tmp_path / "pkg"
    write_package(package, out)
    write_package(package, out)  # an unedited package is replaced
    (out / "model.py").write_text((out / "model.py").read_text() + "# edited\n")
    with pytest.raises(OverwriteError, match="edited"):
        write_package(package, out)
    write_package(package, out, force=True)
    assert "# edited" not in (out / "model.py").read_text()


# a true symmetry, (W_V A^2, A^-2 W_O), in a form no chart step knows
SQUARED_GAUGE = """
symmetries:
- name: squared_vo_gauge
  group: GL
  per: kv_head
  size: head_width
  acts:
    layers.*.attn.W_V: W_V A A
    layers.*.attn.W_O: A^-1 A^-1 W_O
"""


def test_compile_cli(run_cli, tmp_path):
    spec = tmp_path / "squared.yaml"
    spec.write_text((ROOT / "specs/tiny/llama.yaml").read_text() + SQUARED_GAUGE)
    # a package without its reduced model is a failure: exit 1, nothing written
    code, _, err = run_cli("compile", str(spec), "-o", str(tmp_path / "g"))
    assert code == 1
    assert "no reduced model: no anchor the chart can fix for: squared_vo_gauge" in err
    assert "nothing written" in err and not (tmp_path / "g").exists()
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "model.py").write_text("edited")
    code, _, err = run_cli(
        "compile", str(ROOT / "specs/tiny/llama.yaml"), "-o", str(tmp_path / "g")
    )
    assert code == 2 and "--force" in err


@pytest.mark.slow
def test_compiled_path_runs_on_cpu(tmp_path):
    """torch.compile of the reduced model (a first CPU compile takes about a minute)."""
    _, pkg = _compiled(ROOT / "specs/tiny/llama.yaml", tmp_path, "compiled_llama")
    torch.manual_seed(0)
    model = pkg.Model(dtype=torch.float32)
    reduced = pkg.ReducedModel.from_standard(model)
    ids = torch.randint(0, model.sizes.vocab, (2, 6))
    fast = model.compiled()
    assert float((fast(ids) - model(ids)).abs().max()) <= 1e-4
    assert float((reduced.compiled()(ids) - reduced(ids)).abs().max()) <= 1e-4


def test_a_hand_written_per_neuron_relu_scaling_gets_a_chart(tmp_path):
    """``W_up s`` with ``s`` one neuron's scalar (per: neuron, size 1) is the chart's diagonal
    scaling form, like the catalogue's ``W_up diag(s)``: the reduced model drops one entry per
    neuron and keeps the log-probs."""
    from tests.custom_catalogue import spec_text

    path = tmp_path / "relu.yaml"
    path.write_text(spec_text("C1"))
    spec, pkg = _compiled(path, tmp_path, "hand_relu")
    torch.manual_seed(0)
    model = pkg.Model(dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    reduced = pkg.ReducedModel.from_standard(model)
    ids = torch.randint(0, spec.architecture.vocab_size, (2, spec.architecture.max_positions))
    with torch.no_grad():
        assert torch.allclose(reduced.log_probs(ids), model.log_probs(ids), atol=1e-10)
    count = sum(p.numel() for p in model.parameters())
    neurons = spec.architecture.layers * spec.architecture.mlp.hidden
    assert sum(p.numel() for p in reduced.parameters()) == count - neurons
