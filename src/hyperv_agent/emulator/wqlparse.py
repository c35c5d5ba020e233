"""WQL parser and evaluator for the emulator.

The emulator answers WQL text written by ``cim.wql``, typed by an operator in the
diagnostic CLI, or written the way os-win and CloudStack write it. This module turns that
text into frozen dataclasses (``parse``) and decides whether an instance matches a WHERE
condition (``evaluate``). It is a small hand-written tokenizer and recursive-descent
parser with no dependencies.

Grammar (keywords are case-insensitive)::

    query       := select | associators | references
    select      := SELECT ( "*" | ident ( "," ident )* ) FROM ident [ WHERE or_expr ]
    associators := ASSOCIATORS OF "{" path "}" [ WHERE clause+ ]   (AssocClass, ResultClass,
                                                                    Role, ResultRole)
    references  := REFERENCES OF "{" path "}" [ WHERE clause+ ]    (ResultClass, Role)
    clause      := keyword "=" ident
    or_expr     := and_expr ( OR and_expr )*
    and_expr    := not_expr ( AND not_expr )*
    not_expr    := NOT not_expr | "(" or_expr ")" | predicate
    predicate   := ident IS [ NOT ] NULL | ident [ NOT ] LIKE string
                 | ident op ( literal | NULL ) | literal op ident
    op          := "=" | "<>" | "!=" | "<" | ">" | "<=" | ">="
    literal     := 'string' | "string" | integer | TRUE | FALSE

String literals take backslash escapes (``\\x`` is ``x``) and a doubled quote stands for
one quote. ``prop = NULL`` is read as ``prop IS NULL`` and ``prop <> NULL`` as
``prop IS NOT NULL``.

Evaluation lives in ``wqleval``; the tree in ``wqlast``. Both are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NoReturn, TypeAlias, cast

from hyperv_agent.emulator.wqlast import (
    And,
    AssociatorsQuery,
    CompareOp,
    Comparison,
    Expr,
    IsNull,
    Not,
    Or,
    Query,
    ReferencesQuery,
    SelectQuery,
    WqlLiteral,
)
from hyperv_agent.emulator.wqleval import evaluate, like_match, like_regex, referenced_properties
from hyperv_agent.errors import CimInvalidQuery

__all__ = [
    "And", "AssociatorsQuery", "CompareOp", "Comparison", "Expr", "IsNull", "Not", "Or",
    "Query", "ReferencesQuery", "SelectQuery", "WqlLiteral", "evaluate", "like_match",
    "parse", "referenced_properties",
]

# --- tokens -------------------------------------------------------------------------------

TokenKind: TypeAlias = Literal["ident", "string", "number", "op", "punct", "path", "end"]

_SIMPLE_TOKEN = re.compile(
    r"\s+|(?P<number>-?\d+)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><>|!=|<=|>=|=|<|>)|(?P<punct>[(),*])"
)
_RESERVED = frozenset(
    {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "LIKE", "IS", "NULL", "TRUE", "FALSE"}
)


@dataclass(frozen=True)
class _Token:
    kind: TokenKind
    text: str  # as written, for messages
    value: str | int  # decoded string, integer, or the text
    column: int  # 1-based


def _error(message: str, column: int) -> CimInvalidQuery:
    return CimInvalidQuery(f"invalid WQL: {message} at column {column}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        token, position = _next_token(text, position)
        if token is not None:
            tokens.append(token)
    tokens.append(_Token("end", "", "", len(text) + 1))
    return tokens


def _next_token(text: str, start: int) -> tuple[_Token | None, int]:
    if text[start] in "'\"":
        return _read_string(text, start)
    if text[start] == "{":
        return _read_path(text, start)
    match = _SIMPLE_TOKEN.match(text, start)
    if match is None:
        raise _error(f"unexpected character {text[start]!r}", start + 1)
    kind = match.lastgroup
    if kind is None:  # whitespace
        return None, match.end()
    raw = match.group()
    value: str | int = int(raw) if kind == "number" else raw
    return _Token(cast(TokenKind, kind), raw, value, start + 1), match.end()


def _read_string(text: str, start: int) -> tuple[_Token, int]:
    quote = text[start]
    out: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if (char == "\\" and index + 1 < len(text)) or text.startswith(quote * 2, index):
            out.append(text[index + 1])
            index += 2
        elif char == quote:
            token = _Token("string", text[start : index + 1], "".join(out), start + 1)
            return token, index + 1
        else:
            out.append(char)
            index += 1
    raise _error("unterminated string literal starting", start + 1)


def _read_path(text: str, start: int) -> tuple[_Token, int]:
    end = _path_end(text, start + 1)
    if end < 0:
        raise _error("unterminated object path '{' starting", start + 1)
    inner = text[start + 1 : end].strip()
    if not inner:
        raise _error("empty object path", start + 1)
    return _Token("path", text[start : end + 1], inner, start + 1), end + 1


def _path_end(text: str, index: int) -> int:
    """The index of the ``}`` closing a path; quoted key values may hold braces."""
    quote = ""
    while index < len(text):
        char = text[index]
        if quote and char == "\\":
            index += 1
        elif char == quote:
            quote = ""
        elif not quote and char in "'\"":
            quote = char
        elif not quote and char == "}":
            return index
        index += 1
    return -1


# --- the parser ---------------------------------------------------------------------------

_OPERATORS: Mapping[str, CompareOp] = {
    "=": "=", "<>": "<>", "!=": "<>", "<": "<", ">": ">", "<=": "<=", ">=": ">=",
}
_FLIPPED: Mapping[CompareOp, CompareOp] = {
    "=": "=", "<>": "<>", "<": ">", ">": "<", "<=": ">=", ">=": "<=", "LIKE": "LIKE",
}
_ASSOCIATORS_CLAUSES = {
    "AssocClass": "assoc_class", "ResultClass": "result_class", "Role": "role",
    "ResultRole": "result_role",
}
_REFERENCES_CLAUSES = {"ResultClass": "result_class", "Role": "role"}


def parse(text: str) -> Query:
    """Parse WQL text; ``CimInvalidQuery`` names the column and token of any syntax error."""
    parser = _Parser(text)
    query = parser.query()
    parser.expect_end()
    return query


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    # token helpers

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def fail(self, expected: str) -> NoReturn:
        token = self.peek()
        found = "end of query" if token.kind == "end" else repr(token.text)
        raise _error(f"expected {expected}, found {found}", token.column)

    def at_keyword(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "ident" and token.text.upper() == word

    def accept_keyword(self, word: str) -> bool:
        if self.at_keyword(word):
            self.advance()
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.accept_keyword(word):
            self.fail(word)

    def accept(self, kind: TokenKind, text: str) -> bool:
        token = self.peek()
        if token.kind == kind and token.text == text:
            self.advance()
            return True
        return False

    def expect(self, kind: TokenKind, text: str) -> None:
        if not self.accept(kind, text):
            self.fail(repr(text))

    def expect_identifier(self, what: str) -> str:
        token = self.peek()
        if token.kind != "ident" or token.text.upper() in _RESERVED:
            self.fail(what)
        return self.advance().text

    def expect_end(self) -> None:
        if self.peek().kind != "end":
            self.fail("end of query")

    # statements

    def query(self) -> Query:
        if self.peek().kind == "end":
            raise CimInvalidQuery("invalid WQL: empty query")
        if self.accept_keyword("SELECT"):
            return self.select()
        if self.accept_keyword("ASSOCIATORS"):
            path, clauses = self.association(_ASSOCIATORS_CLAUSES)
            return AssociatorsQuery(path, **clauses)
        if self.accept_keyword("REFERENCES"):
            path, clauses = self.association(_REFERENCES_CLAUSES)
            return ReferencesQuery(path, **clauses)
        self.fail("SELECT, ASSOCIATORS OF or REFERENCES OF")

    def select(self) -> SelectQuery:
        properties = self.columns()
        self.expect_keyword("FROM")
        class_name = self.expect_identifier("a class name")
        where = self.or_expr() if self.accept_keyword("WHERE") else None
        return SelectQuery(class_name, properties, where)

    def columns(self) -> tuple[str, ...]:
        if self.accept("punct", "*"):
            return ()
        names = [self.expect_identifier("a property name or '*'")]
        while self.accept("punct", ","):
            names.append(self.expect_identifier("a property name"))
        return tuple(names)

    def association(self, allowed: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        self.expect_keyword("OF")
        token = self.peek()
        if token.kind != "path":
            self.fail("an object path in braces")
        self.advance()
        clauses = self.clauses(allowed) if self.accept_keyword("WHERE") else {}
        return str(token.value), clauses

    def clauses(self, allowed: Mapping[str, str]) -> dict[str, str]:
        found: dict[str, str] = {}
        while True:
            token = self.peek()
            field = self.clause_keyword(allowed)
            if field in found:
                raise _error(f"duplicate clause {token.text!r}", token.column)
            self.expect("op", "=")
            found[field] = self.expect_identifier("a class or role name")
            if self.peek().kind == "end":
                return found

    def clause_keyword(self, allowed: Mapping[str, str]) -> str:
        token = self.peek()
        fields = {name.lower(): field for name, field in allowed.items()}
        field = fields.get(token.text.lower()) if token.kind == "ident" else None
        if field is None:
            self.fail("one of " + ", ".join(allowed))
        self.advance()
        return field

    # conditions

    def or_expr(self) -> Expr:
        left = self.and_expr()
        while self.accept_keyword("OR"):
            left = Or(left, self.and_expr())
        return left

    def and_expr(self) -> Expr:
        left = self.not_expr()
        while self.accept_keyword("AND"):
            left = And(left, self.not_expr())
        return left

    def not_expr(self) -> Expr:
        if self.accept_keyword("NOT"):
            return Not(self.not_expr())
        if self.accept("punct", "("):
            inner = self.or_expr()
            self.expect("punct", ")")
            return inner
        return self.predicate()

    def predicate(self) -> Expr:
        token = self.peek()
        if token.kind == "ident" and token.text.upper() not in _RESERVED:
            return self.property_predicate(self.advance().text)
        if self.at_literal():
            literal = self.literal()
            op = self.operator("a comparison operator")
            return Comparison(self.expect_identifier("a property name"), _FLIPPED[op], literal)
        self.fail("a property name or a literal")

    def property_predicate(self, prop: str) -> Expr:
        if self.accept_keyword("IS"):
            negated = self.accept_keyword("NOT")
            self.expect_keyword("NULL")
            return IsNull(prop, negated)
        if self.accept_keyword("NOT"):
            self.expect_keyword("LIKE")
            return Not(Comparison(prop, "LIKE", self.like_pattern()))
        if self.accept_keyword("LIKE"):
            return Comparison(prop, "LIKE", self.like_pattern())
        op = self.operator("a comparison operator, LIKE or IS")
        if self.at_keyword("NULL"):
            return self.null_comparison(prop, op)
        return Comparison(prop, op, self.literal())

    def null_comparison(self, prop: str, op: CompareOp) -> IsNull:
        if op not in ("=", "<>"):
            self.fail("a literal (NULL compares only with = or <>)")
        self.advance()
        return IsNull(prop, negated=op != "=")

    def operator(self, expected: str) -> CompareOp:
        if self.peek().kind != "op":
            self.fail(expected)
        return _OPERATORS[self.advance().text]

    def at_literal(self) -> bool:
        kind = self.peek().kind
        return kind in ("string", "number") or self.at_keyword("TRUE") or self.at_keyword("FALSE")

    def literal(self) -> WqlLiteral:
        token = self.peek()
        if token.kind in ("string", "number"):
            return self.advance().value
        if self.accept_keyword("TRUE"):
            return True
        if self.accept_keyword("FALSE"):
            return False
        self.fail("a literal")

    def like_pattern(self) -> str:
        token = self.peek()
        if token.kind != "string":
            self.fail("a quoted LIKE pattern")
        like_regex(str(token.value))  # refuse a malformed pattern now, not per instance
        return str(self.advance().value)
