"""The ground truth: nullity of the Jacobian of a model's log-probabilities w.r.t. its parameters.

Every continuous symmetry of a model, declared or not, is a null direction of the Jacobian of its
log-probabilities (stacked over many inputs) with respect to all of its parameters, and at a
generic point nothing else is. This module measures that nullity on a tiny float64 instance:

* :func:`randomize_` draws every parameter at random (no unit gains, no zero biases);
* :func:`sample_inputs` draws token sequences (:func:`covering_inputs`: every token read);
* :func:`jacobian_of_logprobs` builds the Jacobian with forward-mode AD;
* :func:`nullity_report` cuts the singular spectrum at its largest gap and says whether that gap
  is large enough to trust; :func:`null_space` returns the null directions themselves;
* :func:`measure_nullity` does all of it with a sample large enough for the parameter count and
  checks that the nullity is unchanged when the sample doubles.

See the last section of ``design/symmetries.md`` for the traps this guards against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

LogProbFn = Callable[[dict[str, Tensor], Any], Tensor]

TRUST_GAP = 1e3
"""A cut whose gap (ratio of the singular values on either side) is below this is not trusted."""


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the tiny instances' work (also a decorator: ``@one_thread()``).
    Their matrices are small, and on a shared machine threads that wait for each other are far
    slower than one: measured on two busy cores, ``svdvals`` of 1136 x 1136 took 0.35 s on one
    thread and 12 to 22 s on two, QR of 12960 x 1136 1.3 s against 3.4 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


def sample_inputs(vocab: int, seq_len: int, n_seq: int, generator: torch.Generator) -> Tensor:
    """``n_seq`` token sequences of length ``seq_len``, uniform over the vocabulary (int64)."""
    return torch.randint(0, vocab, (n_seq, seq_len), generator=generator, dtype=torch.long)


def covering_inputs(vocab: int, seq_len: int, n_seq: int, generator: torch.Generator) -> Tensor:
    """``n_seq`` token sequences of length ``seq_len`` in which every token occurs (when
    ``n_seq * seq_len >= vocab``) and no token more than once above any other: random
    permutations of the vocabulary laid end to end, cut into sequences. A token the sample never
    reads leaves its embedding row free, null directions of the sample and not of the model;
    uniform draws of a few hundred tokens from 40 leave one or two unread (measured: 5 and 2 on
    Cohere's and MPT's instances), and only a larger sample would bring them in."""
    total = n_seq * seq_len
    perms = [torch.randperm(vocab, generator=generator) for _ in range(-(-total // vocab))]
    return torch.cat(perms)[:total].reshape(n_seq, seq_len)


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
    chunk_size: int = 256,
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
            except RuntimeError:  # an op vmap cannot batch (NotImplementedError is one too)
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

    Singular values below the noise floor ``eps * max(m, n) * sigma_max`` (NumPy's default
    ``matrix_rank`` tolerance) are raised to it, so that the ragged tail of exact zeros cannot
    hold the largest ratio; the rank is then cut at the largest ratio of consecutive singular
    values, full rank included (its gap is measured against the floor). ``trustworthy`` says that
    gap is at least 1e3. ``alternatives`` lists the other cuts whose gap is that large too: a
    spectrum with two trustworthy cuts has a tier of near-zeros (for example exact symmetries
    blurred to ~1e-8 by float32 arithmetic inside float64 code) and needs a person to look.
    """

    parameters: int
    outputs: int
    rank: int
    nullity: int
    gap: float
    last_kept: float
    first_dropped: float
    sigma_max: float
    floor: float
    around_cut: tuple[float, ...]
    """Up to ``context`` singular values on each side of the cut, descending."""
    alternatives: tuple[tuple[int, float], ...] = ()
    """(nullity, gap) of every other cut with a gap of at least 1e3, largest gap first."""

    @property
    def trustworthy(self) -> bool:
        return self.gap >= TRUST_GAP

    @property
    def ambiguous(self) -> bool:
        return bool(self.alternatives)

    def summary(self) -> str:
        flag = "" if self.trustworthy else "  (NOT trustworthy)"
        if self.alternatives:
            other = ", ".join(f"nullity {k} at gap {g:.3g}" for k, g in self.alternatives)
            flag += f"  (AMBIGUOUS: also {other})"
        return (
            f"params {self.parameters}, rank {self.rank}, nullity {self.nullity}, "
            f"gap {self.gap:.3g} ({self.last_kept:.3g} | {self.first_dropped:.3g}){flag}"
        )


def compress(J: Tensor) -> Tensor:
    """A matrix with the singular values and right singular vectors of ``J`` (m, n) and at most
    n rows: the R factor of a QR decomposition when J is tall (much faster to decompose than J,
    and as accurate: Householder QR is backward stable), else ``J`` itself."""
    m, n = J.shape
    return torch.linalg.qr(J, mode="r").R if m > n else J


def singular_values(J: Tensor) -> Tensor:
    """All ``n`` singular values of an (m, n) matrix, descending; zeros appended when m < n."""
    s = torch.linalg.svdvals(compress(J))
    n = J.shape[1]
    if s.numel() < n:
        s = torch.cat([s, s.new_zeros(n - s.numel())])
    return s


def nullity_report(J: Tensor, *, context: int = 4) -> NullityReport:
    """Nullity of ``J`` (outputs, parameters) with the cut at the largest spectral gap."""
    m = J.shape[0]
    eps = torch.finfo(J.dtype).eps
    return report_from_singular_values(singular_values(J.detach()), m, context=context, eps=eps)


