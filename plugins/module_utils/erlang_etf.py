# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Erlang external term format (what term_to_binary/1 writes), decoded strictly: anything unknown is an error.

The Python values of Erlang terms: atoms become Atom (true/false become bool), binaries bytes,
tuples tuple, lists list, maps dict; pids, references, ports and funs become Opaque strings.
``to_text`` turns a decoded term into JSON-friendly facts. Erlang term TEXT (``file:consult/1``,
literals put into expressions) is module_utils/erlang_terms.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct
import zlib


class EtfError(ValueError):
    pass


class Atom(str):
    """An Erlang atom (true/false decode to Python booleans)."""

    def __repr__(self):
        return "Atom(%s)" % str.__repr__(self)


class Opaque(str):
    """A pid, reference, port or fun: only usable as an opaque identity string."""

    def __repr__(self):
        return "Opaque(%s)" % str.__repr__(self)


VERSION_MAGIC = 131
_NEW_FLOAT, _FLOAT, _SMALL_INT, _INT = 70, 99, 97, 98
_SMALL_BIG, _LARGE_BIG = 110, 111
_ATOM, _SMALL_ATOM, _ATOM_UTF8, _SMALL_ATOM_UTF8 = 100, 115, 118, 119
_SMALL_TUPLE, _LARGE_TUPLE, _MAP = 104, 105, 116
_NIL, _STRING, _LIST = 106, 107, 108
_BINARY, _BIT_BINARY = 109, 77
_PID, _NEW_PID, _PORT, _NEW_PORT, _V4_PORT = 103, 88, 102, 89, 120
_NEW_REF, _NEWER_REF, _REF = 114, 90, 101
_EXPORT, _NEW_FUN = 113, 112
_COMPRESSED = 80


class _Reader(object):
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, count):
        if count < 0 or self.pos + count > len(self.data):
            raise EtfError("truncated term at byte %d (wanted %d more)" % (self.pos, count))
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def decode_etf(data):
    """Decode one term produced by term_to_binary/1; the whole input must be used."""
    if isinstance(data, str):
        raise EtfError("decode_etf wants bytes")
    reader = _Reader(bytes(data))
    (magic,) = reader.unpack(">B")
    if magic != VERSION_MAGIC:
        raise EtfError("not an Erlang external term (first byte %d, expected %d)" % (magic, VERSION_MAGIC))
    if reader.data[reader.pos:reader.pos + 1] == bytes([_COMPRESSED]):
        reader = _inflate(reader)
    term = _decode(reader)
    if reader.pos != len(reader.data):
        raise EtfError("%d trailing bytes after the term" % (len(reader.data) - reader.pos))
    return term


def _inflate(reader):
    reader.take(1)
    (size,) = reader.unpack(">I")
    try:
        inflated = zlib.decompress(reader.data[reader.pos:])
    except zlib.error as exc:
        raise EtfError("compressed term: %s" % exc)
    if len(inflated) != size:
        raise EtfError("compressed term: size %d, expected %d" % (len(inflated), size))
    return _Reader(inflated)


def _atom(name):
    if name == "true":
        return True
    if name == "false":
        return False
    return Atom(name)


def _decode_atom_only(reader):
    value = _decode(reader)
    if not isinstance(value, (Atom, bool)):
        raise EtfError("expected an atom (node name) at byte %d" % reader.pos)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _number(tag, reader):
    if tag == _SMALL_INT:
        return reader.unpack(">B")[0]
    if tag == _INT:
        return reader.unpack(">i")[0]
    if tag == _NEW_FLOAT:
        return reader.unpack(">d")[0]
    if tag == _FLOAT:
        return float(reader.take(31).rstrip(b"\x00").decode("ascii"))
    (count,) = reader.unpack(">B" if tag == _SMALL_BIG else ">I")
    (sign,) = reader.unpack(">B")
    value = int.from_bytes(reader.take(count), "little")
    return -value if sign else value


def _atom_term(tag, reader):
    (length,) = reader.unpack(">H" if tag in (_ATOM_UTF8, _ATOM) else ">B")
    return _atom(reader.take(length).decode("utf-8" if tag in (_ATOM_UTF8, _SMALL_ATOM_UTF8) else "latin-1"))


