"""Tokenizer and parser of the expression language, and :class:`ExprError`.

Grammar (``<juxtaposition>`` is two factors side by side, ``A B``)::

    expr    := term (('+' | '-') term)*
    term    := factor (('*' | '/' | '@' | <juxtaposition>) factor)*
    factor  := '-' factor | postfix
    postfix := atom ('^T' | '^-1' | '^-T' | '^' ['-'] number)*
    atom    := number | name | name '(' expr (',' expr)* ')' | '(' expr ')'
    name    := ident ('.' ident | '.' '*' | '.' digits)*     # W_Q, ln.gain, layers.0.attn.W_O

Juxtaposition binds like ``*`` and is left-associative: ``A B^-1 C`` is ``(A (B^-1)) C``.
Postfix operators bind tighter than ``-``; ``-a b`` is ``(-a) b``; ``a -b`` is a subtraction,
never a product. A name directly followed by ``(`` is a call; so is a function name followed by
``(`` after spaces. Anything else followed by ``(`` after a space is a product: ``t (W + b)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from symcomp_runtime.errors import SymcompError

from symcomp.lang.nodes import (
    BinOp,
    Call,
    Expr,
    Inverse,
    Name,
    Neg,
    Number,
    Power,
    Transpose,
    depth,
)

# Bounds that keep parsing and every printer (all recursive) far from Python's stack limit: no
# real size or action expression comes near them.
MAX_LENGTH = 4096
MAX_DEPTH = 64

# name -> number of arguments
FUNCTIONS: dict[str, int] = {
    "diag": 1, "ones": 1, "eye": 1, "kron": 2, "sqrt": 1, "sum": 1, "unit": 2,
}  # fmt: skip


class ExprError(SymcompError):
    """A bad expression: ``message``, the 0-based character ``offset`` (or None), ``accepted``.

    ``str()`` gives the message with the position counted from 1, for people. The spec loader
    turns it into a :class:`~symcomp.errors.SpecError` located in the spec file.
    """

    def __init__(self, message: str, offset: int | None = None, accepted: str | None = None):
        self.message = message
        self.offset = offset
        self.accepted = accepted
        super().__init__(message if offset is None else f"{message} (at character {offset + 1})")


# --- tokenizer ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_]\w*(?:\.(?:[A-Za-z_]\w*|\*|\d+|\{i(?:[+-]\d+)?\}))*)
    |(?P<op>[-+*/@^(),])""",
    re.X,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # number, name, op, end
    text: str
    pos: int
    spaced: bool  # whitespace right before it


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, spaced = 0, False
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExprError(f"unexpected character {text[pos]!r}", pos, _ACCEPTED_SYNTAX)
        kind = match.lastgroup or ""
        if kind == "space":
            spaced = True
        else:
            tokens.append(_Token(kind, match.group(), pos, spaced))
            spaced = False
        pos = match.end()
    tokens.append(_Token("end", "", len(text), spaced))
    return tokens


_ACCEPTED_SYNTAX = (
    "numbers, names, + - * / @, juxtaposition, ^T ^-1 ^-T ^number, parentheses, "
    f"functions {', '.join(FUNCTIONS)}"
)


