"""``verify``'s second process (:mod:`symcomp.verify.forked`): result, progress, errors."""

from __future__ import annotations

import os

import pytest

from symcomp.errors import VerificationError
from symcomp.verify import forked as forked_module
from symcomp.verify.forked import forked


def _count(n: int, *, progress) -> tuple[int, int]:
    for i in range(n):
        progress(f"step {i}")
    return n * n, os.getpid()


def _fail(*, progress) -> None:
    progress("about to fail")
    raise VerificationError("the job's own error")


def test_the_job_runs_in_another_process_and_reports_its_progress():
    told: list[str] = []
    with forked(_count, 5, progress=told.append) as result:
        here = os.getpid()
    square, there = result()
    assert square == 25
    assert there != here  # it ran beside this process, not in it
    assert told == [f"step {i}" for i in range(5)]  # every message, in order


def test_the_jobs_exception_reaches_the_caller_with_its_type():
    told: list[str] = []
    with (
        pytest.raises(VerificationError, match="the job's own error"),
        forked(_fail, progress=told.append) as result,
    ):
        result()
    assert told == ["about to fail"]


def test_without_fork_the_job_runs_here(monkeypatch):
    monkeypatch.setattr(forked_module.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    told: list[str] = []
    with forked(_count, 3, progress=told.append) as result:
        pass
    square, there = result()
    assert (square, there) == (9, os.getpid())
    assert told == ["step 0", "step 1", "step 2"]
