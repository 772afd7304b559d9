"""transformers checkpoints <-> our parameter names, on the nine tiny families."""

from __future__ import annotations

import pytest
import torch

from symcomp.errors import SpecError
from symcomp.hf.weights import from_hf_state_dict, hf_name_table, model_types, to_hf_state_dict
from symcomp.spec import parameter_count, parameter_shapes

try:
    import hf_tiny
except ImportError:  # tests/ became a package
    from tests import hf_tiny

FAMILIES = list(hf_tiny.FAMILIES.items())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


_models: dict[tuple[str, bool | None], torch.nn.Module] = {}


def model_of(family: str, tied: bool | None = None) -> torch.nn.Module:
    if (family, tied) not in _models:
        _models[family, tied] = hf_tiny.build(family, tied=tied)
    return _models[family, tied]


@pytest.mark.parametrize(("family", "model_type"), FAMILIES)
def test_names_shapes_and_counts(family: str, model_type: str) -> None:
    model = model_of(family)
    spec = hf_tiny.tiny_spec(family)
    ours = from_hf_state_dict(spec, model.state_dict(), model_type)
    shapes = parameter_shapes(spec.architecture)
    assert list(ours) == list(shapes)
    assert {k: tuple(v.shape) for k, v in ours.items()} == shapes
    count = sum(v.numel() for v in ours.values())
    assert count == parameter_count(spec.architecture)
    assert count == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("family", "model_type"), FAMILIES)
def test_round_trip(family: str, model_type: str) -> None:
    model = model_of(family)
    spec = hf_tiny.tiny_spec(family)
    sd = model.state_dict()
    ours = from_hf_state_dict(spec, sd, model_type)
    for back in (
        to_hf_state_dict(spec, ours, model_type),
        to_hf_state_dict(spec, ours, model_type, hf_keys=sd.keys()),
    ):
        assert set(back) == set(sd)
        for key, value in sd.items():
            assert torch.equal(back[key], value), key
    # perturbed parameters go through a fresh model unchanged
    moved = {k: v + 0.125 for k, v in ours.items()}
    fresh = hf_tiny.build(family, seed=99)
    fresh.load_state_dict(to_hf_state_dict(spec, moved, model_type), strict=True)
    again = from_hf_state_dict(spec, fresh.state_dict(), model_type)
    assert all(torch.equal(again[k], moved[k]) for k in moved)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_tied_and_untied_variants(family: str) -> None:
    for tied in (True, False):
        model = model_of(family, tied)
        spec = hf_tiny.tiny_spec(family, tied=tied)
        ours = from_hf_state_dict(spec, model.state_dict(), family)
        assert ("unembed.W_U" in ours) is not tied
        assert sum(v.numel() for v in ours.values()) == sum(p.numel() for p in model.parameters())


# --- the layouts mean what they say ----------------------------------------------------------


def _capture(module: torch.nn.Module, store: dict[str, torch.Tensor], key: str):
    def hook(_m, inputs, output):
        store[key + ".in"] = inputs[0].detach()
        store[key + ".out"] = output.detach()

    return module.register_forward_hook(hook)


def test_gpt_neox_fused_qkv_is_split_per_head() -> None:
    """transformers reads q, k, v of head i from rows [i, 0|1|2, :] of query_key_value."""
    model = model_of("pythia")
    spec = hf_tiny.tiny_spec("pythia")
    ours = from_hf_state_dict(spec, model.state_dict(), "gpt_neox")
    store: dict[str, torch.Tensor] = {}
    handle = _capture(model.gpt_neox.layers[0].attention.query_key_value, store, "qkv")
    model(torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(0)))
    handle.remove()
    x, qkv = store["qkv.in"], store["qkv.out"]
    h, k = 2, 4
    # exactly as GPTNeoXAttention.forward: view(..., -1, 3 * head_size), then chunk(3)
    per_head = qkv.view(*qkv.shape[:-1], h, 3 * k)
    for j, part in enumerate("QKV"):
        hf_part = per_head[..., j * k : (j + 1) * k]
        mine = x @ ours[f"layers.0.attn.W_{part}"] + ours[f"layers.0.attn.b_{part}"]
        torch.testing.assert_close(mine.view(*mine.shape[:-1], h, k), hf_part)


