"""How the remote backend picks a server: spread, per-endpoint concurrency limit, cool-down, avoidance."""

from __future__ import annotations

import time

import pytest

from k2rl.errors import K2RLError
from k2rl.sandboxes.endpoints import EndpointPool


def test_spread_and_per_endpoint_limit():
    pool = EndpointPool(["127.0.0.1:1", "http://127.0.0.1:2"], per_endpoint=2)
    taken = [pool.acquire(set(), time.monotonic() + 1).name for _ in range(4)]
    assert sorted(taken) == ["http://127.0.0.1:1"] * 2 + ["http://127.0.0.1:2"] * 2
    assert taken[:2] != [taken[0]] * 2  # alternates while loads are equal
    assert pool.acquire(set(), time.monotonic()) is None  # every endpoint is full: wait, then give up


def test_a_failed_endpoint_cools_down_and_is_avoided():
    pool = EndpointPool(["127.0.0.1:1", "127.0.0.1:2"], per_endpoint=4)
    first = pool.acquire(set(), time.monotonic() + 1)
    pool.release(first, ok=False)
    others = {pool.acquire(set(), time.monotonic() + 1).name for _ in range(2)}
    assert others == {"http://127.0.0.1:2"}  # the failed one is skipped while cooling down
    assert pool.acquire({"http://127.0.0.1:2"}, time.monotonic() + 1).name == "http://127.0.0.1:2"  # nothing else will do
    pool.acquire(set(), time.monotonic() + 1)  # now the healthy one is full
    assert pool.acquire(set(), time.monotonic() + 5) is first  # so the caller waits out the pause


def test_bad_endpoints_are_k2rl_errors():
    with pytest.raises(K2RLError, match="distinct"):
        EndpointPool(["127.0.0.1:1", "http://127.0.0.1:1"], per_endpoint=1)
    with pytest.raises(K2RLError, match="bad port"):
        EndpointPool(["127.0.0.1:notaport"], per_endpoint=1)
