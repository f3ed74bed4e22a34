"""OData query-option and key-segment parsing shared by the emulators.

Follows ``docs/protocol-notes.md``:

* §2.8 (Dataverse ``$filter``): ``eq ne gt ge lt le``, ``and or not``, parentheses,
  ``contains/startswith/endswith``, case-insensitive string comparison, ``''`` escaping,
  ``Microsoft.Dynamics.CRM.In(PropertyName=...,PropertyValues=[...])`` and the
  documented error text ``There is an unterminated literal at position 21 in '...'``.
* §3.1/§3.2 (F&O ``$filter``): enum literals ``Microsoft.Dynamics.DataEntities.NoYes'Yes'``,
  ``eq '*text*'`` wildcard equality, ``in``/``has`` rejected.
* §2.5 (key segments): ``set('v')``, ``set(<guid>)``, ``set(a='x',b=2,_c_value=<guid>)``.

The parser knows nothing about column types: values are compared by their runtime types
(strings case-insensitively, numbers numerically, ISO datetimes as instants). Callers that
need to validate property names can read :attr:`FilterPredicate.properties`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "FilterPredicate",
    "ODataQueryError",
    "compare_values",
    "format_key",
    "format_key_literal",
    "get_path",
    "parse_filter",
    "parse_key_segment",
    "parse_orderby",
    "sort_key",
    "sort_rows",
]


class ODataQueryError(ValueError):
    """A malformed or unsupported query option or key segment.

    The message is meant to be shown to the client in a 400 response body.
    """


# --------------------------------------------------------------------------------------
# Lexer
# --------------------------------------------------------------------------------------

_GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9A-Za-z_])")
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?(?![0-9A-Za-z_:.])")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?P<suffix>[mMdDfFlL]?)(?![0-9A-Za-z_])")
_IDENT_RE = re.compile(r"[A-Za-z_$@][A-Za-z0-9_.$@/]*")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*$")

_PUNCT = "(),[]="
_COMPARISON_OPS = ("eq", "ne", "gt", "ge", "lt", "le")


@dataclass(frozen=True)
class _Token:
    kind: str  # string, number, guid, datetime, enum, ident, eof, or a punctuation char
    value: Any
    pos: int
    text: str = ""


def _unterminated(pos: int, text: str) -> ODataQueryError:
    return ODataQueryError(f"There is an unterminated literal at position {pos} in '{text}'.")


def _syntax_error(pos: int, text: str) -> ODataQueryError:
    return ODataQueryError(f"Syntax error at position {pos} in '{text}'.")


def _scan_single_quoted(text: str, start: int) -> tuple[str, int]:
    """Scan a ``'...'`` literal (``''`` = one quote) starting at ``text[start] == "'"``.

    Mirrors Microsoft.OData's ExpressionLexer: an unterminated literal is reported at the
    end-of-text position, which is how the documented message says ``position 21`` for the
    21-character filter ``lastname eq 'O'Bryan'`` (docs/protocol-notes.md §2.8).
    """
    pos = start
    parts: list[str] = []
    while True:
        end = text.find("'", pos + 1)
        if end < 0:
            raise _unterminated(len(text), text)
        parts.append(text[pos + 1 : end])
        pos = end + 1
        if pos < len(text) and text[pos] == "'":
            parts.append("'")
            pos = end + 1  # the doubled quote opens the next chunk
            continue
        return "".join(parts), pos


def _scan_double_quoted(text: str, start: int) -> tuple[str, int]:
    """Scan a JSON-style ``"..."`` literal (used in ``PropertyValues=["a","b"]``)."""
    pos = start + 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            pos += 2
            continue
        if ch == '"':
            try:
                return str(json.loads(text[start : pos + 1])), pos + 1
            except ValueError as exc:
                raise _syntax_error(start, text) from exc
        pos += 1
    raise _unterminated(len(text), text)


def _parse_datetime(raw: str) -> datetime:
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch.isspace():
            pos += 1
            continue
        if ch in _PUNCT:
            tokens.append(_Token(ch, ch, pos, ch))
            pos += 1
            continue
        if ch == "'":
            value, end = _scan_single_quoted(text, pos)
            tokens.append(_Token("string", value, pos, text[pos:end]))
            pos = end
            continue
        if ch == '"':
            value, end = _scan_double_quoted(text, pos)
            tokens.append(_Token("string", value, pos, text[pos:end]))
            pos = end
            continue
        m = _GUID_RE.match(text, pos)
        if m:
            tokens.append(_Token("guid", str(uuid.UUID(m.group())), pos, m.group()))
            pos = m.end()
            continue
        m = _DATETIME_RE.match(text, pos)
        if m:
            try:
                dt = _parse_datetime(m.group())
            except ValueError as exc:
                raise ODataQueryError(
                    f"The DateTimeOffset text '{m.group()}' should be in format "
                    f"'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within "
                    f"valid range."
                ) from exc
            tokens.append(_Token("datetime", dt, pos, m.group()))
            pos = m.end()
            continue
        m = _NUMBER_RE.match(text, pos)
        if m:
            raw = m.group()
            digits = raw[: len(raw) - len(m.group("suffix"))]
            number: int | Decimal = int(digits) if re.fullmatch(r"-?\d+", digits) else Decimal(digits)
            tokens.append(_Token("number", number, pos, raw))
            pos = m.end()
            continue
        m = _IDENT_RE.match(text, pos)
        if m:
            ident = m.group()
            end = m.end()
            if "." in ident and end < n and text[end] == "'":
                # Enum literal, e.g. Microsoft.Dynamics.DataEntities.NoYes'Yes' (§3.1):
                # the value is the member-name string.
                member, end = _scan_single_quoted(text, end)
                tokens.append(_Token("enum", member, pos, text[pos:end]))
            else:
                tokens.append(_Token("ident", ident, pos, ident))
            pos = end
            continue
        raise _syntax_error(pos, text)
    tokens.append(_Token("eof", None, n, ""))
    return tokens


# --------------------------------------------------------------------------------------
# Value comparison
# --------------------------------------------------------------------------------------


def get_path(row: Mapping[str, Any], path: str) -> Any:
    """Read ``a`` or ``a/b`` (single-valued navigation) from a row; missing → None."""
    current: Any = row
    for part in path.split("/"):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            return _parse_datetime(value.strip())
        except ValueError:
            return None
    return None


def _comparable(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Bring two non-null values to a common comparable form, or None if incomparable."""
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    if isinstance(a, datetime) or isinstance(b, datetime):
        da, db = _as_datetime(a), _as_datetime(b)
        return (da, db) if da is not None and db is not None else None
    if _is_number(a) or _is_number(b):
        try:
            return Decimal(str(a)), Decimal(str(b))
        except InvalidOperation:
            return None
    if isinstance(a, str) and isinstance(b, str):
        # String comparisons are case-insensitive (docs/protocol-notes.md §2.8).
        return a.casefold(), b.casefold()
    return None