def test_gpt2_fused_c_attn_is_q_k_v() -> None:
    model = model_of("gpt2")
    spec = hf_tiny.tiny_spec("gpt2")
    ours = from_hf_state_dict(spec, model.state_dict(), "gpt2")
    store: dict[str, torch.Tensor] = {}
    handle = _capture(model.transformer.h[0].attn.c_attn, store, "c_attn")
    model(torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(0)))
    handle.remove()
    x, qkv = store["c_attn.in"], store["c_attn.out"]
    for hf_part, part in zip(qkv.split(8, dim=-1), "QKV", strict=True):
        mine = x @ ours[f"layers.0.attn.W_{part}"] + ours[f"layers.0.attn.b_{part}"]
        torch.testing.assert_close(mine, hf_part)


def _layernorm(x, gain, bias, eps=hf_tiny.EPS):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], gain, bias, eps)


def test_gpt2_forward_in_our_names_matches_transformers() -> None:
    """A plain pre-norm forward written against our names reproduces GPT-2's logits, so every
    row of the table (not only the fused one) lands where it should."""
    model = model_of("gpt2", False)
    spec = hf_tiny.tiny_spec("gpt2", tied=False)
    p = from_hf_state_dict(spec, model.state_dict(), "gpt2")
    ids = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(1))
    n, t = ids.shape
    h, k = 2, 4
    x = p["embed.W_E"][ids] + p["embed.W_P"][:t]
    a = _layernorm(x, p["layers.0.attn_norm.gain"], p["layers.0.attn_norm.bias"])

    def heads(y):
        return y.view(n, t, h, k).transpose(1, 2)

    q, kk, v = (heads(a @ p[f"layers.0.attn.W_{c}"] + p[f"layers.0.attn.b_{c}"]) for c in "QKV")
    scores = q @ kk.transpose(-1, -2) / k**0.5
    scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    z = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, h * k)
    x = x + z @ p["layers.0.attn.W_O"] + p["layers.0.attn.b_O"]
    m = _layernorm(x, p["layers.0.mlp_norm.gain"], p["layers.0.mlp_norm.bias"])
    act = torch.nn.functional.gelu(
        m @ p["layers.0.mlp.W_up"] + p["layers.0.mlp.b_up"], approximate="tanh"
    )
    x = x + act @ p["layers.0.mlp.W_down"] + p["layers.0.mlp.b_down"]
    logits = _layernorm(x, p["final_norm.gain"], p["final_norm.bias"]) @ p["unembed.W_U"]
    with torch.no_grad():
        expected = model(ids).logits
    torch.testing.assert_close(logits, expected)


# --- names the Hub uses, and errors ----------------------------------------------------------


