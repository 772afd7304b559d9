"""Run a pure-Python job in a forked process while this one works with torch.

``symcomp verify`` has two independent halves: the group checks (SymPy proofs, pure Python,
bound by the interpreter lock) and the Jacobian measurements (torch, one thread). A thread would
gain nothing; a second process uses the machine's second core (measured on two cores: GPT-2
small's verify from 19 s to 15 s, Pythia's from 83 s to 55 s). The job's progress messages, and
then its result or its exception, come back through a pipe. Where ``fork`` is not a start
method (Windows, and macOS by policy), the job runs here, first.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from symcomp.errors import VerificationError

T = TypeVar("T")


@contextmanager
def forked(
    job: Callable[..., T], *args: Any, progress: Callable[[str], None], **kwargs: Any
) -> Iterator[Callable[[], T]]:
    """Start ``job(*args, progress=..., **kwargs)`` in a forked process and yield a function
    that waits for its result (re-raising its exception). ``progress`` is called here, from a
    relay thread, with each message the job reports. An error in the block ends the process;
    the result may be waited for inside the block or after it."""
    if "fork" not in multiprocessing.get_all_start_methods():
        done = job(*args, progress=progress, **kwargs)
        yield lambda: done
        return
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    outcome: dict[str, Any] = {}
    relay = threading.Thread(target=_relay, args=(receive, progress, outcome), daemon=True)
    process = context.Process(target=_child, args=(job, args, kwargs, send), daemon=True)
    process.start()
    send.close()  # the child holds its own end: the relay reads EOF when the child is done
    relay.start()

    def result() -> T:
        relay.join()
        process.join()
        if "error" in outcome:
            raise outcome["error"]
        if "result" not in outcome:
            raise VerificationError(
                f"the group checks' process ended without a result (exit code {process.exitcode})"
            )
        return outcome["result"]

    try:
        yield result
    except BaseException:  # the caller's own work failed: its second half is not wanted
        process.terminate()
        process.join()
        raise


def _child(job: Callable[..., Any], args: tuple, kwargs: dict, send: Connection) -> None:
    import torch

    torch.set_num_threads(1)  # one core each; an OpenMP pool does not survive a fork anyway
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - its errors go to the caller, unprinted
    try:
        value = job(*args, progress=lambda message: send.send(("progress", message)), **kwargs)
        send.send(("result", value))
    except BaseException as exc:
        _send_error(send, exc)
        raise
    finally:
        send.close()


def _send_error(send: Connection, exc: BaseException) -> None:
    try:
        send.send(("error", exc))
    except (pickle.PicklingError, TypeError, AttributeError):  # its words, in one of ours
        send.send(("error", VerificationError(f"{type(exc).__name__}: {exc}")))


def _relay(receive: Connection, progress: Callable[[str], None], outcome: dict[str, Any]) -> None:
    while True:
        try:
            kind, value = receive.recv()
        except (EOFError, OSError):
            return
        if kind == "progress":
            progress(value)
        else:
            outcome[kind] = value
