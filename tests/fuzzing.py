"""Hostile inputs for the CLI, and a runner that classifies what each one does.

Shared by the fuzz tests (``tests/test_fuzz.py``, a bounded number of examples in CI) and the
long run (``python bench/run.py --only fuzz``, at least 10,000 specs and 10,000 configs).

Each input is a file: a spec (YAML) or a Hugging Face ``config.json``, built from a real one by
hypothesis in two layers: mutations of its data tree (a value replaced by a hostile one, a key
deleted or added, a value wrapped in a list or a mapping), then, sometimes, of its text (an alias
bomb, an alias that contains itself, deep nesting, a Python tag, YAML 1.1 scalars, a truncation,
bytes that are not UTF-8). :func:`run_cli` runs ``symcomp --debug COMMAND FILE`` in this process
and says which of these happened:

- ``accepted``: exit 0;
- ``clean error``: exit 2 with ``error: `` and the file's name on stderr;
- ``traceback``: an exception escaped (``--debug`` lets it through; without it the user would
  see exit 3, ``internal error``), or an exit status outside the contract;
- ``hang``: over ``seconds`` of CPU time (this process's: on a shared machine, wall time
  measures the neighbours), or a peak resident memory over ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
SPEC_BASES = tuple(
    sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "specs" / "tiny").glob("*.yaml"))
)
CONFIG_BASES = tuple(sorted((ROOT / "tests" / "data" / "hf_configs").glob("*/config.json")))
OUTCOMES = ("accepted", "clean error", "traceback", "hang")


# --- the runner ---------------------------------------------------------------------------------


class _Timeout(BaseException):  # not an Exception: the CLI's handler must not catch it
    pass


@dataclass(frozen=True)
class Outcome:
    kind: str  # one of OUTCOMES
    detail: str  # the error's first line, the traceback's last lines, or what ran over
    output: str = ""  # what the command printed on stdout


def _import_commands() -> None:
    import rich.console
    import rich.table  # noqa: F401

    import symcomp.hf.config_import
    import symcomp.spec.summary
    import symcomp.spec.writer  # noqa: F401


def _on_alarm(signum, frame):
    raise _Timeout


def run_cli(argv: list[str], *, seconds: float = 10.0, max_bytes: int = 1 << 30) -> Outcome:
    """``symcomp --debug *argv`` in this process, classified (see the module docstring). The
    modules the commands import are imported first, outside the clock."""
    from symcomp.cli import main

    _import_commands()
    out, err = io.StringIO(), io.StringIO()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    previous = signal.signal(signal.SIGPROF, _on_alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    code: object = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(["--debug", *argv])
    except SystemExit as exc:
        code = exc.code
    except _Timeout:
        return Outcome("hang", f"over {seconds:g} s")
    except BaseException:
        return Outcome("traceback", traceback.format_exc(limit=-3)[-1500:])
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before
    if grown > max_bytes:
        return Outcome("hang", f"the peak memory grew by {grown / 2**30:.1f} GiB")
    message = err.getvalue()
    if "_Timeout" in message:  # the limit struck inside a callback (gc's), which swallowed it
        return Outcome("hang", f"over {seconds:g} s")
    if code in (0, None):
        return Outcome("accepted", "", out.getvalue())
    if code == 2 and message.startswith("error: "):
        return Outcome("clean error", message.splitlines()[0][:300])
    return Outcome("traceback", f"exit {code}: {message[:500]}")


# --- hostile values and texts -------------------------------------------------------------------

_HOSTILE_VALUES = [
    None, True, False, 0, -1, 1, 7, 2**31, 2**63, 10**30, -(10**30),
    0.0, -0.0, 0.5, 1e-300, 1e308, float("inf"), float("-inf"), float("nan"),
    "", "auto", "none", "yes", "off", "1:30", "012", "0x1F", "1e-5", "~", "ä\u202e", "\x00",
    "width^width^width", "(" * 80 + "width" + ")" * 80, "-" * 300 + "1", "+".join(["width"] * 300),
    "sqrt(-1)", "1/0", "W_Q A^-T", "layers.*.attn.W_Q", "heads * head_width",
    [], [0], [-1, -1], [[[]]], [None], ["gelu"], {}, {"type": "rope"}, {"a": {"b": {}}},
]  # fmt: skip
hostile_values = (
    st.sampled_from(_HOSTILE_VALUES) | st.integers() | st.floats() | st.text(max_size=8)
)

_TEXT_SNIPPETS = [
    # billion laughs: nine aliases, each nine times the one before
    "lol0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)),
    "loop: &self [1, *self]\n",
    "deep: " + "[" * 3000 + "]" * 3000 + "\n",
    "deepmap: " + "{a: " * 200 + "1" + "}" * 200 + "\n",
    "evil: !!python/object/apply:os.system ['true']\n",
    "base: &b {width: 8}\nmerged: {<<: *b}\n",
    "layers: 1:30\n",
    "bias: yes\n",
    "\tkey: tab\n",
    "dup: 1\ndup: 2\n",
    "? [complex, key]\n: value\n",
    "bignum: 1" + "0" * 5000 + "\n",
    "anchor: &x 1\nref: *undefined\n",
]


@st.composite
def _mutated_tree(draw, data):
    """``data`` with one to three mutations at random places."""
    for _ in range(draw(st.integers(1, 3))):
        data = _mutate_once(draw, data)
    return data


def _mutate_once(draw, node):
    if not isinstance(node, dict | list) or not node or draw(st.integers(0, 4)) == 0:
        return draw(
            st.one_of(
                hostile_values,
                st.just([node]),
                st.just({"value": node}),
                st.just(node),
            )
        )
    if isinstance(node, list):
        i = draw(st.integers(0, len(node) - 1))
        return [*node[:i], _mutate_once(draw, node[i]), *node[i + 1 :]]
    key = draw(st.sampled_from(sorted(node)))
    action = draw(st.sampled_from(["descend", "descend", "descend", "delete", "add"]))
    out = dict(node)
    if action == "delete":
        del out[key]
    elif action == "add":
        out[draw(st.sampled_from(["unknown_key", "layers", "type", "eps", ""]))] = draw(
            hostile_values
        )
    else:
        out[key] = _mutate_once(draw, node[key])
    return out


@st.composite
def _mutated_text(draw, text: str) -> bytes:
    """Sometimes a hostile snippet, a truncation or bytes that are not UTF-8."""
    action = draw(st.sampled_from(["none", "none", "snippet", "truncate", "bytes"]))
    if action == "snippet":
        lines = text.splitlines(keepends=True)
        at = draw(st.integers(0, len(lines)))
        text = "".join(lines[:at]) + draw(st.sampled_from(_TEXT_SNIPPETS)) + "".join(lines[at:])
    elif action == "truncate" and text:
        text = text[: draw(st.integers(0, len(text) - 1))]
    raw = text.encode("utf-8")
    if action == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    return raw


def _load(path: Path):
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


_BASE_DATA: dict[Path, object] = {}


def _base(path: Path):
    if path not in _BASE_DATA:
        _BASE_DATA[path] = _load(path)
    return _BASE_DATA[path]


@st.composite
def spec_files(draw) -> bytes:
    """A spec's bytes: a real spec, mutated."""
    tree = draw(_mutated_tree(_base(draw(st.sampled_from(SPEC_BASES)))))
    try:
        text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        text = str(tree)
    return draw(_mutated_text(text))


