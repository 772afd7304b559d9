"""The README's walk-through: its commands run as written, in order, from a folder that holds
the repository's specs (the commands' paths are relative to the repository root)."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT


def _commands(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {heading}\n(.*?)^```bash\n(.*?)^```", text, re.M | re.S)
    assert match, f"README.md has no bash block under '## {heading}'"
    return [line for line in match.group(2).splitlines() if line.strip()]


def test_the_walk_through_runs_as_written(tmp_path):
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    commands = _commands("A first session")
    assert [c.split()[3] for c in commands if c.startswith("python3 -m symcomp")] == [
        "analyze",
        "compile",
        "verify",
        "reduce",
    ]
    printed = ""
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        printed += done.stdout + done.stderr
    # the figures the README quotes from these commands' output
    for quoted in ("1,347,352", "124,439,808", "33 passed", "nullity 184", "nullity 225"):
        assert quoted in printed, quoted
    assert re.search(r"parameters \(standard\)\s*│[^│]*│[^│]*│\s*120,576", printed)
    assert re.search(r"parameters \(reduced\)\s*│[^│]*│[^│]*│\s*114,044", printed)
    build = tmp_path / "build"
    assert "<svg" in (build / "gpt2-small.html").read_text()
    assert (build / "gpt2_small" / "reduced.py").exists()
    for weights in ("standard.safetensors", "reduced.safetensors"):
        assert (build / "tiny_gpt2" / weights).stat().st_size > 0
