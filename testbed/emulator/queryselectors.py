"""``labelSelector`` and ``fieldSelector`` query strings: parsing and matching.

Implements the grammar of k8s.io/apimachinery/pkg/labels (``=``, ``==``, ``!=``, ``in``,
``notin``, ``key``, ``!key``, ``>``/``<``; comma is AND) and pkg/fields (``=``, ``==``, ``!=``
with backslash escapes), so list and watch filter exactly as the real server does.
Selectors as request query strings, unlike `agent.selectors`, which matches the structured
``LabelSelector`` of a NetworkPolicy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from testbed.emulator import names


class SelectorError(ValueError):
    """A selector string that the real server would refuse with 400 BadRequest."""


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # one of: in, notin, exists, !, =, !=, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in ("in", "="):
            return present and value in self.values
        if self.op in ("notin", "!="):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present:
            return False
        try:
            have, want = int(value), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


_SPECIAL = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        for sym in _SPECIAL:
            if text.startswith(sym, i):
                tokens.append(sym)
                i += len(sym)
                break
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in "!=(),><":
                i += 1
            tokens.append(text[start:i])
    return tokens


def _is_ident(tok: str | None) -> bool:
    return tok is not None and tok not in _SPECIAL


def _check_key(key: str) -> None:
    errs = names.is_qualified_name(key)
    if errs:
        raise SelectorError(f"unable to parse requirement: key: Invalid value: {key!r}: {errs[0]}")


def _check_value(value: str) -> None:
    errs = names.is_valid_label_value(value)
    if errs:
        raise SelectorError(
            f"unable to parse requirement: values[0][{value}]: Invalid value: {value!r}: " + errs[0]
        )


def parse_label_selector(text: str) -> LabelSelector:
    return _LabelParser(text).parse()


class _LabelParser:
    """Reads one labelSelector string token by token: requirements separated by commas."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def parse(self) -> LabelSelector:
        reqs: list[Requirement] = []
        while self.peek() is not None:
            reqs.append(self._requirement())
            sep = self.take()
            if sep is not None and sep != ",":
                raise SelectorError(f"found '{sep}', expected: ',' or 'end of string'")
            if sep == "," and self.peek() is None:
                raise SelectorError("found '', expected: identifier after ','")
        return LabelSelector(tuple(reqs))

    def _requirement(self) -> Requirement:
        """`!key`, `key`, `key in (...)`, `key notin (...)` or `key <op> value`."""
        tok = self.take()
        if tok == "!":
            key = self.take()
            if not _is_ident(key):
                raise SelectorError(f"found '{key}', expected: identifier after '!'")
            assert key is not None
            _check_key(key)
            return Requirement(key, "!")
        if not _is_ident(tok):
            raise SelectorError(f"found '{tok}', expected: !, identifier, or 'end of string'")
        assert tok is not None
        key = tok
        _check_key(key)
        op = self.peek()
        if op is None or op == ",":
            return Requirement(key, "exists")
        if op in ("in", "notin"):
            self.take()
            return Requirement(key, op, self._value_set())
        if op in ("=", "==", "!=", ">", "<"):
            self.take()
            return self._comparison(key, op)
        raise SelectorError(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")

    def _value_set(self) -> tuple[str, ...]:
        """`( value, ... )` after `in`/`notin`: empty items are empty values, none is an error."""
        if self.take() != "(":
            raise SelectorError(f"found '{self.peek()}', expected: '('")
        values: list[str] = []
        expect_value = True
        while True:
            item = self.take()
            if item == ")":
                if expect_value and values:
                    values.append("")
                break
            if item == ",":
                if expect_value:
                    values.append("")
                expect_value = True
                continue
            if not _is_ident(item) or not expect_value:
                raise SelectorError(f"found '{item}', expected: ',', ')' or identifier")
            assert item is not None
            values.append(item)
            expect_value = False
        if not values:
            raise SelectorError(
                "unable to parse requirement: for 'in', 'notin' operators, values set "
                "can't be empty"
            )
        for v in values:
            _check_value(v)
        return tuple(values)

    def _comparison(self, key: str, op: str) -> Requirement:
        """The value after `=`, `==`, `!=` (may be empty) or `>`, `<` (an integer)."""
        nxt = self.peek()
        value = ""
        if _is_ident(nxt):
            assert nxt is not None
            value = nxt
            self.take()
        elif op in (">", "<"):
            raise SelectorError(f"found '{nxt}', expected: identifier")
        if op in (">", "<"):
            try:
                int(value)
            except ValueError as exc:
                raise SelectorError(
                    f"unable to parse requirement: for 'Gt', 'Lt' operators, the value "
                    f"must be an integer: {value}"
                ) from exc
            return Requirement(key, "gt" if op == ">" else "lt", (value,))
        _check_value(value)
        return Requirement(key, "!=" if op == "!=" else "=", (value,))


@dataclasses.dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool


@dataclasses.dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        for r in self.requirements:
            equal = fields.get(r.field, "") == r.value
            if equal == r.negate:
                return False
        return True

    def fields(self) -> set[str]:
        return {r.field for r in self.requirements}


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: {text}")
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_field_selector(text: str) -> FieldSelector:
    reqs: list[FieldRequirement] = []
    if not text.strip():
        return FieldSelector()
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        for op, negate in (("!=", True), ("==", False), ("=", False)):
            idx = _find_unescaped(part, op)
            if idx >= 0:
                field = part[:idx].strip()
                value = _unescape(part[idx + len(op) :])
                reqs.append(FieldRequirement(field, value, negate))
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
    return FieldSelector(tuple(reqs))


def _find_unescaped(text: str, op: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(op, i):
            return i
        i += 1
    return -1


def _dig(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def field_set(obj: Mapping[str, Any], labels: tuple[str, ...], namespaced: bool) -> dict[str, str]:
    """The fieldSelector-visible fields of ``obj`` (metadata.name/namespace plus ``labels``)."""
    fields = {"metadata.name": _dig(obj, "metadata.name")}
    if namespaced:
        fields["metadata.namespace"] = _dig(obj, "metadata.namespace")
    for label in labels:
        if label == "source":
            fields[label] = _dig(obj, "source.component")
        elif label == "spec.hostNetwork":
            fields[label] = _dig(obj, label) or "false"
        else:
            fields[label] = _dig(obj, label)
    return fields
