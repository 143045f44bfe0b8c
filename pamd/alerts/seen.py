"""Every fingerprint one tick decided, kept compactly until its sweep.

A complete tick forgets the conditions it no longer reports. Books that sweep by set difference (Postgres,
SQLite) get this collection with the tick's last write instead of marking each decided fingerprint as seen, batch
after batch: a steady tick then updates no state row at all (at 1,000,000 users the budget monitor's 218,000
marks cost Postgres about 5 s a tick and left as many dead rows behind).

A default fingerprint (32 lowercase hex digits, :meth:`pamd.model.Alert.default_fingerprint`) is kept as its 16
bytes in one buffer, no object each; any other spelling a monitor chose is kept as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_HEX32 = re.compile(r"[0-9a-f]{32}")
DIGEST_SIZE = 16


class TickFingerprints:
    """The fingerprints a tick decided (duplicates allowed): :meth:`add` as batches are decided, then hand to the
    book's sweep."""

    def __init__(self, fingerprints: Iterable[str] = ()) -> None:
        self.digests = bytearray()  # the default ones, 16 bytes each
        self.others: list[str] = []  # the rest, as they are
        self.add(fingerprints)

    def add(self, fingerprints: Iterable[str]) -> None:
        """Remember ``fingerprints``."""
        digests, others, match = self.digests, self.others, _HEX32.fullmatch
        for fingerprint in fingerprints:
            if match(fingerprint):
                digests += bytes.fromhex(fingerprint)
            else:
                others.append(fingerprint)

    def __len__(self) -> int:
        return len(self.digests) // DIGEST_SIZE + len(self.others)

    def __iter__(self) -> Iterator[str]:
        """Each fingerprint as it was added (the default ones in lowercase hex), digests first."""
        digests = memoryview(self.digests)
        for start in range(0, len(digests), DIGEST_SIZE):
            yield digests[start:start + DIGEST_SIZE].hex()
        yield from self.others