def compare_values(op: str, left: Any, right: Any) -> bool:
    """Evaluate ``left <op> right`` with OData null semantics (null only equals null)."""
    if left is None or right is None:
        if op == "eq":
            return left is None and right is None
        if op == "ne":
            return not (left is None and right is None)
        return False
    pair = _comparable(left, right)
    if pair is None:
        return op == "ne"
    a, b = pair
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return bool(a != b)
    if op == "gt":
        return bool(a > b)
    if op == "ge":
        return bool(a >= b)
    if op == "lt":
        return bool(a < b)
    if op == "le":
        return bool(a <= b)
    raise ODataQueryError(f"Unsupported operator '{op}'.")


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------

_Value = Callable[[Mapping[str, Any]], Any]
_Pred = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class _Operand:
    """A value expression: a literal (``literal_kind`` set) or a property path."""

    evaluate: _Value
    literal_kind: str | None = None
    literal_value: Any = None
    path: str | None = None


class FilterPredicate:
    """A compiled ``$filter``: call it with a row mapping to get True/False.

    ``properties`` lists the property paths the filter references, so a server can reject
    unknown columns with its own error text.
    """

    def __init__(self, predicate: _Pred, properties: frozenset[str], text: str) -> None:
        self._predicate = predicate
        self.properties = properties
        self.text = text

    def __call__(self, row: Mapping[str, Any]) -> bool:
        return bool(self._predicate(row))

    def __repr__(self) -> str:
        return f"FilterPredicate({self.text!r})"


