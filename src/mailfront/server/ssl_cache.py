"""``ssl_session_cache shared:NAME:SIZE``: TLS sessions in memory shared by the workers.

nginx keeps the sessions of a shared cache in a slab zone with an rbtree and an
expiry queue (``ngx_ssl_new_session``, ``ngx_ssl_get_cached_session``,
``ngx_ssl_remove_session``).  Here a zone is SIZE bytes of shared anonymous
memory (``MAP_SHARED|MAP_ANONYMOUS``, as nginx's zones), mapped by the master
before it forks, so every worker has it, and kept across reloads while a
server names it with the same size:

* a header: the write position, the sequence number of the last entry, and the
  session ticket keys nginx keeps in a shared zone when no
  ``ssl_session_ticket_key`` is given (the sealing key and up to three older
  ones, each with the time until which a ticket it sealed may come back);
* an index of ``SIZE // 256`` slots (nginx's "about 4000 sessions per
  megabyte"), four to a bucket, each the hash of a session id, the entry's
  offset and sequence number;
* a ring of entries (the session id, its expiry time, the session's DER), each
  written after the last, so the oldest is overwritten first, as nginx drops
  the oldest session when its zone is full.

An index slot is only believed when the entry at its offset carries the same
sequence number and session id, so an entry overwritten by the ring is a miss,
never a wrong session.  The processes take turns with a POSIX record lock on
a file of the zone's (empty, unlinked at once), which the kernel lets go if a
worker dies holding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Iterator

ENTRY_ALIGN = 16
MAX_SESSION = 4096  # NGX_SSL_MAX_SESSION_SIZE: bigger sessions are not cached
SLOT_BYTES = 256  # one index slot per 256 bytes of zone
WAYS = 4

_HEADER = struct.Struct("<8sQQ")  # magic, write position, last sequence
# created, usable until (a ticket it sealed may come back till then), 80 bytes:
# name, HMAC key, AES key (nginx's layout of an 80-byte key)
_KEY = struct.Struct("<dd80s")
KEYS = 4  # the sealing key, then older ones that still open tickets
_SLOT = struct.Struct("<QQI")  # id hash, offset + 1 (0: empty), sequence (low 32 bits)
_ENTRY = struct.Struct("<QdHH")  # sequence, expire time, id length, DER length
MAGIC = b"mfscache"
KEYS_AT = _HEADER.size
INDEX_AT = 512  # the header and the ticket keys fit below


class Zone:
    """One shared zone; see the module's docstring."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        fd, path = tempfile.mkstemp(prefix=f"mailfront-ssl-{name}-")
        os.unlink(path)
        self.fd = fd  # only for the lock
        self.buckets = max(1, (size // SLOT_BYTES) // WAYS)
        self.ring_at = INDEX_AT + self.buckets * WAYS * _SLOT.size
        self.ring_size = size - self.ring_at
        assert self.ring_size >= 2 * (MAX_SESSION + 64), size  # the parser wants 8 pages
        _HEADER.pack_into(self.map, 0, MAGIC, 0, 0)

    def close(self) -> None:
        """Unmap the zone (the workers forked with it keep their mapping)."""
        self.map.close()
        os.close(self.fd)

    # -- locking ---------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[mmap.mmap]:
        """The zone's memory, this process's alone for the ``with`` block."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            yield self.map
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    # -- sessions --------------------------------------------------------------

    @staticmethod
    def _hash(session_id: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(session_id, digest_size=8).digest(), "little")

    def _bucket(self, h: int) -> int:
        return INDEX_AT + (h % self.buckets) * WAYS * _SLOT.size

    def store(self, session_id: bytes, der: bytes, expire: float) -> bool:
        """``ngx_ssl_new_session``: keep a session under its id until ``expire``."""
        if len(der) > MAX_SESSION or not session_id or len(session_id) > 32:
            return False
        size = _ENTRY.size + len(session_id) + len(der)
        size += -size % ENTRY_ALIGN
        h = self._hash(session_id)
        with self.locked() as m:
            _, pos, seq = _HEADER.unpack_from(m, 0)
            if pos + size > self.ring_size:
                pos = 0
            seq += 1
            at = self.ring_at + pos
            _ENTRY.pack_into(m, at, seq, expire, len(session_id), len(der))
            body = at + _ENTRY.size
            m[body : body + len(session_id)] = session_id
            m[body + len(session_id) : body + len(session_id) + len(der)] = der
            _HEADER.pack_into(m, 0, MAGIC, pos + size, seq)
            # the slot of this id, else an empty one, else the oldest of the bucket
            bucket = self._bucket(h)
            victim, oldest = bucket, None
            for way in range(WAYS):
                slot = bucket + way * _SLOT.size
                sh, off, sseq = _SLOT.unpack_from(m, slot)
                if off == 0 or sh == h:
                    victim = slot
                    break
                age = (seq - sseq) & 0xFFFFFFFF
                if oldest is None or age > oldest:
                    victim, oldest = slot, age
            _SLOT.pack_into(m, victim, h, pos + 1, seq & 0xFFFFFFFF)
        return True

    def _find(self, session_id: bytes, h: int) -> tuple[int, int] | None:
        """(slot, entry offset) of a live entry with this id (under the lock)."""
        m = self.map
        bucket = self._bucket(h)
        for way in range(WAYS):
            slot = bucket + way * _SLOT.size
            sh, off, sseq = _SLOT.unpack_from(m, slot)
            if off == 0 or sh != h:
                continue
            at = self.ring_at + off - 1
            if at + _ENTRY.size > self.size:
                continue
            seq, _expire, id_len, der_len = _ENTRY.unpack_from(m, at)
            body = at + _ENTRY.size
            if (
                seq & 0xFFFFFFFF == sseq
                and id_len == len(session_id)
                and body + id_len + der_len <= self.size
                and m[body : body + id_len] == session_id
            ):
                return slot, at
        return None

    def fetch(self, session_id: bytes, now: float) -> bytes | None:
        """``ngx_ssl_get_cached_session``: the DER of a live session, or None (an
        expired one is dropped)."""
        h = self._hash(session_id)
        with self.locked() as m:
            found = self._find(session_id, h)
            if found is None:
                return None
            slot, at = found
            _, expire, id_len, der_len = _ENTRY.unpack_from(m, at)
            if expire <= now:
                _SLOT.pack_into(m, slot, 0, 0, 0)
                return None
            body = at + _ENTRY.size + id_len
            return bytes(m[body : body + der_len])

    def remove(self, session_id: bytes) -> None:
        """``ngx_ssl_remove_session``."""
        h = self._hash(session_id)
        with self.locked() as m:
            found = self._find(session_id, h)
            if found is not None:
                _SLOT.pack_into(m, found[0], 0, 0, 0)

    # -- ticket keys (nginx's automatic keys of a shared zone) --------------------

    def ticket_keys(self, lifetime: float, now: float, seal: bool) -> list[bytes]:
        """The keys that open tickets, the one that seals first, each 80 bytes.

        The sealing key is replaced once it is ``lifetime`` old (the session
        timeout of the server asking); the keys before it stay while a ticket
        they sealed may still come back (each sealing pushes that time to at
        least ``now + lifetime``), three at most.
        """
        with self.locked() as m:
            keys = [list(_KEY.unpack_from(m, KEYS_AT + i * _KEY.size)) for i in range(KEYS)]
            current = keys[0]
            if seal and (current[0] == 0 or now - current[0] >= lifetime):
                keys = [[now, now + lifetime, os.urandom(80)], *keys[: KEYS - 1]]
                current = keys[0]
            elif current[0] == 0:
                return []  # no ticket sealed yet: nothing opens one
            if seal:
                current[1] = max(current[1], now + lifetime)
            for i, key in enumerate(keys):
                _KEY.pack_into(m, KEYS_AT + i * _KEY.size, *key)
            return [current[2]] + [k[2] for k in keys[1:] if k[0] and k[1] > now]


_ZONES: dict[tuple[str, int], Zone] = {}


def zone(name: str, size: int) -> Zone:
    """The zone ``name`` of ``size`` bytes: the one made before (by an earlier
    configuration of this process, so a reload keeps the sessions) or a new one."""
    z = _ZONES.get((name, size))
    if z is None:
        z = _ZONES[(name, size)] = Zone(name, size)
    return z


def now() -> float:
    return time.time()


__all__ = ["MAX_SESSION", "Zone", "now", "zone"]
