# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Erlang term text, both ways, without an Erlang VM: ``consult`` reads it, ``literal`` writes it.

``consult`` reads what file:consult/1 reads (`.rel`, `sys.config`); ``literal`` builds every Erlang
literal the modules put into an expression. The external term format (binary) is erlang_etf.py.

The controller (an AWX execution environment included) may have no `erl`. This reads the
subset release files use: atoms (bare and quoted), strings, binaries of strings, integers,
floats, tuples, lists (proper, and `[H | T]`), maps, and `%` comments. Atoms become Atom,
strings become str, `<<"..">>` becomes bytes, tuples become tuple.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom


class TermSyntaxError(ValueError):
    pass


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|%[^\n]*)
  | (?P<float>-?\d+\.\d+(?:[eE][-+]?\d+)?)
  | (?P<int>-?\d+\#[0-9A-Za-z]+|-?\d+)
  | (?P<char>\$(?:\\.|.))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<qatom>'(?:[^'\\]|\\.)*')
  | (?P<atom>[a-z][A-Za-z0-9_@]*)
  | (?P<var>[A-Z_][A-Za-z0-9_]*)
  | (?P<punct><<|>>|=>|\#\{|[{}\[\],|.])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "e": "\x1b", "b": "\b", "f": "\f", "v": "\v", "d": "\x7f"}


def _unescape(body):
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            if n in "01234567":
                digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group(0)
                out.append(chr(int(digits, 8)))
                i += 1 + len(digits)
                continue
            out.append(_ESCAPES.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokens(text):
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise TermSyntaxError("unexpected %r at offset %d" % (text[pos:pos + 20], pos))
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        value = m.group(0)
        if kind == "var":
            raise TermSyntaxError("a variable (%s) is not a term" % value)
        yield kind, value


class _Parser(object):
    def __init__(self, text):
        self.tokens = list(_tokens(text))
        self.pos = 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def take(self, expected=None):
        tok = self.peek()
        if tok[0] is None:
            raise TermSyntaxError("unexpected end of text")
        if expected is not None and tok[1] != expected:
            raise TermSyntaxError("expected %r, found %r" % (expected, tok[1]))
        self.pos += 1
        return tok

    def term(self):
        kind, value = self.take()
        if kind == "int":
            base, sep, digits = value.partition("#")
            return int(digits, int(base)) if sep else int(value)
        if kind == "float":
            return float(value)
        if kind == "char":
            return ord(_unescape(value[1:]))
        if kind == "string":
            text = _unescape(value[1:-1])
            while self.peek()[0] == "string":  # "a" "b" is one string
                text += _unescape(self.take()[1][1:-1])
            return text
        if kind == "qatom":
            return Atom(_unescape(value[1:-1]))
        if kind == "atom":
            return Atom(value)
        if value == "{":
            return tuple(self.sequence("}"))
        if value == "[":
            return self.list_()
        if value == "<<":
            parts = self.sequence(">>")
            if not all(isinstance(p, str) and not isinstance(p, Atom) for p in parts):
                raise TermSyntaxError("only <<\"string\">> binaries are read")
            return "".join(parts).encode("utf-8")
        if value == "#{":
            return self.map_()
        raise TermSyntaxError("unexpected %r" % value)

    def sequence(self, close):
        items = []
        if self.peek()[1] == close:
            self.take()
            return items
        while True:
            items.append(self.term())
            kind, value = self.take()
            if value == close:
                return items
            if value != ",":
                raise TermSyntaxError("expected ',' or %r, found %r" % (close, value))

    def list_(self):
        items = []
        if self.peek()[1] == "]":
            self.take()
            return items
        while True:
            items.append(self.term())
            kind, value = self.take()
            if value == "]":
                return items
            if value == "|":
                tail = self.term()
                self.take("]")
                if not isinstance(tail, list):
                    raise TermSyntaxError("an improper list is not read")
                return items + tail
            if value != ",":
                raise TermSyntaxError("expected ',' or ']', found %r" % value)

    def map_(self):
        result = {}
        if self.peek()[1] == "}":
            self.take()
            return result
        while True:
            key = self.term()
            self.take("=>")
            result[key] = self.term()
            kind, value = self.take()
            if value == "}":
                return result
            if value != ",":
                raise TermSyntaxError("expected ',' or '}', found %r" % value)


def consult(text):
    """The terms of a file:consult/1 text (each ends with a dot), as Python values."""
    parser = _Parser(text)
    terms = []
    while parser.peek()[0] is not None:
        terms.append(parser.term())
        parser.take(".")
    return terms


# ---------------------------------------------------------------------------
# Erlang literals: ONE quoting function for everything put into an expression
# ---------------------------------------------------------------------------

def _escape(text, quote):
    out = []
    for char in text:
        code = ord(char)
        if char == "\\" or char == quote:
            out.append("\\" + char)
        elif 0x20 <= code <= 0x7E:
            out.append(char)
        else:
            out.append("\\x{%X}" % code)
    return "".join(out)


def literal(value):
    """The Erlang source text for a Python value.

    Atom -> quoted atom; str -> binary (<<"..."/utf8>>); bytes -> binary; bool -> true/false;
    int; float; None -> undefined; list -> list; tuple -> tuple; dict -> map.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "undefined"
    if isinstance(value, Atom):
        return "'%s'" % _escape(str(value), "'")
    if isinstance(value, str):
        return '<<"%s"/utf8>>' % _escape(value, '"')
    if isinstance(value, bytes):
        return "<<%s>>" % ",".join(str(byte) for byte in bytearray(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[%s]" % ", ".join(literal(item) for item in value)
    if isinstance(value, tuple):
        return "{%s}" % ", ".join(literal(item) for item in value)
    if isinstance(value, dict):
        return "#{%s}" % ", ".join("%s => %s" % (literal(k), literal(v)) for k, v in value.items())
    raise TypeError("no Erlang literal for %r" % (value,))
