"""Mixtures of experts (Mixtral) beyond the generic family check of test_hf_families: both
checkpoint layouts, the genericity of the routing in the draws that the counts rest on, the
interpreter against transformers, and the importer's refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from symcomp.errors import ImportHFError
from symcomp.hf import import_hf_config
from symcomp.hf.weights import from_hf_state_dict, to_hf_state_dict
from symcomp.ir.graph import build_graph
from symcomp.ir.interpreter import evaluate, interpret
from symcomp.verify.generic import experts_mixed, generic_point
from symcomp.verify.nullity import sample_inputs, sequences_needed

try:
    import hf_families
except ImportError:  # tests/ became a package
    from tests import hf_families

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny Mixtral of hf_families, saved (transformers 5's fused layout), its spec."""
    folder = tmp_path_factory.mktemp("mixtral")
    model = hf_families.build(hf_families.CONFIGS["mixtral"]())
    model.save_pretrained(folder)
    return folder, model, import_hf_config(folder)


def _per_expert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 4's layout: block_sparse_moe.gate, experts.{e}.w1 (gate), w3 (up), w2."""
    out = {}
    for name, t in state.items():
        prefix, _, leaf = name.rpartition(".mlp.")
        if not prefix:
            out[name] = t
        elif leaf == "gate.weight":
            out[f"{prefix}.block_sparse_moe.gate.weight"] = t
        elif leaf == "experts.gate_up_proj":
            for e, fused in enumerate(t):
                gate, up = fused.chunk(2, dim=0)
                out[f"{prefix}.block_sparse_moe.experts.{e}.w1.weight"] = gate.clone()
                out[f"{prefix}.block_sparse_moe.experts.{e}.w3.weight"] = up.clone()
        elif leaf == "experts.down_proj":
            for e, down in enumerate(t):
                out[f"{prefix}.block_sparse_moe.experts.{e}.w2.weight"] = down.clone()
    return out


def test_both_checkpoint_layouts_read_the_same_parameters(saved, tmp_path):
    folder, model, spec = saved
    fused = {k: v.detach() for k, v in model.state_dict().items()}
    legacy = _per_expert(fused)
    assert any("block_sparse_moe.experts.3.w2" in k for k in legacy)
    ours = from_hf_state_dict(spec, fused, "mixtral")
    from_legacy = from_hf_state_dict(spec, legacy, "mixtral")
    assert list(ours) == list(from_legacy)
    for name, value in ours.items():
        assert torch.equal(value, from_legacy[name]), name
    # written back: transformers 5's fused layout, tensor for tensor
    back = to_hf_state_dict(spec, ours, "mixtral")
    assert set(back) == set(fused)
    for name, value in fused.items():
        assert torch.equal(back[name], value), name
    # transformers itself reads the per-expert file as the same model
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file({k: v.contiguous() for k, v in legacy.items()}, tmp_path / "model.safetensors")
    reloaded = hf_families.load(tmp_path)
    for name, value in reloaded.state_dict().items():
        assert torch.equal(value, fused[name]), name


def test_interpreter_matches_transformers_and_routing_is_generic(saved):
    """The reference interpreter reproduces the (float64-patched) transformers model, and on
    the very inputs of the family's nullity measurement every expert is selected by some
    positions and not by others (a dead expert would add null directions of that draw only)."""
    folder, _, spec = saved
    hf = hf_families.patch_float64_(hf_families.load(folder))
    graph = build_graph(spec)
    params = from_hf_state_dict(spec, hf.state_dict(), "mixtral")
    total = sum(p.numel() for p in hf.parameters())
    n_seq = sequences_needed(total, hf_families.T, hf_families.V)
    generator = torch.Generator().manual_seed(7)  # check_family's draw
    ids = torch.cat([sample_inputs(hf_families.V, hf_families.T, n_seq, generator) for _ in "ab"])
    with torch.no_grad():
        expected = torch.log_softmax(hf(input_ids=ids).logits, dim=-1)
    env = evaluate(graph, params, ids)
    assert float((env[graph.output] - expected).abs().max()) < 1e-10
    (route,) = [op.output for op in graph.ops if op.kind == "route"]
    selected = (env[route] > 0).double().reshape(-1, 4).mean(0)
    assert bool((selected > 0.05).all()) and bool((selected < 0.95).all()), selected
    assert experts_mixed(graph, params, ids)
    # and the derivation's own generic point is generic in the same sense
    point = generic_point(graph, 0)
    probe = sample_inputs(hf_families.V, hf_families.T, 64, torch.Generator().manual_seed(1))
    assert experts_mixed(graph, point, probe)
    assert interpret(graph, point, probe).isfinite().all()


