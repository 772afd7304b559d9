"""The ground truth: nullity of the Jacobian of a model's log-probabilities w.r.t. its parameters.

Every continuous symmetry of a model, declared or not, is a null direction of the Jacobian of its
log-probabilities (stacked over many inputs) with respect to all of its parameters, and at a
generic point nothing else is. This module measures that nullity on a tiny float64 instance:

* :func:`randomize_` draws every parameter at random (no unit gains, no zero biases);
* :func:`sample_inputs` draws token sequences;
* :func:`jacobian_of_logprobs` builds the Jacobian with forward-mode AD;
* :func:`nullity_report` cuts the singular spectrum at its largest gap and says whether that gap
  is large enough to trust; :func:`null_space` returns the null directions themselves;
* :func:`measure_nullity` does all of it with a sample large enough for the parameter count and
  checks that the nullity is unchanged when the sample doubles.

See the last section of ``design/symmetries.md`` for the traps this guards against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

LogProbFn = Callable[[dict[str, Tensor], Any], Tensor]

TRUST_GAP = 1e3
"""A cut whose gap (ratio of the singular values on either side) is below this is not trusted."""

# --- random generic points -------------------------------------------------------------------


def _kind(name: str, tensor: Tensor) -> str:
    """'matrix', 'bias' or 'gain', from the last component of a parameter's name and its rank.

    Works for our names (``W_Q``, ``b_Q``, ``gain``, ``bias``) and for transformers' names
    (``weight`` / ``bias``; a 1-D ``weight`` is a norm gain).
    """
    if tensor.ndim >= 2:
        return "matrix"
    last = name.rsplit(".", 1)[-1]
    return "bias" if last.startswith("b") else "gain"


@torch.no_grad()
def randomize_(
    target: nn.Module | Mapping[str, Tensor],
    generator: torch.Generator,
    *,
    matrix_std: float = 0.5,
    gain_noise: float = 0.25,
    bias_std: float = 0.5,
) -> nn.Module | Mapping[str, Tensor]:
    """Draw every parameter at random, in place, and return ``target``.

    Matrices: normal with std ``min(matrix_std, 1/sqrt(n))``, ``n`` the smaller of the last two
    dims, so that activations stay O(1) whatever the layout. Gains (1-D tensors that are not
    biases): ``1 + gain_noise * normal``, generic, never exactly 1. Biases: normal with std
    ``bias_std``, never zero. Buffers (masks, rotary frequencies) are left alone; a tied tensor is
    drawn once.
    """
    items = target.named_parameters() if isinstance(target, nn.Module) else target.items()
    for name, p in items:
        kind = _kind(name, p)
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        if kind == "matrix":
            std = min(matrix_std, 1.0 / math.sqrt(min(p.shape[-2:])))
            value = std * noise
        elif kind == "gain":
            value = 1.0 + gain_noise * noise
        else:
            value = bias_std * noise
        p.copy_(value.to(device=p.device, dtype=p.dtype))
    return target


def sample_inputs(
    vocab: int, seq_len: int, n_seq: int, generator: torch.Generator
) -> Tensor:
    """``n_seq`` token sequences of length ``seq_len``, uniform over the vocabulary (int64)."""
    return torch.randint(0, vocab, (n_seq, seq_len), generator=generator, dtype=torch.long)


def sequences_needed(params: int, seq_len: int, vocab: int, factor: float = 10.0) -> int:
    """``ceil(factor * params / (T * (V - 1)))``: each position gives V - 1 independent rows."""
    return max(1, math.ceil(factor * params / (seq_len * max(vocab - 1, 1))))


# --- the Jacobian ----------------------------------------------------------------------------


def _unflattener(params: Mapping[str, Tensor]) -> Callable[[Tensor], dict[str, Tensor]]:
    layout = [(name, p.shape, p.numel()) for name, p in params.items()]

    def unflatten(flat: Tensor) -> dict[str, Tensor]:
        out, start = {}, 0
        for name, shape, n in layout:
            out[name] = flat[start : start + n].view(shape)
            start += n
        return out

    return unflatten


def jacobian_of_logprobs(
    fn: LogProbFn,
    params: Mapping[str, Tensor],
    inputs: Any,
    *,
    chunk_size: int = 64,
    use_vmap: bool | None = None,
) -> Tensor:
    """The Jacobian of ``fn(params, inputs)`` (any shape, flattened) w.r.t. every parameter.

    Returns a tensor of shape (outputs, total parameters), the parameters flattened in the dict's
    order (each tensor row-major). Forward-mode AD: one JVP per parameter, vmapped over chunks of
    ``chunk_size`` basis tangents; if vmap fails on ``fn`` (``use_vmap=None`` tries it and checks
    one column against a plain JVP), a loop of JVPs. Scaled-dot-product attention runs on its
    math kernel, the only one with forward-mode AD.
    """
    params = {name: p.detach() for name, p in params.items()}
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    unflatten = _unflattener(params)
    n = flat.numel()

    def g(x: Tensor) -> Tensor:
        return fn(unflatten(x), inputs).reshape(-1)

    def jvp(t: Tensor) -> Tensor:
        return torch.func.jvp(g, (flat,), (t,))[1]

    def basis(start: int, stop: int) -> Tensor:
        e = torch.zeros(stop - start, n, dtype=flat.dtype, device=flat.device)
        e[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        return e

    columns: list[Tensor] = []
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        start = 0
        if use_vmap is not False:
            batched = torch.func.vmap(jvp)
            try:
                first = batched(basis(0, min(chunk_size, n)))
                reference = jvp(basis(0, 1)[0])
                ok = torch.allclose(first[0], reference, rtol=1e-10, atol=1e-12)
            except Exception:
                if use_vmap:
                    raise
                ok = False
            if ok:
                columns.append(first.T)
                start = first.shape[0]
                while start < n:
                    stop = min(start + chunk_size, n)
                    columns.append(batched(basis(start, stop)).T)
                    start = stop
            elif use_vmap:
                raise RuntimeError("vmap over the JVP disagrees with a plain JVP")
        for i in range(start, n):
            columns.append(jvp(basis(i, i + 1)[0])[:, None])
    return torch.cat(columns, dim=1)


# --- the spectrum and its cut ----------------------------------------------------------------


@dataclass(frozen=True)
class NullityReport:
    """The nullity of a Jacobian, with the evidence for the cut.

    The rank is chosen at the largest gap (ratio of consecutive singular values) in the spectrum;
    full rank is a candidate too, its gap measured against the floating-point noise floor
    ``eps * max(m, n) * sigma_max``. ``trustworthy`` says the gap is at least 1e3.
    """

    parameters: int
    outputs: int
    rank: int
    nullity: int
    gap: float
    last_kept: float
    first_dropped: float
    sigma_max: float
    around_cut: tuple[float, ...]
    """Up to 4 singular values on each side of the cut (the kept ones first), descending."""

    @property
    def trustworthy(self) -> bool:
        return self.gap >= TRUST_GAP

    def summary(self) -> str:
        flag = "" if self.trustworthy else "  (NOT trustworthy)"
        return (
            f"params {self.parameters}, rank {self.rank}, nullity {self.nullity}, "
            f"gap {self.gap:.3g} ({self.last_kept:.3g} | {self.first_dropped:.3g}){flag}"
        )


def singular_values(J: Tensor) -> Tensor:
    """All ``n`` singular values of an (m, n) matrix, descending; zeros appended when m < n."""
    s = torch.linalg.svdvals(J)
    n = J.shape[1]
    if s.numel() < n:
        s = torch.cat([s, s.new_zeros(n - s.numel())])
    return s


def nullity_report(J: Tensor, *, context: int = 4) -> NullityReport:
    """Nullity of ``J`` (outputs, parameters) with the cut at the largest spectral gap."""
    m, n = J.shape
    s = singular_values(J.detach()).to(torch.float64)
    smax = float(s[0]) if n else 0.0
    if n == 0 or smax == 0.0:
        return NullityReport(n, m, 0, n, math.inf, 0.0, 0.0, smax, tuple(s.tolist()[:context]))
    floor = torch.finfo(J.dtype).eps * max(m, n) * smax
    tiny = torch.finfo(torch.float64).tiny
    below = torch.cat([s[1:], s.new_tensor([floor])])  # the value after each candidate cut
    ratios = s / below.clamp_min(tiny)
    ratios[s <= tiny] = 0.0  # never cut after a zero singular value
    rank = int(torch.argmax(ratios)) + 1
    gap = float(ratios[rank - 1])
    first_dropped = float(s[rank]) if rank < n else 0.0
    around = s[max(0, rank - context) : rank + context]
    return NullityReport(
        parameters=n,
        outputs=m,
        rank=rank,
        nullity=n - rank,
        gap=gap,
        last_kept=float(s[rank - 1]),
        first_dropped=first_dropped,
        sigma_max=smax,
        around_cut=tuple(around.tolist()),
    )


def null_space(J: Tensor, nullity: int) -> Tensor:
    """An orthonormal basis (n, nullity) of the ``nullity`` least-significant right singular
    directions of ``J`` (m, n): the null space once the cut has been chosen."""
    m, n = J.shape
    if nullity == 0:
        return J.new_zeros(n, 0)
    _, _, vh = torch.linalg.svd(J.detach(), full_matrices=m < n)
    return vh[n - nullity : n].T.contiguous()


# --- the whole measurement -------------------------------------------------------------------


@dataclass(frozen=True)
class NullityMeasurement:
    """A nullity measured on a sample and on that sample doubled (fresh sequences added)."""

    n_seq: int
    report: NullityReport
    """On the doubled sample (2 * n_seq sequences)."""
    half: NullityReport
    """On the first n_seq sequences."""

    @property
    def nullity(self) -> int:
        return self.report.nullity

    @property
    def stable(self) -> bool:
        return self.half.nullity == self.report.nullity

    @property
    def trustworthy(self) -> bool:
        return self.stable and self.report.trustworthy and self.half.trustworthy


def measure_nullity(
    fn: LogProbFn,
    params: Mapping[str, Tensor],
    *,
    vocab: int,
    seq_len: int,
    generator: torch.Generator,
    n_seq: int | None = None,
    factor: float = 10.0,
    jacobian: Callable[..., Tensor] = jacobian_of_logprobs,
) -> tuple[NullityMeasurement, Tensor]:
    """Measure the nullity on ``n_seq >= factor * params / (T (V - 1))`` sequences and on twice
    as many; returns the measurement and the Jacobian of the doubled sample."""
    total = sum(p.numel() for p in params.values())
    n_seq = n_seq or sequences_needed(total, seq_len, vocab, factor)
    first = sample_inputs(vocab, seq_len, n_seq, generator)
    second = sample_inputs(vocab, seq_len, n_seq, generator)
    J1 = jacobian(fn, params, first)
    J2 = jacobian(fn, params, second)
    J = torch.cat([J1, J2])
    return NullityMeasurement(n_seq, nullity_report(J), nullity_report(J1)), J