@st.composite
def config_files(draw) -> bytes:
    """A config.json's bytes: a real one, mutated (NaN and Infinity included, as Python's
    json writes them)."""
    tree = draw(_mutated_tree(_base(draw(st.sampled_from(CONFIG_BASES)))))
    text = json.dumps(tree, indent=2)
    return draw(_mutated_text(text))


_EXPR_TOKENS = [
    "width", "heads", "head_width", "hidden", "W_Q", "A", "P", "s", "layers.*.attn.W_Q", "b_Q",
    "0", "1", "2.5", "1e308", "+", "-", "*", "/", "@", "^", "T", "-1", "-T", "(", ")", ",",
    "sqrt(", "diag(", "kron(", "eye(", "ones(", "sum(", "unit(", "^-1", "^T", "^2", " ",
]  # fmt: skip
expressions = st.lists(st.sampled_from(_EXPR_TOKENS), max_size=40).map("".join) | st.text(
    max_size=30
)


def check_expression(text: str) -> Outcome:
    """Parse ``text`` and, when it parses, print it and evaluate it as a size expression: an
    ExprError is a clean error, anything else a traceback."""
    from symcomp.lang import ExprError, evaluate_scalar, parse_expr

    sizes = {"width": 8.0, "heads": 2.0, "head_width": 4.0, "hidden": 12.0}
    try:
        expr = parse_expr(text)
        str(expr)
        evaluate_scalar(expr, sizes)
    except ExprError as exc:
        return Outcome("clean error", str(exc))
    except Exception:
        return Outcome("traceback", traceback.format_exc(limit=-3)[-1500:])
    return Outcome("accepted", "")
