"""The plain-data boundary: only exact builtin types cross, and decoding never yields anything else."""

from __future__ import annotations

import json
import math

import pytest

from k2rl.sandboxes.wire import FrameError, FrameReader, NotPlain, decode_plain, encode_plain, pack_frame

PLAIN = [None, True, 0, -(2 ** 100), 1.5, -0.0, "é\x00", b"\x00\xff", 1 + 2j, [1, [2]], (1, (2,)),
         {"a": 1, 2: (3,), (4, 5): None}, {1, 2}, frozenset({3}), [], (), {}]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_round_trip_keeps_value_and_exact_type(value):
    back = decode_plain(encode_plain(value))
    assert back == value and type(back) is type(value)


def test_nan_and_infinity_survive():
    back = decode_plain(encode_plain([math.nan, math.inf]))
    assert math.isnan(back[0]) and back[1] == math.inf


class SneakyInt(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


class SneakyStr(str):
    pass


class SneakyList(list):
    pass


@pytest.mark.parametrize("value", [SneakyInt(1), SneakyStr("x"), SneakyList(), [SneakyInt(1)], {"k": SneakyStr()},
                                   {SneakyInt(1): 1}, object(), len, (x for x in ()), type, Ellipsis],
                         ids=lambda v: type(v).__name__)
def test_non_plain_values_are_refused(value):
    with pytest.raises(NotPlain):
        encode_plain(value)


def test_self_reference_is_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(NotPlain):
        encode_plain(loop)


@pytest.mark.parametrize("raw", [b'{"x": 1}', b'{"t": 1}', b'{"t": [], "d": []}', b'{"d": [[1]]}', b'{"d": [[[1], 2]]}',
                                 b'{"b": "***"}', b'{"c": ["1", 2]}', b"[" * 100000, b"\xff"])
def test_forged_bytes_never_decode_to_objects(raw):
    with pytest.raises(ValueError):
        decode_plain(raw)


def test_decoded_values_are_builtin_only():
    forged = json.dumps({"d": [[{"t": [1]}, {"s": [{"f": ["a"]}]}]]}).encode()
    value = decode_plain(forged)
    stack = [value]
    while stack:
        item = stack.pop()
        assert type(item) in (dict, tuple, set, frozenset, list, str, int)
        if type(item) is dict:
            stack += list(item.keys()) + list(item.values())
        elif type(item) in (tuple, set, frozenset, list):
            stack += list(item)


def test_frames_reassemble_and_cap_size():
    reader = FrameReader(max_frame=16)
    data = pack_frame(b"C", b"hello") + pack_frame(b"Z", b"")
    frames = []
    for i in range(len(data)):
        frames += reader.feed(data[i:i + 1])
    assert frames == [(b"C", b"hello"), (b"Z", b"")]
    with pytest.raises(FrameError):
        FrameReader(max_frame=16).feed(pack_frame(b"C", b"x" * 17))


def test_sandboxes_do_not_import_torch_or_transformers():
    import subprocess
    import sys

    code = ("import sys, k2rl.sandboxes, k2rl.sandboxes.pool, k2rl.sandboxes.harness, k2rl.sandboxes.docker_backend, "
            "k2rl.sandboxes.cli\nprint(sorted({'torch', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