_STRING_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda value, arg: arg in value,
    "startswith": lambda value, arg: value.startswith(arg),
    "endswith": lambda value, arg: value.endswith(arg),
}
_CRM_IN_FUNCTIONS = ("Microsoft.Dynamics.CRM.In", "Microsoft.Dynamics.CRM.NotIn")


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(
        "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$",
        re.IGNORECASE | re.DOTALL,
    )


def _wildcard_predicate(regex: re.Pattern[str], value_of: _Value, negate: bool) -> _Pred:
    def wildcard(row: Mapping[str, Any]) -> bool:
        value = value_of(row)
        matched = isinstance(value, str) and regex.match(value) is not None
        return matched != negate

    return wildcard


class _FilterParser:
    def __init__(self, text: str, *, allow_in: bool, wildcard_eq: bool,
                 types: Mapping[str, str] | None = None) -> None:
        self.types = types or {}
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.allow_in = allow_in
        self.wildcard_eq = wildcard_eq
        self.properties: set[str] = set()

    # -- token helpers -----------------------------------------------------------------
    @property
    def tok(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def is_keyword(self, word: str) -> bool:
        return self.tok.kind == "ident" and self.tok.value == word

    def expect(self, kind: str) -> _Token:
        if self.tok.kind != kind:
            if self.tok.kind == "eof":
                raise ODataQueryError(f"Expression expected at position {self.tok.pos} in '{self.text}'.")
            raise _syntax_error(self.tok.pos, self.text)
        return self.advance()

    # -- grammar ---------------------------------------------------------------------
    def parse(self) -> FilterPredicate:
        if self.tok.kind == "eof":
            raise ODataQueryError(f"Expression expected at position 0 in '{self.text}'.")
        predicate = self.parse_or()
        if self.tok.kind != "eof":
            raise _syntax_error(self.tok.pos, self.text)
        return FilterPredicate(predicate, frozenset(self.properties), self.text)

    def parse_or(self) -> _Pred:
        left = self.parse_and()
        while self.is_keyword("or"):
            self.advance()
            right = self.parse_and()
            left = (lambda lhs, rhs: lambda row: lhs(row) or rhs(row))(left, right)
        return left

    def parse_and(self) -> _Pred:
        left = self.parse_not()
        while self.is_keyword("and"):
            self.advance()
            right = self.parse_not()
            left = (lambda lhs, rhs: lambda row: lhs(row) and rhs(row))(left, right)
        return left

    def parse_not(self) -> _Pred:
        if self.is_keyword("not"):
            self.advance()
            inner = self.parse_not()
            return lambda row: not inner(row)
        return self.parse_comparison()

    def parse_comparison(self) -> _Pred:
        start = self.tok
        # A parenthesised boolean expression.
        if start.kind == "(":
            self.advance()
            inner = self.parse_or()
            self.expect_close()
            return inner
        left = self.parse_operand()
        if self.tok.kind == "ident" and self.tok.value in _COMPARISON_OPS:
            op = self.advance().value
            right = self.parse_operand()
            return self.make_comparison(op, left, right)
        if self.is_keyword("in"):
            return self.parse_in_operator(left)
        if self.is_keyword("has"):
            raise ODataQueryError(f"The 'has' operator is not supported (position {self.tok.pos} in '{self.text}').")
        if left.literal_kind is None and left.path is None:
            # A boolean-valued function call (contains, startswith, In, ...).
            return lambda row: bool(left.evaluate(row))
        if left.literal_kind == "bool":
            value = bool(left.literal_value)
            return lambda row: value
        if left.path is not None:
            path = left.path
            return lambda row: get_path(row, path) is True
        raise _syntax_error(self.tok.pos, self.text)

    def expect_close(self) -> None:
        if self.tok.kind != ")":
            raise ODataQueryError(f"')' or operator expected at position {self.tok.pos} in '{self.text}'.")
        self.advance()

    def make_comparison(self, op: str, left: _Operand, right: _Operand) -> _Pred:
        self.check_types(op, left, right)
        if self.wildcard_eq and op in ("eq", "ne"):
            for literal, other in ((right, left), (left, right)):
                if literal.literal_kind == "string" and "*" in literal.literal_value:
                    return _wildcard_predicate(_wildcard_regex(literal.literal_value), other.evaluate, op == "ne")
        lhs, rhs = left.evaluate, right.evaluate
        return lambda row: compare_values(op, lhs(row), rhs(row))

    def check_types(self, op: str, left: _Operand, right: _Operand) -> None:
        """A date property compared with a quoted literal is refused, as Microsoft.OData refuses it (the wording is
        Microsoft.OData's; that both services answer it with a 400 is inferred). Only dates are checked."""
        for prop, literal in ((left, right), (right, left)):
            edm = self.types.get(prop.path or "")
            if edm in ("Edm.DateTimeOffset", "Edm.Date") and literal.literal_kind == "string":
                kinds = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
                         "lt": "LessThan", "le": "LessThanOrEqual"}
                pair = (edm, "Edm.String") if prop is left else ("Edm.String", edm)
                raise ODataQueryError(f"A binary operator with incompatible types was detected. Found operand types "
                                      f"'{pair[0]}' and '{pair[1]}' for operator kind '{kinds.get(op, op)}'.")

    def parse_in_operator(self, left: _Operand) -> _Pred:
        token = self.advance()  # 'in'
        if not self.allow_in:
            # F&O: "has and in are not supported" (docs/protocol-notes.md §3.2). The exact server
            # text is unknown (inferred).
            raise ODataQueryError(
                f"The query specified in the URI is not valid. The 'in' operator at position "
                f"{token.pos} in '{self.text}' is not supported."
            )
        closing = {"(": ")", "[": "]"}.get(self.tok.kind)
        if closing is None:
            raise _syntax_error(self.tok.pos, self.text)
        self.advance()
        values = self.parse_literal_list(closing)
        lhs = left.evaluate
        return lambda row: any(compare_values("eq", lhs(row), v) for v in values)

    def parse_literal_list(self, closing: str) -> list[Any]:
        values: list[Any] = []
        if self.tok.kind == closing:
            self.advance()
            return values
        while True:
            operand = self.parse_operand()
            if operand.literal_kind is None:
                raise _syntax_error(self.tok.pos, self.text)
            values.append(operand.literal_value)
            if self.tok.kind == ",":
                self.advance()
                continue
            if self.tok.kind != closing:
                raise ODataQueryError(f"'{closing}' or ',' expected at position {self.tok.pos} in '{self.text}'.")
            self.advance()
            return values

    def parse_operand(self) -> _Operand:
        token = self.tok
        kind = token.kind
        if kind in ("string", "number", "guid", "datetime", "enum"):
            self.advance()
            value = token.value
            return _Operand(lambda row: value, literal_kind=kind, literal_value=value)
        if kind == "(":
            # Parenthesised value expression, e.g. "(name) eq 'x'": rare, but legal.
            self.advance()
            inner = self.parse_operand()
            self.expect_close()
            return inner
        if kind != "ident":
            if kind == "eof":
                raise ODataQueryError(f"Expression expected at position {token.pos} in '{self.text}'.")
            raise _syntax_error(token.pos, self.text)
        word = token.value
        if word in ("true", "false"):
            self.advance()
            flag = word == "true"
            return _Operand(lambda row: flag, literal_kind="bool", literal_value=flag)
        if word == "null":
            self.advance()
            return _Operand(lambda row: None, literal_kind="null", literal_value=None)
        if word.startswith("@"):
            raise ODataQueryError(
                f"Parameter alias '{word}' is not supported by the emulator (position {token.pos} in '{self.text}')."
            )
        if word in ("and", "or", "not", *_COMPARISON_OPS, "in", "has"):
            raise ODataQueryError(f"Expression expected at position {token.pos} in '{self.text}'.")
        self.advance()
        if self.tok.kind == "(":
            return self.parse_function(word, token.pos)
        if not _NAME_RE.match(word):
            raise _syntax_error(token.pos, self.text)
        self.properties.add(word)
        return _Operand(lambda row: get_path(row, word), path=word)

    def parse_function(self, name: str, pos: int) -> _Operand:
        self.advance()  # '('
        if name in _STRING_FUNCTIONS:
            first = self.parse_operand()
            self.expect(",")
            second = self.parse_operand()
            self.expect_close()
            test = _STRING_FUNCTIONS[name]
            a, b = first.evaluate, second.evaluate

            def string_function(row: Mapping[str, Any]) -> bool:
                value, arg = a(row), b(row)
                if not isinstance(value, str) or not isinstance(arg, str):
                    return False
                return test(value.casefold(), arg.casefold())

            return _Operand(string_function)
        if name in _CRM_IN_FUNCTIONS:
            if not self.allow_in:
                raise ODataQueryError(
                    f"An unknown function with name '{name}' was found. This may also be a "
                    f"function import or a key lookup on a navigation property, which is not "
                    f"allowed."
                )
            return self.parse_crm_in(name, pos)
        raise ODataQueryError(
            f"An unknown function with name '{name}' was found. This may also be a function "
            f"import or a key lookup on a navigation property, which is not allowed."
        )

    def parse_crm_in(self, name: str, pos: int) -> _Operand:
        """``Microsoft.Dynamics.CRM.In(PropertyName='x',PropertyValues=['a','b'])`` (§2.8)."""
        args: dict[str, Any] = {}
        while True:
            arg_name = self.expect("ident").value
            self.expect("=")
            if self.tok.kind == "[":
                self.advance()
                args[arg_name] = self.parse_literal_list("]")
            else:
                operand = self.parse_operand()
                if operand.literal_kind != "string":
                    raise _syntax_error(self.tok.pos, self.text)
                args[arg_name] = operand.literal_value
            if self.tok.kind == ",":
                self.advance()
                continue
            self.expect_close()
            break
        prop, values = args.get("PropertyName"), args.get("PropertyValues")
        if not isinstance(prop, str) or not isinstance(values, list):
            raise ODataQueryError(f"{name} requires PropertyName and PropertyValues (position {pos} in '{self.text}').")
        self.properties.add(prop)
        negate = name.endswith("NotIn")

        def crm_in(row: Mapping[str, Any]) -> bool:
            value = get_path(row, prop)
            return any(compare_values("eq", value, v) for v in values) != negate

        return _Operand(crm_in)


