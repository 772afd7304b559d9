"""bench/run.py --quick: every benchmark's code path runs and reports finite, positive figures.

Speed is judged by the full run (bench/RESULTS.md), never here."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmarks_report_every_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = out.read_text()
    for section in (
        "compile",
        "verify",
        "throughput",
        "compiled",
        "reduced",
        "memory",
        "projection",
        "roofline",
        "fuzz",
    ):
        assert f"## {section}" in report, section
    rows = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    values = [
        float(m.group(1)) for line in rows if (m := re.match(r"\| [^|]+ \| ([-\d.e+]+) ", line))
    ]
    assert len(values) >= 12
    assert all(math.isfinite(v) and v >= 0 for v in values)
    assert "torch.compile failed" not in report