def _tuple(tag, reader):
    (arity,) = reader.unpack(">B" if tag == _SMALL_TUPLE else ">I")
    return tuple(_decode(reader) for dummy in range(arity))


def _list(tag, reader):
    if tag == _NIL:
        return []
    if tag == _STRING:
        # A list of small integers sent compactly: still a list, not a text.
        (length,) = reader.unpack(">H")
        return list(bytearray(reader.take(length)))
    (length,) = reader.unpack(">I")
    items = [_decode(reader) for dummy in range(length)]
    tail = _decode(reader)
    if not (isinstance(tail, list) and tail == []):
        raise EtfError("improper lists are not supported")
    return items


def _binary(tag, reader):
    if tag == _BIT_BINARY:
        raise EtfError("bitstrings that are not binaries are not supported")
    (length,) = reader.unpack(">I")
    return reader.take(length)


def _map(tag, reader):
    (arity,) = reader.unpack(">I")
    result = {}
    for dummy in range(arity):
        key = _decode(reader)
        value = _decode(reader)
        try:
            result[key] = value
        except TypeError:
            raise EtfError("map key of an unhashable type (%s)" % type(key).__name__)
    return result


def _pid_or_port(tag, reader):
    node = _decode_atom_only(reader)
    if tag in (_PID, _NEW_PID):
        ident, serial = reader.unpack(">II")
        reader.take(1 if tag == _PID else 4)
        return Opaque("<%s.%d.%d>" % (node, ident, serial))
    (ident,) = reader.unpack(">Q" if tag == _V4_PORT else ">I")
    reader.take(1 if tag == _PORT else 4)
    return Opaque("#Port<%s.%d>" % (node, ident))


def _reference(tag, reader):
    if tag == _REF:
        node = _decode_atom_only(reader)
        (ident,) = reader.unpack(">I")
        reader.take(1)
        return Opaque("#Ref<%s.%d>" % (node, ident))
    (count,) = reader.unpack(">H")
    node = _decode_atom_only(reader)
    reader.take(1 if tag == _NEW_REF else 4)
    ids = reader.unpack(">%dI" % count)
    return Opaque("#Ref<%s.%s>" % (node, ".".join(str(i) for i in ids)))


def _fun(tag, reader):
    if tag == _EXPORT:
        module, function, arity = _decode(reader), _decode(reader), _decode(reader)
        return Opaque("fun %s:%s/%s" % (module, function, arity))
    (size,) = reader.unpack(">I")
    reader.take(size - 4)
    return Opaque("#Fun<>")


# Tag -> reader of the rest of the term.
_DECODERS = dict((tag, function) for tags, function in (
    ((_SMALL_INT, _INT, _NEW_FLOAT, _FLOAT, _SMALL_BIG, _LARGE_BIG), _number),
    ((_ATOM, _SMALL_ATOM, _ATOM_UTF8, _SMALL_ATOM_UTF8), _atom_term),
    ((_SMALL_TUPLE, _LARGE_TUPLE), _tuple),
    ((_NIL, _STRING, _LIST), _list),
    ((_BINARY, _BIT_BINARY), _binary),
    ((_MAP,), _map),
    ((_PID, _NEW_PID, _PORT, _NEW_PORT, _V4_PORT), _pid_or_port),
    ((_NEW_REF, _NEWER_REF, _REF), _reference),
    ((_EXPORT, _NEW_FUN), _fun),
) for tag in tags)


def _decode(reader):
    (tag,) = reader.unpack(">B")
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise EtfError("unsupported external term tag %d at byte %d" % (tag, reader.pos - 1))
    return decoder(tag, reader)


def to_text(term):
    """Binaries -> str (UTF-8), Atom -> str, tuples -> lists, recursively: JSON-friendly facts."""
    if isinstance(term, bytes):
        return term.decode("utf-8", "replace")
    if isinstance(term, (list, tuple)):
        return [to_text(item) for item in term]
    if isinstance(term, dict):
        return dict((str(to_text(key)), to_text(value)) for key, value in term.items())
    if isinstance(term, (Atom, Opaque)):
        return str(term)
    return term
