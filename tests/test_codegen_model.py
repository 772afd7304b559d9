"""The generated standard model (``symcomp.codegen.model_code.render_model``).

The generated ``model.py`` must compute exactly the reference interpreter's function (which
tests/test_ir.py checks against transformers), at the spec's sizes and at overridden ones, hold
exactly symcomp's parameters, and be formatted as the project's ruff configuration wants.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml

from symcomp.codegen.model_code import render_model
from symcomp.hf.weights import hf_name_table
from symcomp.ir import build_graph, interpret
from symcomp.spec import load_spec, parameter_count, parameter_shapes, spec_from_data
from symcomp.spec.model import Spec
from symcomp.verify.nullity import randomize_
from tests.conftest import EXAMPLE_SPECS, ROOT, TINY_SPECS

_names = itertools.count()


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@cache
def _text(path: Path) -> str:
    return render_model(load_spec(path))


def _load(text: str, tmp_path: Path) -> ModuleType:
    """Write ``text`` as ``model.py`` and import it under a fresh module name."""
    folder = tmp_path / f"pkg{next(_names)}"
    folder.mkdir()
    file = folder / "model.py"
    file.write_text(text)
    name = f"_symcomp_generated_model_{next(_names)}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def _tiny_data(family: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "specs" / "tiny" / f"{family}.yaml").read_text())


def _variant(family: str, **architecture: Any) -> Spec:
    """A tiny spec with some architecture keys replaced (``attention`` keys merged)."""
    data = copy.deepcopy(_tiny_data(family))
    arch = data["architecture"]
    arch["attention"].update(architecture.pop("attention", {}))
    arch.update(architecture)
    return spec_from_data(data)


def _random_ids(vocab: int, T: int, seed: int) -> torch.Tensor:
    return torch.randint(vocab, (2, T), generator=torch.Generator().manual_seed(seed))


def _assert_matches_interpreter(model: torch.nn.Module, spec: Spec, T: int = 6) -> None:
    randomize_(model, torch.Generator().manual_seed(0))
    graph = build_graph(spec)
    ids = _random_ids(spec.architecture.vocab_size, T, seed=1)
    with torch.no_grad():
        ours = model.log_probs(ids)
        want = interpret(graph, dict(model.named_parameters()), ids)
    assert ours.dtype == torch.float64 and ours.shape == want.shape
    assert (ours - want).abs().max().item() <= 1e-12


def _assert_parameters(model: torch.nn.Module, spec: Spec) -> None:
    """state_dict = exactly symcomp's parameters, in order, with their shapes and count."""
    shapes = parameter_shapes(spec.architecture)
    state = model.state_dict()
    assert list(state) == list(shapes)
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    assert [name for name, _ in model.named_parameters()] == list(shapes)
    assert not list(model.buffers())
    assert sum(p.numel() for p in model.parameters()) == parameter_count(spec.architecture)


# --- the function -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", TINY_SPECS, ids=_id)
def test_tiny_model_matches_interpreter(path: Path, tmp_path: Path) -> None:
    spec = load_spec(path)
    module = _load(_text(path), tmp_path)
    model = module.Model(dtype=torch.float64)
    _assert_parameters(model, spec)
    _assert_matches_interpreter(model, spec)


# the sizes of an instance unlike the spec's: another width, head width (so the rotated width of
# partial RoPE changes too), hidden width, vocabulary, positions and two layers
OVERRIDES = {"layers": 2, "width": 12, "head_width": 8, "hidden": 10, "vocab": 13, "positions": 7}


@pytest.mark.parametrize("path", TINY_SPECS, ids=_id)
def test_overridden_sizes_match_interpreter(path: Path, tmp_path: Path) -> None:
    module = _load(_text(path), tmp_path)
    model = module.Model(dtype=torch.float64, **OVERRIDES)
    o = OVERRIDES
    spec = _variant(
        path.stem,
        layers=o["layers"],
        width=o["width"],
        vocab_size=o["vocab"],
        max_positions=o["positions"],
        mlp={**_tiny_data(path.stem)["architecture"]["mlp"], "hidden": o["hidden"]},
        attention={"head_width": o["head_width"]},
    )
    _assert_parameters(model, spec)
    _assert_matches_interpreter(model, spec, T=7)


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # ALiBi with a head count that is not a power of two (the slopes' second series)
    "alibi-causal": ("gpt2", {"positions": {"type": "alibi"}, "attention": {"heads": 3}}),
    "alibi-bidirectional": ("bert", {"positions": {"type": "alibi"}}),
    "alibi-gqa-window": ("mistral", {"positions": {"type": "alibi"}}),
    # the original RoPE pairs, linear position scaling, partial rotation
    "rope-adjacent-scaled": (
        "llama",
        {
            "positions": {
                "type": "rope",
                "base": 7.0,
                "pair_layout": "adjacent",
                "rotated_fraction": 0.5,
                "scaling": {"type": "linear", "factor": 2.0},
            }
        },
    ),
    "multi-query-window": ("llama", {"attention": {"kv_heads": 1, "sliding_window": 2}}),
    "scale-expression": ("llama", {"embeddings": {"tied": False, "scale": "sqrt(width) / 2"}}),
}


