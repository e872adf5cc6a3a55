"""Framing and plain-data encoding shared by the harness (trusted) and the sandbox side (untrusted).

Why this module exists: verdicts are decided by a harness process that the candidate program cannot
reach, so the *only* thing that crosses from the candidate to the harness is bytes on a pipe. This
module fixes what those bytes can mean:

* a frame is ``4-byte big-endian length | 1-byte kind | body``, with a hard size cap, so a program
  that floods its channel cannot make the reader allocate without bound;
* a value is JSON with tagged containers (tuple, dict, set, bytes, complex), encoded only from objects
  whose *exact* type is a builtin plain type (``type(v) is int``, never ``isinstance``), and decoded
  into fresh builtin objects. An ``int`` subclass whose ``__eq__`` always returns True therefore never
  crosses as an ``int``: the encoder refuses it, and even a forged byte stream decodes to plain data.

The sandbox side executes this file's source verbatim (it is prepended to the zygote's source), so it
must stay standard-library only and must not import anything from k2rl.
"""

import base64
import json
import struct

MAX_FRAME = 32 << 20  # bytes; a larger frame is a protocol violation, not a value
# Bytes asked of each read: below glibc's mmap threshold (128 KiB), so a read buffer comes from the
# heap instead of costing an mmap, a page fault and an munmap; larger frames just take more reads.
READ_SIZE = 1 << 16
_HEADER = struct.Struct(">IB")


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame (oversized, truncated)."""


class NotPlain(TypeError):
    """A value that is not plain data (a custom object, a subclass of a builtin, a function...)."""


def pack_frame(kind: bytes, body: bytes) -> bytes:
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte cap")
    return _HEADER.pack(len(body), kind[0]) + body


class FrameReader:
    """Incremental frame parser: feed bytes, take complete ``(kind, body)`` frames."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list:
        self._buf += data
        frames = []
        while len(self._buf) >= _HEADER.size:
            size, kind = _HEADER.unpack_from(self._buf)
            if size > self._max:
                raise FrameError(f"peer announced a {size}-byte frame (cap {self._max})")
            end = _HEADER.size + size
            if len(self._buf) < end:
                break
            frames.append((bytes([kind]), bytes(self._buf[_HEADER.size:end])))
            del self._buf[:end]
        return frames


def dump_value(value):
    """The JSON-ready tree for a plain value; raises :class:`NotPlain` for anything else."""
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is int or kind is float:
        return value
    if kind is list:
        return [dump_value(item) for item in value]
    if kind is tuple:
        return {"t": [dump_value(item) for item in value]}
    if kind is dict:
        return {"d": [[dump_value(k), dump_value(v)] for k, v in value.items()]}
    if kind is set or kind is frozenset:
        return {"s" if kind is set else "f": [dump_value(item) for item in value]}
    if kind is bytes:
        return {"b": base64.b64encode(value).decode("ascii")}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    raise NotPlain(f"{kind.__module__}.{kind.__qualname__} is not plain data")


def encode_plain(value) -> bytes:
    """JSON bytes for ``value``; raises :class:`NotPlain` for anything but exact builtin plain types."""
    try:
        return json.dumps(dump_value(value), separators=(",", ":")).encode()
    except RecursionError:
        raise NotPlain("value is nested too deeply (or contains itself)") from None
    except ValueError as exc:  # e.g. an int with more digits than int_max_str_digits
        raise NotPlain(str(exc)) from None


def load_value(node):
    """Fresh builtin objects from a :func:`dump_value` tree; raises ``ValueError`` on anything else."""
    kind = type(node)
    if node is None or kind is bool or kind is str or kind is int or kind is float:
        return node
    if kind is list:
        return [load_value(item) for item in node]
    if kind is not dict or len(node) != 1:
        raise ValueError("malformed plain value")
    (tag, body), = node.items()
    if tag == "b" and type(body) is str:
        return base64.b64decode(body.encode("ascii"), validate=True)
    if type(body) is not list:
        raise ValueError("malformed plain value")
    if tag == "t":
        return tuple(load_value(item) for item in body)
    if tag == "d":
        out = {}
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("malformed dict entry")
            out[load_value(pair[0])] = load_value(pair[1])  # unhashable key -> TypeError
        return out
    if tag == "s":
        return {load_value(item) for item in body}
    if tag == "f":
        return frozenset(load_value(item) for item in body)
    if tag == "c" and len(body) == 2 and all(type(x) in (int, float) for x in body):
        return complex(body[0], body[1])
    raise ValueError(f"unknown plain-value tag {tag!r}")


def decode_plain(data: bytes):
    """Builtin plain objects from :func:`encode_plain` bytes; raises ``ValueError`` on anything else."""
    try:
        return load_value(json.loads(data))
    except (RecursionError, TypeError, UnicodeDecodeError, base64.binascii.Error) as exc:
        raise ValueError(f"malformed plain value: {type(exc).__name__}") from None