def report_from_singular_values(
    s: Tensor, outputs: int, *, context: int = 4, eps: float | None = None
) -> NullityReport:
    """:func:`nullity_report` from the singular values (all n of them, descending)."""
    eps = torch.finfo(s.dtype).eps if eps is None else eps
    s = s.to(torch.float64)
    n = s.numel()
    smax = float(s[0]) if n else 0.0
    floor = eps * max(outputs, n) * smax
    if n == 0 or smax == 0.0:
        return NullityReport(n, outputs, 0, n, math.inf, 0.0, 0.0, smax, floor, ())
    clamped = s.clamp_min(floor)
    ratios = clamped / torch.cat([clamped[1:], clamped.new_tensor([floor])])
    rank = int(torch.argmax(ratios)) + 1
    gap = float(ratios[rank - 1])
    others = [
        (n - (i + 1), float(ratios[i]))
        for i in torch.argsort(ratios, descending=True).tolist()
        if i != rank - 1 and ratios[i] >= TRUST_GAP
    ]
    return NullityReport(
        parameters=n,
        outputs=outputs,
        rank=rank,
        nullity=n - rank,
        gap=gap,
        last_kept=float(s[rank - 1]),
        first_dropped=float(s[rank]) if rank < n else 0.0,
        sigma_max=smax,
        floor=floor,
        around_cut=tuple(s[max(0, rank - context) : rank + context].tolist()),
        alternatives=tuple(others),
    )


def null_space(J: Tensor, nullity: int) -> Tensor:
    """An orthonormal basis (n, nullity) of the ``nullity`` least-significant right singular
    directions of ``J`` (m, n): the null space once the cut has been chosen."""
    m, n = J.shape
    if nullity == 0:
        return J.new_zeros(n, 0)
    _, _, vh = torch.linalg.svd(compress(J.detach()), full_matrices=m < n)
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
    draw: Callable[[int, int, int, torch.Generator], Tensor] = sample_inputs,
) -> tuple[NullityMeasurement, Tensor]:
    """Measure the nullity on ``n_seq >= factor * params / (T (V - 1))`` sequences and on twice
    as many (fresh sequences added).

    Returns the measurement and ``R``, an (n, n) matrix with the singular values and right
    singular vectors of the Jacobian on the doubled sample (its QR factor): pass it to
    :func:`null_space` for the null directions.
    """
    total = sum(p.numel() for p in params.values())
    n_seq = n_seq or sequences_needed(total, seq_len, vocab, factor)
    first = draw(vocab, seq_len, n_seq, generator)
    J1 = jacobian(fn, params, first)
    m1 = J1.shape[0]
    R1 = compress(J1)
    del J1
    eps = torch.finfo(R1.dtype).eps
    half = report_from_singular_values(_svdvals_n(R1, total), m1, eps=eps)
    return _doubled(fn, params, half, R1, vocab, seq_len, n_seq, generator, jacobian, draw)


def measure_growing(
    fn: LogProbFn,
    params: Mapping[str, Tensor],
    *,
    vocab: int,
    seq_len: int,
    generator: torch.Generator,
    n_seq: int,
    rounds: int,
    jacobian: Callable[..., Tensor] = jacobian_of_logprobs,
    draw: Callable[[int, int, int, torch.Generator], Tensor] = sample_inputs,
) -> tuple[NullityMeasurement, Tensor]:
    """:func:`measure_nullity` on ``n_seq`` sequences and twice as many; while that is not
    trustworthy and ``rounds`` allow, again on ``2 n_seq`` and ``4 n_seq``, and so on. Each
    round's first sample is the whole sample of the round before: its QR factor and spectrum
    are reused, and only the fresh sequences (``draw``) are differentiated."""
    measured, R = measure_nullity(
        fn,
        params,
        vocab=vocab,
        seq_len=seq_len,
        generator=generator,
        n_seq=n_seq,
        jacobian=jacobian,
        draw=draw,
    )
    for _ in range(rounds - 1):
        if measured.trustworthy:
            break
        n_seq *= 2
        half = measured.report
        measured, R = _doubled(
            fn, params, half, R, vocab, seq_len, n_seq, generator, jacobian, draw
        )
    return measured, R


def _doubled(
    fn: LogProbFn,
    params: Mapping[str, Tensor],
    half: NullityReport,
    R1: Tensor,
    vocab: int,
    seq_len: int,
    n_seq: int,
    generator: torch.Generator,
    jacobian: Callable[..., Tensor],
    draw: Callable[[int, int, int, torch.Generator], Tensor] = sample_inputs,
) -> tuple[NullityMeasurement, Tensor]:
    """The measurement on a first sample of ``n_seq`` sequences (its report ``half`` and QR
    factor ``R1``) and on that sample with ``n_seq`` fresh ones added."""
    second = draw(vocab, seq_len, n_seq, generator)
    J2 = jacobian(fn, params, second)
    m2 = J2.shape[0]
    R = compress(torch.cat([R1, J2]))
    del J2
    eps = torch.finfo(R.dtype).eps
    full = report_from_singular_values(_svdvals_n(R, half.parameters), half.outputs + m2, eps=eps)
    return NullityMeasurement(n_seq, full, half), R


def _svdvals_n(A: Tensor, n: int) -> Tensor:
    s = torch.linalg.svdvals(A)
    return torch.cat([s, s.new_zeros(n - s.numel())]) if s.numel() < n else s