def parse_filter(text: str, *, allow_in: bool = True, wildcard_eq: bool = False,
                 types: Mapping[str, str] | None = None) -> Callable[[Mapping[str, Any]], bool]:
    """Compile an OData ``$filter`` expression into a row predicate.

    ``allow_in``: accept ``prop in (...)`` and ``Microsoft.Dynamics.CRM.In`` (Dataverse,
    §2.8). False rejects both (F&O, §3.2). ``wildcard_eq``: F&O ``eq '*text*'`` semantics.
    The result is a :class:`FilterPredicate` (its ``properties`` lists referenced columns).
    ``types`` (property -> Edm type name): a date property compared with a quoted literal is refused.
    Raises :class:`ODataQueryError` with an OData-style message on malformed input.
    """
    return _FilterParser(text, allow_in=allow_in, wildcard_eq=wildcard_eq, types=types).parse()


# --------------------------------------------------------------------------------------
# $orderby
# --------------------------------------------------------------------------------------


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    """Parse ``$orderby=a,b desc`` into ``[("a", False), ("b", True)]`` (prop, descending)."""
    result: list[tuple[str, bool]] = []
    offset = 0
    for item in text.split(","):
        parts = item.split()
        if not parts or len(parts) > 2 or not _NAME_RE.match(parts[0]):
            raise _syntax_error(offset + (len(item) - len(item.lstrip())), text)
        descending = False
        if len(parts) == 2:
            direction = parts[1]
            if direction not in ("asc", "desc"):
                raise _syntax_error(offset + item.index(direction), text)
            descending = direction == "desc"
        result.append((parts[0], descending))
        offset += len(item) + 1
    return result


