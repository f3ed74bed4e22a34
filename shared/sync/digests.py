"""The row keys a scan has seen, as 64-bit digests (the delete search looks keys up in them)."""

from __future__ import annotations

import bisect
import hashlib
import sys
from array import array


class KeyDigests:
    """The row keys a scan has seen, as sorted 64-bit digests: 8 bytes a key instead of a Python string.

    A digest collision (about 3 in 100 million at a million keys) would only postpone one delete to
    the next run."""

    def __init__(self) -> None:
        self._digests = array("Q")
        self._parts: list[array[int]] = []
        self._frozen = False

    @staticmethod
    def _digest(row_key: str) -> int:
        return int.from_bytes(hashlib.blake2b(row_key.encode("utf-8"), digest_size=8).digest(), "big")

    def add(self, row_key: str) -> None:
        self._digests.append(self._digest(row_key))

    def add_digest(self, digest: int) -> None:
        """A digest computed elsewhere (64 bits)."""
        self._digests.append(digest)

    def to_bytes(self) -> bytes:
        """The digests as 8-byte little-endian integers (a page checkpoint stores them)."""
        digests = array("Q", self._digests)
        if sys.byteorder != "little":
            digests.byteswap()
        return digests.tobytes()

    def add_bytes(self, data: bytes) -> None:
        digests = array("Q")
        digests.frombytes(data)
        if sys.byteorder != "little":
            digests.byteswap()
        self._digests.extend(digests)

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts) if self._frozen else len(self._digests)

    def freeze(self) -> None:
        """Sort for lookups: in 256 parts by the digest's top byte, each sorted on its own, so sorting never
        holds more than a part's digests as Python integers (a million at once would add about 40 MB)."""
        if self._frozen:
            return
        parts = [array("Q") for _ in range(256)]
        for digest in self._digests:
            parts[digest >> 56].append(digest)
        self._parts = [array("Q", sorted(part)) for part in parts]
        self._digests = array("Q")
        self._frozen = True

    def __contains__(self, row_key: object) -> bool:
        return self.contains_digest(self._digest(str(row_key)))

    def contains_digest(self, digest: int) -> bool:
        assert self._frozen, "freeze() before lookups"
        part = self._parts[digest >> 56]
        index = bisect.bisect_left(part, digest)
        return index < len(part) and part[index] == digest