def test_hub_names_without_the_wrapper_prefix_and_with_buffers() -> None:
    model = model_of("gpt2")
    spec = hf_tiny.tiny_spec("gpt2")
    sd = model.state_dict()
    hub = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
    hub["h.0.attn.bias"] = torch.ones(1, 1, 6, 6).tril()  # the causal mask of old checkpoints
    hub["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    ours = from_hf_state_dict(spec, hub, "gpt2")
    reference = from_hf_state_dict(spec, sd, "gpt2")
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
    back = to_hf_state_dict(spec, ours, "gpt2", hf_keys=hub.keys())
    assert set(back) == set(hub) - {"h.0.attn.bias", "h.0.attn.masked_bias"}
    assert torch.equal(back["h.0.attn.c_attn.weight"], sd["transformer.h.0.attn.c_attn.weight"])


def test_gpt_neox_embed_out_alias() -> None:
    sd = dict(model_of("pythia").state_dict())
    sd["embed_out.weight"] = sd.pop("lm_head.weight")
    spec = hf_tiny.tiny_spec("pythia")
    ours = from_hf_state_dict(spec, sd, "gpt_neox")
    torch.testing.assert_close(ours["unembed.W_U"], sd["embed_out.weight"].T)
    assert "embed_out.weight" in to_hf_state_dict(spec, ours, "gpt_neox", hf_keys=sd.keys())


def _error(fn, *args) -> str:
    with pytest.raises(SpecError) as info:
        fn(*args)
    return str(info.value)


def test_errors_name_the_tensor() -> None:
    spec = hf_tiny.tiny_spec("llama")
    sd = dict(model_of("llama").state_dict())

    unknown = {**sd, "model.layers.0.self_attn.rotary.weird": torch.zeros(3)}
    assert "model.layers.0.self_attn.rotary.weird" in _error(
        from_hf_state_dict, spec, unknown, "llama"
    )

    missing = {k: v for k, v in sd.items() if k != "model.layers.0.mlp.up_proj.weight"}
    message = _error(from_hf_state_dict, spec, missing, "llama")
    assert "layers.0.mlp.W_up" in message and "model.layers.0.mlp.up_proj.weight" in message

    with_bias = {**sd, "model.layers.0.self_attn.q_proj.bias": torch.zeros(8)}
    message = _error(from_hf_state_dict, spec, with_bias, "llama")
    assert "model.layers.0.self_attn.q_proj.bias" in message and "b_Q" in message

    wrong = {**sd, "model.norm.weight": torch.zeros(9)}
    assert "model.norm.weight" in _error(from_hf_state_dict, spec, wrong, "llama")

    extra_layer = {**sd, "model.layers.1.input_layernorm.weight": torch.zeros(8)}
    assert "model.layers.1.input_layernorm.weight" in _error(
        from_hf_state_dict, spec, extra_layer, "llama"
    )

    assert "falcon" in _error(from_hf_state_dict, spec, sd, "falcon")


def test_tied_copy_must_equal_the_embedding() -> None:
    spec = hf_tiny.tiny_spec("opt")  # tied
    sd = dict(model_of("opt").state_dict())
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
    assert "lm_head.weight" in _error(from_hf_state_dict, spec, sd, "opt")
    bert = dict(model_of("bert").state_dict())
    bert["cls.predictions.decoder.bias"] = bert["cls.predictions.decoder.bias"] + 1.0
    message = _error(from_hf_state_dict, hf_tiny.tiny_spec("bert"), bert, "bert")
    assert "cls.predictions.decoder.bias" in message


def test_to_hf_checks_our_parameters() -> None:
    spec = hf_tiny.tiny_spec("llama")
    ours = from_hf_state_dict(spec, model_of("llama").state_dict(), "llama")
    assert "final_norm.gain" in _error(
        to_hf_state_dict, spec, {k: v for k, v in ours.items() if k != "final_norm.gain"}, "llama"
    )
    assert "embed.W_E" in _error(
        to_hf_state_dict, spec, {**ours, "embed.W_E": torch.zeros(3, 8)}, "llama"
    )
    assert "model.foo" in _error(to_hf_state_dict, spec, ours, "llama", ["model.foo"])


def test_name_tables() -> None:
    # the families of issue 24 are checked against transformers in hf_families
    try:
        import hf_families
    except ImportError:  # tests/ became a package
        from tests import hf_families
    families = set(hf_tiny.FAMILIES.values())
    assert families <= set(model_types()) <= families | set(hf_families.CONFIGS)
    assert set(hf_tiny.FAMILIES.values()) <= set(model_types())
    llama = hf_name_table("llama")
    assert ("model.layers.{i}.self_attn.q_proj.weight", "layers.{i}.attn.W_Q", "transpose") in llama
    assert ("transformer.h.{i}.mlp.c_fc.weight", "layers.{i}.mlp.W_up", "copy") in hf_name_table(
        "gpt2"
    )
    for model_type in model_types():
        for hf, ours, transform in hf_name_table(model_type):
            assert hf.count("{i}") == ours.count("{i}"), (hf, ours)
            assert transform.split(".")[0] in {
                "copy",
                "transpose",
                "qkv_cols",
                "qkv_per_head",
                "qkv_per_head_T",
                "experts_gate_up",
                "experts_down",
                "qkv_rows",
                "qkv_rows_T",
                "qkv_grouped",
                "qkv_grouped_T",
                "gate_up",
                "gate_up_T",
            }
