"""The many-row statements' array parameters in PostgreSQL's binary format, written here.

The many-row statements (the ping writer's ``_QUICK_SQL``, ``unnest_insert``'s) take a
column's values as one ``%b::T[]`` array. psycopg dumps a list generically: it looks over
the elements for their type, then dumps and frames them one at a time, and the ping
writer's statement has 14 arrays a batch, most of what the writer spends on parameters.
Here a 1-D array of an element type known from the statement's cast is packed at once
(one ``struct`` call for numbers without NULLs), and psycopg passes the bytes on as they
are: they are of a ``bytes`` subclass per array type whose dumper, registered on the
store's connections (``register``), returns them with the array type's oid.

What is encoded here ends as psycopg's dumping would: the same values stored, or the same
error before anything is stored. A NUL in a string becomes U+FFFD, as ``without_nul``
makes it for the other statements (PostgreSQL's text cannot hold one; psycopg's binary
dumping left it for the server to refuse, failing the batch); a lone surrogate raises
UnicodeEncodeError, as psycopg's encoding did; a number out of the column's range raises
the server's error, NumericValueOutOfRange, here before sending. A float8 array may mix
ints and floats (psycopg refused such a list). A list with any other element (a bool, a
float for an integer column, bytes for text) is left to psycopg, as before, its NULs
replaced.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap, Dumper

_NONE = type(None)
_NULL = b"\xff\xff\xff\xff"  # an element's length: -1
_head = struct.Struct("!iiIii").pack  # ndim, has NULLs, element oid; length, lower bound
_empty = struct.Struct("!iiI").pack  # an empty array has no dimension
_len = struct.Struct("!i").pack
# Most strings are short: a length looked up costs a fifth of one packed.
_short_len = [_len(n) for n in range(1024)].__getitem__
# An ASCII string's UTF-8 is its characters, one byte each, as in latin-1: an array of
# them is encoded in one call, its lengths written as latin-1 characters between them.
_char_len = [_len(n).decode("latin-1") for n in range(1024)].__getitem__


class Float8Array(bytes):
    """A float8[] (``encode``)."""

    __slots__ = ()


class Int8Array(bytes):
    """A bigint[] (``encode``)."""

    __slots__ = ()


class Int4Array(bytes):
    """An integer[] (``encode``)."""

    __slots__ = ()


class TextArray(bytes):
    """A text[] (``encode``)."""

    __slots__ = ()


class _Encoded(Dumper):
    format = pq.Format.BINARY

    def dump(self, obj: bytes) -> Buffer:
        return obj


class _Float8ArrayDumper(_Encoded):
    oid = 1022


class _Int8ArrayDumper(_Encoded):
    oid = 1016


class _Int4ArrayDumper(_Encoded):
    oid = 1007


class _TextArrayDumper(_Encoded):
    oid = 1009


def register(adapters: AdaptersMap) -> None:
    """Have a connection (its ``adapters``) send the encoded arrays as they are."""
    adapters.register_dumper(Float8Array, _Float8ArrayDumper)
    adapters.register_dumper(Int8Array, _Int8ArrayDumper)
    adapters.register_dumper(Int4Array, _Int4ArrayDumper)
    adapters.register_dumper(TextArray, _TextArrayDumper)


_packers: dict[tuple[str, int], Callable[..., bytes]] = {}


def _packer(pair: str, n: int) -> Callable[..., bytes]:
    """``struct`` packing the header and ``n`` (length, value) pairs of format ``pair``."""
    pack = _packers.get((pair, n))
    if pack is None:
        if len(_packers) >= 512:  # batch sizes vary: stay bounded
            _packers.clear()
        pack = _packers[pair, n] = struct.Struct(f"!iiIii{pair * n}").pack
    return pack


def _numbers(
    oid: int, code: str, allowed: frozenset[type], error: str
) -> Callable[[list[Any]], bytes | None]:
    """The encoder of an array of numbers: ``code``, ``struct``'s format of one; the
    elements' types it takes (None included); the server's message for one out of range."""
    size = struct.calcsize(f"!{code}")
    pair = f"i{code}"
    one = struct.Struct(f"!{pair}").pack
    empty = _empty(0, 0, oid)

    def encode(values: list[Any]) -> bytes | None:
        n = len(values)
        if not n:
            return empty
        types = set(map(type, values))
        if not types <= allowed:
            return None
        try:
            if _NONE not in types:
                pairs = [size] * (2 * n)
                pairs[1::2] = values
                return _packer(pair, n)(1, 0, oid, n, 1, *pairs)
            if len(types) == 1:
                return _head(1, 1, oid, n, 1) + _NULL * n
            parts = [_head(1, 1, oid, n, 1)]
            parts += [_NULL if v is None else one(size, v) for v in values]
            return b"".join(parts)
        except (struct.error, OverflowError):  # the types are right: a value out of range
            raise pg_errors.NumericValueOutOfRange(error) from None

    return encode


_float8 = _numbers(
    701, "d", frozenset((float, int, _NONE)), "value out of range for type double precision"
)
_int8 = _numbers(20, "q", frozenset((int, _NONE)), "bigint out of range")
_int4 = _numbers(23, "i", frozenset((int, _NONE)), "integer out of range")


def _text(values: list[Any]) -> bytes | None:
    n = len(values)
    if not n:
        return _empty(0, 0, 25)
    try:
        joined = "".join(values)
    except TypeError:  # a NULL, or not a string
        return _text_nulls(values)
    if "\x00" in joined:
        values = [v.replace("\x00", "\ufffd") for v in values]
    elif joined.isascii():
        parts = [""] * (2 * n)
        try:
            parts[0::2] = map(_char_len, map(len, values))
        except IndexError:  # a long string: encoded one at a time below
            pass
        else:
            parts[1::2] = values
            return _head(1, 0, 25, n, 1) + "".join(parts).encode("latin-1")
    data = list(map(str.encode, values))
    out: list[bytes] = [b""] * (2 * n + 1)
    out[0] = _head(1, 0, 25, n, 1)
    try:
        out[1::2] = map(_short_len, map(len, data))
    except IndexError:
        out[1::2] = map(_len, map(len, data))
    out[2::2] = data
    return b"".join(out)


def _text_nulls(values: list[Any]) -> bytes | None:
    types = set(map(type, values))
    n = len(values)
    if types == {_NONE}:
        return _head(1, 1, 25, n, 1) + _NULL * n
    if types != {str, _NONE}:
        return None
    parts = [_head(1, 1, 25, n, 1)]
    for v in values:
        if v is None:
            parts.append(_NULL)
        else:
            b = v.replace("\x00", "\ufffd").encode()
            parts.append(_len(len(b)))
            parts.append(b)
    return b"".join(parts)


# The casts the statements write (``%b::T[]``): the encoder and the type of what it makes.
_ENCODERS: dict[str, tuple[Callable[[list[Any]], bytes | None], type[bytes]]] = {
    "float8": (_float8, Float8Array),
    "bigint": (_int8, Int8Array),
    "int8": (_int8, Int8Array),
    "integer": (_int4, Int4Array),
    "int4": (_int4, Int4Array),
    "text": (_text, TextArray),
}


def encode(cast: str, values: list[Any]) -> bytes | None:
    """``values`` as a 1-D array of the type ``cast[]`` (float8, bigint, integer, text), of
    the class its connection sends as it is; None if an element is of a type this does not
    write (psycopg's dumping then decides)."""
    encoder, cls = _ENCODERS[cast]
    data = encoder(values)
    return None if data is None else cls(data)


_TOKENS = re.compile(r"'[^']*'|%%|%\(|%[bst](?:::(\w+)\[\])?")
_casts: dict[str, tuple[str | None, ...] | None] = {}


def _placeholders(sql: str) -> tuple[str | None, ...] | None:
    """Each positional placeholder's array cast (one this module writes), or None; None
    for a statement with named placeholders."""
    if sql in _casts:
        return _casts[sql]
    casts: list[str | None] = []
    for m in _TOKENS.finditer(sql):
        token = m.group(0)
        if token == "%(":
            casts = []
            break
        if token[0] == "%" and token != "%%":
            cast = m.group(1)
            casts.append(cast if cast in _ENCODERS else None)
    found = tuple(casts) if casts else None
    _casts[sql] = found
    return found


def params(sql: str, values: list[Any], *, utf8: bool = True) -> list[Any]:
    """``values``, the parameters of ``sql``, with each list for a ``%b::T[]`` placeholder
    that ``encode`` writes encoded. ``utf8``: the connection's client encoding is UTF-8
    (what is encoded here); with another, psycopg encodes text arrays."""
    casts = _placeholders(sql)
    if casts is None or len(casts) != len(values):
        return values
    out = list(values)
    for i, cast in enumerate(casts):
        v = out[i]
        if cast is None or type(v) is not list:
            continue
        data = encode(cast, v) if utf8 or cast != "text" else None
        if data is not None:
            out[i] = data
        elif cast == "text":
            out[i] = [s.replace("\x00", "\ufffd") if type(s) is str else s for s in v]
    return out