# --- parser ---------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.i = 0
        self.nesting = 0  # factors open on the parser's stack

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> _Token:
        if self.tok.text != text or self.tok.kind != "op":
            raise self.unexpected(f"'{text}'")
        return self.next()

    def unexpected(self, wanted: str) -> ExprError:
        tok = self.tok
        what = "end of expression" if tok.kind == "end" else repr(tok.text)
        return ExprError(f"expected {wanted}, found {what}", tok.pos, wanted)

    def parse(self) -> Expr:
        if self.tok.kind == "end":
            raise ExprError("empty expression", 0, "an expression")
        node = self.expr()
        if self.tok.kind != "end":
            raise self.unexpected("an operator or the end of the expression")
        return node

    def expr(self) -> Expr:
        node = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self.next()
            node = BinOp(op.text, node, self.term(), op.pos)
        return node

    def starts_atom(self) -> bool:
        tok = self.tok
        return tok.kind in ("number", "name") or (tok.kind == "op" and tok.text == "(")

    def term(self) -> Expr:
        node = self.factor()
        while True:
            tok = self.tok
            if tok.kind == "op" and tok.text in "*/@":
                self.next()
                node = BinOp(tok.text, node, self.factor(), tok.pos)
            elif self.starts_atom():  # juxtaposition
                node = BinOp("@", node, self.factor(), tok.pos)
            else:
                return node

    def factor(self) -> Expr:
        if self.nesting >= MAX_DEPTH:
            raise ExprError(
                f"expression nested too deeply (over {MAX_DEPTH} levels)",
                self.tok.pos,
                f"at most {MAX_DEPTH} nested parentheses, calls and signs",
            )
        self.nesting += 1
        try:
            if self.tok.kind == "op" and self.tok.text == "-":
                tok = self.next()
                return Neg(self.factor(), tok.pos)
            return self.postfix()
        finally:
            self.nesting -= 1

    def postfix(self) -> Expr:
        node = self.atom()
        while self.tok.kind == "op" and self.tok.text == "^":
            caret = self.next()
            negative = self.tok.kind == "op" and self.tok.text == "-"
            if negative:
                self.next()
            tok = self.tok
            if tok.kind == "name" and tok.text == "T":
                self.next()
                node = Transpose(Inverse(node, caret.pos) if negative else node, caret.pos)
            elif tok.kind == "number":
                self.next()
                value = -float(tok.text) if negative else float(tok.text)
                node = Inverse(node, caret.pos) if value == -1 else Power(node, value, caret.pos)
            else:
                raise self.unexpected("T, -1, -T or a number after '^'")
        return node

    def atom(self) -> Expr:
        tok = self.tok
        if tok.kind == "number":
            self.next()
            return Number(float(tok.text), tok.pos)
        if tok.kind == "name":
            self.next()
            after = self.tok
            is_paren = after.kind == "op" and after.text == "("
            if is_paren and (not after.spaced or tok.text in FUNCTIONS):
                return self.call(tok)
            if tok.text in FUNCTIONS:
                raise ExprError(
                    f"{tok.text} is a function: write {tok.text}(...)", tok.pos, "a call"
                )
            return Name(tok.text, tok.pos)
        if tok.kind == "op" and tok.text == "(":
            self.next()
            node = self.expr()
            self.expect(")")
            return node
        raise self.unexpected("a number, a name or '('")

    def call(self, name: _Token) -> Call:
        if name.text not in FUNCTIONS:
            raise ExprError(
                f"unknown function {name.text!r}", name.pos, ", ".join(sorted(FUNCTIONS))
            )
        self.expect("(")
        args = [self.expr()]
        while self.tok.kind == "op" and self.tok.text == ",":
            self.next()
            args.append(self.expr())
        self.expect(")")
        arity = FUNCTIONS[name.text]
        if len(args) != arity:
            raise ExprError(
                f"{name.text} takes {arity} argument{'s' * (arity > 1)}, found {len(args)}",
                name.pos,
                f"{arity} argument{'s' * (arity > 1)}",
            )
        return Call(name.text, tuple(args), name.pos)


def parse_expr(text: str) -> Expr:
    """Parse ``text``; raises :class:`ExprError` with the offending offset. The text is at most
    :data:`MAX_LENGTH` characters and its tree at most :data:`MAX_DEPTH` levels deep (a long
    sum is as deep as it has terms), so no printer can exhaust the stack."""
    if len(text) > MAX_LENGTH:
        raise ExprError(
            f"expression too long ({len(text)} characters)",
            MAX_LENGTH,
            f"at most {MAX_LENGTH} characters",
        )
    node = _Parser(text).parse()
    levels = depth(node)
    if levels > MAX_DEPTH:
        raise ExprError(
            f"expression too deep ({levels} levels: a long chain of operators)",
            None,
            f"at most {MAX_DEPTH} levels; split a long sum or product into named parts",
        )
    return node