def sort_key(value: Any) -> tuple[int, int, Any]:
    """A total-order key for one value: None first, then booleans, numbers, strings
    (case-insensitive), anything else by ``str``."""
    if value is None:
        return (0, 0, 0)  # None sorts first (ascending)
    if isinstance(value, bool):
        return (1, 0, int(value))
    if _is_number(value):
        return (1, 1, Decimal(str(value)))
    if isinstance(value, str):
        return (1, 2, value.casefold())
    return (1, 3, str(value))


def sort_rows(rows: Iterable[Mapping[str, Any]], orderby: Sequence[tuple[str, bool]]) -> list[Mapping[str, Any]]:
    """Stable multi-key sort; None sorts first ascending (last descending); strings
    case-insensitively."""
    result = list(rows)
    for prop, descending in reversed(orderby):
        result.sort(key=lambda row: sort_key(get_path(row, prop)), reverse=descending)
    return result


# --------------------------------------------------------------------------------------
# Key segments
# --------------------------------------------------------------------------------------

_KEY_NAME_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")
_KEY_BARE_RE = re.compile(r"[^,]*")


def _key_error(text: str) -> ODataQueryError:
    return ODataQueryError(f"Bad Request - Error in query syntax. Invalid key segment '({text})'.")


def _parse_key_value(text: str, pos: int) -> tuple[Any, int]:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        raise _key_error(text)
    if text[pos] == "'":
        return _scan_single_quoted(text, pos)
    m = _IDENT_RE.match(text, pos)
    if m and "." in m.group() and m.end() < len(text) and text[m.end()] == "'":
        return _scan_single_quoted(text, m.end())  # enum literal → member name
    raw_match = _KEY_BARE_RE.match(text, pos)
    raw = raw_match.group().strip() if raw_match else ""
    end = raw_match.end() if raw_match else pos
    if _GUID_RE.fullmatch(raw):
        return str(uuid.UUID(raw)), end
    if _DATETIME_RE.fullmatch(raw) and re.search(r"T.*(?:Z|[+-]\d{2}:\d{2})$", raw):
        # An Edm.DateTimeOffset key part is written bare, with its offset, as an F&O Location header shows it:
        # PersonUsers(UserId='…',PartyNumber='…',ValidFrom=2020-12-31T23:00:00Z) (seen in public code). Whether F&O
        # also takes one without an offset is not known: refused here (inferred).
        try:
            return _parse_datetime(raw), end
        except ValueError:
            raise _key_error(text) from None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        # An Edm.Date key part (a Dataverse date-only column) is written bare too: lsync_validfrom=2024-01-01.
        try:
            return date.fromisoformat(raw), end
        except ValueError:
            raise _key_error(text) from None
    if raw in ("true", "false"):
        return raw == "true", end
    if raw == "null":
        return None, end
    m = _NUMBER_RE.fullmatch(raw)
    if m:
        digits = raw[: len(raw) - len(m.group("suffix"))]
        return (int(digits) if re.fullmatch(r"-?\d+", digits) else Decimal(digits)), end
    raise _key_error(text)


