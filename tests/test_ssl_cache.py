"""The shared session cache's zone (``ssl_session_cache shared:``), on its own: sessions
in, out, expired, removed, overwritten by the ring; the ticket keys it keeps; and the
zone shared by forked processes, as the workers share it."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from mailfront.server.ssl_cache import MAX_SESSION, Zone

SIZE = 65536


def test_store_fetch_expire_remove() -> None:
    z = Zone("unit", SIZE)
    assert z.store(b"id-1", b"der-1", expire=100.0)
    assert z.fetch(b"id-1", now=50.0) == b"der-1"
    assert z.fetch(b"id-2", now=50.0) is None
    # a new session under the same id replaces the old one
    assert z.store(b"id-1", b"der-1b", expire=100.0)
    assert z.fetch(b"id-1", now=50.0) == b"der-1b"
    z.remove(b"id-1")
    assert z.fetch(b"id-1", now=50.0) is None
    # expired: dropped when asked for
    assert z.store(b"id-3", b"der-3", expire=10.0)
    assert z.fetch(b"id-3", now=10.0) is None
    assert z.fetch(b"id-3", now=5.0) is None  # gone, not only hidden
    # nginx caches no session over 4096 bytes, and ids are at most 32 bytes
    assert not z.store(b"big", b"x" * (MAX_SESSION + 1), expire=100.0)
    assert not z.store(b"x" * 33, b"der", expire=100.0)
    assert not z.store(b"", b"der", expire=100.0)


def test_the_ring_drops_the_oldest() -> None:
    z = Zone("ring", SIZE)
    der = bytes(range(256)) * 4  # 1 KiB sessions: about 60 fit
    for i in range(200):
        assert z.store(b"id-%d" % i, der + b"%d" % i, expire=1e12)
    assert z.fetch(b"id-199", now=0.0) == der + b"199"
    assert z.fetch(b"id-0", now=0.0) is None  # overwritten long ago
    found = [i for i in range(200) if z.fetch(b"id-%d" % i, now=0.0) is not None]
    assert found and found == list(range(found[0], 200))  # the newest, in a row


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["store", "fetch", "remove"]),
            st.integers(0, 40),
            st.integers(0, 3000),
        ),
        max_size=300,
    )
)
def test_never_a_wrong_session(ops: list[tuple[str, int, int]]) -> None:
    """Whatever is overwritten or evicted, a lookup gives the session last stored
    under that id, or nothing; the last stored one is always found."""
    z = Zone("model", 32768)
    try:
        check_model(z, ops)
    finally:
        z.close()


def check_model(z: Zone, ops: list[tuple[str, int, int]]) -> None:
    model: dict[bytes, bytes] = {}
    last: bytes | None = None
    for n, (op, key, size) in enumerate(ops):
        sid = b"session-%d" % key
        if op == "store":
            der = (b"%08d" % n) * (size // 8 + 1)  # every stored session differs
            der = der[:MAX_SESSION]
            assert z.store(sid, der, expire=1e12)
            model[sid] = der
            last = sid
        elif op == "remove":
            z.remove(sid)
            model.pop(sid, None)
            if last == sid:
                last = None
        got = z.fetch(sid, now=0.0)
        assert got is None or got == model.get(sid)
        if last is not None:
            assert z.fetch(last, now=0.0) == model[last]


def test_ticket_keys_rotate_and_stay_while_their_tickets_live() -> None:
    z = Zone("keys", SIZE)
    assert z.ticket_keys(10.0, now=0.0, seal=False) == []  # none before the first ticket
    (k1,) = z.ticket_keys(10.0, now=100.0, seal=True)
    assert len(k1) == 80
    assert z.ticket_keys(10.0, now=105.0, seal=False) == [k1]
    assert z.ticket_keys(10.0, now=105.0, seal=True) == [k1]  # sealing pushes k1 to 115
    k2, old = z.ticket_keys(10.0, now=111.0, seal=True)  # k1 is 11 s old: a new key seals
    assert k2 != k1 and old == k1
    assert z.ticket_keys(10.0, now=116.0, seal=False) == [k2]  # k1's tickets are all gone
    # a server with a longer timeout sharing the zone keeps its tickets alive
    (k3,) = z.ticket_keys(1000.0, now=200.0, seal=True)[:1]
    k4 = z.ticket_keys(10.0, now=300.0, seal=True)[0]
    assert k4 != k3 and k3 in z.ticket_keys(10.0, now=1100.0, seal=False)
    assert k3 not in z.ticket_keys(10.0, now=1201.0, seal=False)


def test_forked_processes_share_the_zone() -> None:
    """What one worker (a forked child) stores, the master and the other workers read."""
    z = Zone("fork", SIZE)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 0 if z.store(b"from-child", b"its session", expire=1e12) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert z.fetch(b"from-child", now=0.0) == b"its session"
