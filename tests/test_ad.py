"""The double-vjp JVP agrees with forward-mode AD, and keeps ``symcomp compile`` off dynamo."""

import subprocess
import sys

import torch

from symcomp.symmetry.ad import jacobian_columns


def test_jacobian_columns_match_forward_mode():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 3, generator=g, dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)

    def fn(x):  # rational, like a GL action: (I + x)^-1 A, and a translation-like term
        return torch.cat([(torch.linalg.inv(eye + x) @ A).reshape(-1), (x.T @ A).reshape(-1)])

    primal = 0.1 * torch.randn(4, 4, generator=g, dtype=torch.float64)
    directions = torch.randn(5, 4, 4, generator=g, dtype=torch.float64)
    got = jacobian_columns(fn, primal, directions)
    want = torch.stack([torch.func.jvp(fn, (primal,), (d,))[1] for d in directions])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_jacobian_columns_of_a_constant_are_zero():
    constant = torch.ones(3, dtype=torch.float64)
    out = jacobian_columns(lambda x: constant, torch.zeros(2), torch.eye(2))
    assert out.shape == (2, 3) and not out.any()


def test_compile_does_not_import_dynamo(tmp_path):
    """torch._dynamo costs 1.3 s to import: the compile path must not reach it."""
    probe = (
        "import sys; from symcomp.cli import main\n"
        f"main(['compile', 'specs/tiny/llama.yaml', '-o', {str(tmp_path / 'pkg')!r}])\n"
        "print('DYNAMO', 'torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert "DYNAMO False" in out.stdout, out.stdout + out.stderr