def parse_key_segment(text: str) -> list[tuple[str | None, Any]]:
    """Parse the inside of ``set(...)`` (already percent-decoded), §2.5 / §3.1.

    ``'ABC'`` → ``[(None, 'ABC')]``; a bare GUID → ``[(None, '<lower-case guid>')]``;
    ``a='x',b=2,_c_value=<guid>`` → ``[('a','x'), ('b',2), ('_c_value','<guid>')]``; a bare
    ``2024-01-01T00:00:00Z`` (with its offset) → an aware ``datetime``.
    Quotes are unescaped (``''`` → ``'``); commas and ``=`` inside quotes are data.
    """
    if not text.strip():
        raise _key_error(text)
    pairs: list[tuple[str | None, Any]] = []
    pos = 0
    while True:
        m = _KEY_NAME_RE.match(text, pos)
        name: str | None = None
        if m:
            name = m.group(1)
            pos = m.end()
        value, pos = _parse_key_value(text, pos)
        pairs.append((name, value))
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        if text[pos] != ",":
            raise _key_error(text)
        pos += 1
    names = [n for n, _ in pairs]
    if None in names and len(pairs) > 1:
        raise _key_error(text)
    if len(set(names)) != len(names):
        raise _key_error(text)
    return pairs


def format_key_literal(value: Any) -> str:
    """Format one key value for a URL: strings quoted with ``''`` doubling; numbers, GUIDs
    (``uuid.UUID`` or GUID-shaped strings), booleans and null bare."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        if _GUID_RE.fullmatch(value):
            return value.lower()
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"Cannot format {type(value).__name__} as an OData key literal")


def format_key(pairs: Sequence[tuple[str | None, Any]] | Mapping[str, Any]) -> str:
    """Inverse of :func:`parse_key_segment`: ``[('a','x'),('b',2)]`` → ``a='x',b=2``."""
    items = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
    if len(items) == 1 and items[0][0] is None:
        return format_key_literal(items[0][1])
    return ",".join(f"{name}={format_key_literal(value)}" for name, value in items)
