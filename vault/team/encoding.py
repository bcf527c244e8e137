"""The canonical encoding of every signed or hashed team structure (docs/spec.md "Canonical encoding").

A message is ``frame(domain, *fields)``: the domain string, then each field tagged with its type
and, for bytes and text, its length. The encoding is injective (no two field lists give the same
bytes), so a signature over it cannot be re-read as a signature over other fields, and each domain
string names exactly one kind of message, so a signature of one kind is never valid as another.
"""

from __future__ import annotations

import struct

from ..errors import IntegrityError

Field = bytes | str | int | bool | None

# One byte per field type, so that b"1", "1" and 1 encode differently.
_NONE, _BYTES, _TEXT, _INT, _FALSE, _TRUE = b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"
_U32 = struct.Struct(">I")  # lengths: no field comes near 4 GiB
_I64 = struct.Struct(">q")  # integers: sequence numbers and key versions
MAX_FIELD = 1 << 24  # 16 MiB: far above any detail blob, and a bound for what decode accepts


def frame(domain: bytes, *fields: Field) -> bytes:
    """``u32 len(domain) || domain`` then, per field, a tag byte and its body (see the spec)."""
    out = [_U32.pack(len(domain)), domain]
    append = out.append
    for f in fields:
        # bool before int: bool is an int subclass, and True must not encode as 1.
        if f is None:
            append(_NONE)
        elif f is True:
            append(_TRUE)
        elif f is False:
            append(_FALSE)
        elif isinstance(f, bytes):
            append(_BYTES + _U32.pack(len(f)))
            append(f)
        elif isinstance(f, str):
            b = f.encode("utf-8")
            append(_TEXT + _U32.pack(len(b)))
            append(b)
        elif isinstance(f, int):
            append(_INT + _I64.pack(f))
        else:
            raise TypeError(f"cannot encode a {type(f).__name__}")
    return b"".join(out)


def unframe(domain: bytes, data: bytes) -> tuple[Field, ...]:
    """The fields of ``frame(domain, ...)``. Raises IntegrityError for any other bytes."""
    try:
        return _unframe(domain, data)
    except (struct.error, UnicodeDecodeError, IndexError):
        raise IntegrityError("a team message is malformed") from None


def _unframe(domain: bytes, data: bytes) -> tuple[Field, ...]:
    (n,) = _U32.unpack_from(data, 0)
    if data[4 : 4 + n] != domain or n != len(domain):
        raise IntegrityError("a team message has the wrong domain")
    pos = 4 + n
    fields: list[Field] = []
    while pos < len(data):
        tag, pos = data[pos : pos + 1], pos + 1
        if tag == _NONE:
            fields.append(None)
        elif tag in (_TRUE, _FALSE):
            fields.append(tag == _TRUE)
        elif tag == _INT:
            fields.append(_I64.unpack_from(data, pos)[0])
            pos += 8
        elif tag in (_BYTES, _TEXT):
            (size,) = _U32.unpack_from(data, pos)
            if size > MAX_FIELD or pos + 4 + size > len(data):
                raise IntegrityError("a team message is truncated")
            body, pos = data[pos + 4 : pos + 4 + size], pos + 4 + size
            fields.append(body if tag == _BYTES else body.decode("utf-8"))
        else:
            raise IntegrityError("a team message has an unknown field type")
    return tuple(fields)