def _variant_spec(name: str) -> Spec:
    family, changes = VARIANTS[name]
    changes = copy.deepcopy(changes)
    if changes.get("attention", {}).get("heads") == 3:
        changes["attention"]["head_width"] = 4  # 3 does not divide the width 8
    return _variant(family, **changes)


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_match_interpreter(name: str, tmp_path: Path) -> None:
    spec = _variant_spec(name)
    module = _load(render_model(spec), tmp_path)
    model = module.Model(dtype=torch.float64)
    _assert_parameters(model, spec)
    _assert_matches_interpreter(model, spec)
    if name == "alibi-causal":  # the slopes follow the instance's heads (5: not a power of 2)
        wider = _variant(
            "gpt2", width=20, positions={"type": "alibi"}, attention={"heads": 5, "head_width": 4}
        )
        model = module.Model(dtype=torch.float64, heads=5, width=20)
        _assert_matches_interpreter(model, wider)


# --- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=_id)
def test_full_size_parameters_on_meta(path: Path, tmp_path: Path) -> None:
    module = _load(_text(path), tmp_path)
    model = module.Model(device="meta")
    _assert_parameters(model, load_spec(path))
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=_id)
def test_full_size_spec_at_small_sizes_matches_interpreter(path: Path, tmp_path: Path) -> None:
    """The full-size constants (eps, RoPE base, offsets, scale expressions) at tiny sizes."""
    data = yaml.safe_load(path.read_text())
    arch = data["architecture"]
    fraction = arch["positions"].get("rotated_fraction", 1.0)
    k = next(k for k in range(4, 64) if int(k * fraction) >= 2 and int(k * fraction) % 2 == 0)
    sizes = {"width": 8, "heads": 2, "kv_heads": 1, "head_width": k, "hidden": 12, "vocab": 11}
    sizes |= {"positions": 6, "layers": 2}
    arch.update(width=8, layers=2, vocab_size=11, max_positions=6)
    arch["attention"].update(heads=2, kv_heads=1, head_width=k)
    arch["mlp"]["hidden"] = 12
    module = _load(_text(path), tmp_path)
    model = module.Model(dtype=torch.float64, **sizes)
    spec = spec_from_data(data)
    _assert_parameters(model, spec)
    _assert_matches_interpreter(model, spec)


def test_sizes_are_checked(tmp_path: Path) -> None:
    module = _load(_text(ROOT / "specs" / "tiny" / "mistral.yaml"), tmp_path)
    assert module.SIZES == {
        "width": 8,
        "layers": 1,
        "heads": 4,
        "kv_heads": 2,
        "head_width": 4,
        "hidden": 12,
        "vocab": 11,
        "positions": 6,
    }
    with pytest.raises(TypeError, match=r"unknown size.*depth.*accepts width, layers, heads"):
        module.Model(depth=3)
    with pytest.raises(TypeError):
        module.Model(torch.float64)  # keyword-only
    with pytest.raises(ValueError, match="kv_heads"):
        module.Model(kv_heads=3)
    with pytest.raises(ValueError, match="tokens"):
        module.Model()(torch.zeros(1, 7, dtype=torch.long))


def test_multi_head_kv_heads_follow_heads(tmp_path: Path) -> None:
    module = _load(_text(ROOT / "specs" / "tiny" / "gpt2.yaml"), tmp_path)
    assert module.Model(heads=4, head_width=2).sizes.kv_heads == 4
    assert module.Model(heads=4, kv_heads=2, head_width=2).sizes.kv_heads == 2


@pytest.mark.parametrize("path", TINY_SPECS, ids=_id)
def test_float32_runs(path: Path, tmp_path: Path) -> None:
    module = _load(_text(path), tmp_path)
    torch.manual_seed(0)
    model = module.Model()
    ids = _random_ids(model.sizes.vocab, 6, seed=2)
    with torch.no_grad():
        logits = model(ids)
        logp = model.log_probs(ids)
    assert logits.dtype == logp.dtype == torch.float32
    assert logits.shape == (2, 6, model.sizes.vocab)
    assert torch.isfinite(logp).all()
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 6))