def _config(tmp_path, **kw):
    cfg = hf_families.CONFIGS["mixtral"]().to_dict()
    cfg.update(kw)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_import_keys(tmp_path):
    spec = import_hf_config(_config(tmp_path, router_jitter_noise=0.1, output_router_logits=True))
    experts = spec.architecture.mlp.experts
    assert (experts.count, experts.top_k, experts.normalize) == (4, 2, True)
    assert spec.architecture.attention.sliding_window is None
    spec = import_hf_config(_config(tmp_path, sliding_window=3))
    assert spec.architecture.attention.sliding_window == 3


def test_import_refuses_more_experts_per_token_than_experts(tmp_path, run_cli):
    folder = _config(tmp_path, num_experts_per_tok=5)
    with pytest.raises(ImportHFError) as err:
        import_hf_config(folder)
    assert "num_experts_per_tok" in str(err.value)
    code, _, stderr = run_cli("import-hf", str(folder))
    assert code == 2
    assert "num_experts_per_tok" in stderr and "Traceback" not in stderr


def test_router_shift_and_expert_permutation_leave_transformers_unchanged(saved):
    """C4 (the router's shift, a continuous group) is a null direction of transformers'
    Jacobian, and permuting the experts together with the router's rows (discrete, so not
    counted) changes nothing."""
    folder, _, _ = saved
    hf = hf_families.patch_float64_(hf_families.load(folder))
    ids = sample_inputs(hf_families.V, hf_families.T, 8, torch.Generator().manual_seed(3))
    names = dict(hf.named_parameters())
    router = names["model.layers.0.mlp.gate.weight"]  # (E, d)

    def log_probs(W: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(hf, {"model.layers.0.mlp.gate.weight": W}, (ids,))
        return torch.log_softmax(out.logits, dim=-1)

    with torch.no_grad():
        base = log_probs(router)
        v = torch.randn(router.shape[1], dtype=torch.float64)
        shift = v.expand_as(router).clone()  # the same vector on every expert's row
        _, along = torch.func.jvp(log_probs, (router.detach(),), (shift,))
        _, other = torch.func.jvp(log_probs, (router.detach(),), (torch.randn_like(router),))
        assert float(along.abs().max()) < 1e-12
        assert float(other.abs().max()) > 1e-3
        perm = torch.tensor([2, 0, 3, 1])
        experts = hf.model.layers[0].mlp.experts
        state = {
            "model.layers.0.mlp.gate.weight": router[perm],
            "model.layers.0.mlp.experts.gate_up_proj": experts.gate_up_proj[perm],
            "model.layers.0.mlp.experts.down_proj": experts.down_proj[perm],
        }
        permuted = torch.func.functional_call(hf, state, (ids,)).logits
        assert torch.allclose(torch.log_softmax(permuted, dim=-1), base, atol=1e-12, rtol=0)


def test_import_refuses_a_top_1_renormalized_router(tmp_path, run_cli):
    folder = _config(tmp_path, num_experts_per_tok=1)
    code, _, stderr = run_cli("import-hf", str(folder))
    assert code == 2
    assert "top_k" in stderr and "argmax" in stderr and "Traceback" not in stderr
