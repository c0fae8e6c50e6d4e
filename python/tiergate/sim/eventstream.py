"""AWS event-stream binary framing (``application/vnd.amazon.eventstream``).

One message::

    prelude   total length (u32 BE) | headers length (u32 BE) | prelude CRC32 (u32 BE)
    headers   name length (u8) | name | value type (u8, 7 = string) | value length (u16 BE) | value
    payload   bytes
    trailer   CRC32 of everything before it (u32 BE)

Only string-valued headers are written, which is all Bedrock and SageMaker send.
:func:`decode` exists for the tests and for debugging; clients use botocore's decoder.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["decode", "encode", "event", "exception"]

_STRING = 7


def _crc(data: bytes, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


def encode(headers: dict[str, str], payload: bytes) -> bytes:
    """One framed message with the given string headers and payload."""
    hbytes = bytearray()
    for name, value in headers.items():
        n = name.encode()
        v = value.encode()
        hbytes += struct.pack(">B", len(n)) + n + struct.pack(">BH", _STRING, len(v)) + v
    total = 12 + len(hbytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hbytes))
    prelude += struct.pack(">I", _crc(prelude))
    body = prelude + bytes(hbytes) + payload
    return body + struct.pack(">I", _crc(body))


def event(event_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """An ``event`` message (``:message-type`` = event)."""
    return encode(
        {":event-type": event_type, ":content-type": content_type, ":message-type": "event"},
        payload,
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    """A modelled exception mid-stream (``:message-type`` = exception)."""
    return encode(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        payload,
    )


def decode(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a buffer of whole messages into (headers, payload), checking both CRCs."""
    out: list[tuple[dict[str, str], bytes]] = []
    pos = 0
    while pos < len(data):
        total, hlen, pcrc = struct.unpack_from(">III", data, pos)
        if _crc(data[pos : pos + 8]) != pcrc:
            raise ValueError("prelude CRC mismatch")
        msg = data[pos : pos + total]
        (mcrc,) = struct.unpack_from(">I", msg, total - 4)
        if _crc(msg[: total - 4]) != mcrc:
            raise ValueError("message CRC mismatch")
        headers: dict[str, str] = {}
        h = 12
        while h < 12 + hlen:
            nlen = msg[h]
            name = msg[h + 1 : h + 1 + nlen].decode()
            h += 1 + nlen
            vtype, vlen = struct.unpack_from(">BH", msg, h)
            if vtype != _STRING:
                raise ValueError(f"unsupported header type {vtype}")
            headers[name] = msg[h + 3 : h + 3 + vlen].decode()
            h += 3 + vlen
        out.append((headers, msg[12 + hlen : total - 4]))
        pos += total
    return out