def test_compiled_calls_torch_compile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load(_text(ROOT / "specs" / "tiny" / "llama.yaml"), tmp_path)
    model = module.Model()
    monkeypatch.setattr(torch, "compile", lambda m, **kw: ("compiled", m, kw))
    assert model.compiled(mode="max-autotune") == ("compiled", model, {"mode": "max-autotune"})


# --- the text ---------------------------------------------------------------------------------


def test_rendering_is_deterministic() -> None:
    for path in TINY_SPECS + EXAMPLE_SPECS:
        spec = load_spec(path)
        assert render_model(spec) == render_model(load_spec(path)), path
    # and in another process, with another string hash seed
    path = ROOT / "specs" / "mistral-7b.yaml"
    code = (
        "import sys; from symcomp.spec import load_spec; "
        "from symcomp.codegen.model_code import render_model; "
        f"sys.stdout.write(render_model(load_spec({str(path)!r})))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    assert done.stdout == _text(path)


def test_generated_code_reads_as_intended() -> None:
    text = _text(ROOT / "specs" / "gemma-2b.yaml")
    assert "class Block(nn.Module)" in text and "for block in self.layers:" in text
    assert "embed_tokens * math.sqrt(s.width)" in text  # the expression, not 45.25...
    assert "F.scaled_dot_product_attention(" in text and "is_causal=mask is None" in text
    assert "mask = ctx.mask(causal=True)" in text  # None without padding or cache: is_causal
    assert "scale=s.head_width**-0.5" in text
    assert "logits = final_norm_out @ self.embed.W_E.T" in text  # tied
    assert "HF_NAMES" not in text  # the spec does not say its transformers family
    imports = {line for line in text.splitlines() if line.startswith(("import ", "from "))}
    stdlib = {"math", "dataclasses", "functools", "typing"}
    # torch and the runtime only (which needs only torch: tests/test_runtime.py); the weight
    # files, from_pretrained and save_pretrained, come from the runtime's Pretrained
    ours = stdlib | {"torch", "symcomp_runtime"}
    assert all(line.split()[1].split(".")[0] in ours for line in imports)
    assert "class Model(Pretrained, nn.Module)" in text


HF_FAMILIES = {"gpt2": "gpt2", "bert": "bert", "llama": "llama", "pythia": "gpt_neox"}


@pytest.mark.parametrize(("family", "model_type"), HF_FAMILIES.items())
def test_hf_names(family: str, model_type: str, tmp_path: Path) -> None:
    spec = load_spec(ROOT / "specs" / "tiny" / f"{family}.yaml")
    module = _load(render_model(spec, hf_model_type=model_type), tmp_path)
    ours = {
        name.replace("layers.0.", "layers.{i}.") for name in parameter_shapes(spec.architecture)
    }
    assert set(module.HF_NAMES) == ours
    table = {(o, hf) for hf, o, _ in hf_name_table(model_type)}
    assert all((o, hf) in table for o, hf in module.HF_NAMES.items())


def _ruff() -> list[str]:
    exe = Path(sys.executable).parent / "ruff"
    if exe.exists():
        return [str(exe)]
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    pytest.skip("ruff is not installed")


def test_ruff_accepts_the_generated_files(tmp_path: Path) -> None:
    ruff = _ruff()
    texts = {
        _id(p).replace("/", "_").replace("-", "_"): _text(p) for p in TINY_SPECS + EXAMPLE_SPECS
    }
    texts |= {f"variant_{n.replace('-', '_')}": render_model(_variant_spec(n)) for n in VARIANTS}
    texts["hf_gpt2"] = render_model(
        load_spec(ROOT / "specs" / "gpt2-small.yaml"), hf_model_type="gpt2"
    )
    texts["hf_pythia"] = render_model(
        load_spec(ROOT / "specs" / "pythia-160m.yaml"), hf_model_type="gpt_neox"
    )
    for name, text in texts.items():
        (tmp_path / f"{name}.py").write_text(text)
    config = ["--config", str(ROOT / "pyproject.toml")]
    for command in (["format", "--check", "--diff"], ["check", "--no-cache"]):
        done = subprocess.run(
            [*ruff, *command, *config, str(tmp_path)], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_description_with_a_word_longer_than_a_line_still_compiles():
    """A word no line can hold (a URL, 80 nested parentheses: the long fuzz run's) is cut; the
    model file keeps the line length and the whole description."""
    word = "(" * 80 + "width" + ")" * 80
    spec = load_spec(ROOT / "specs" / "tiny" / "gpt2.yaml")
    text = render_model(spec.model_copy(update={"description": f"See {word} here."}))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert word in "".join(line.strip() for line in text.splitlines())
