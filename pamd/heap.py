"""How the daemon uses Python's cyclic garbage collector once it is running.

Reference counting frees almost everything a tick makes (alerts, rows, batches: no cycles); the cyclic collector
only has cycles to find. Left at its defaults it costs a large tick dearly all the same:

* objects alive at start (modules, plugins, config and, with an AI key, the SDKs and their pydantic models: about
  240,000 of them with both SDKs, 40,000 without) were walked again by every full collection; they are frozen
  (moved to the permanent generation) once, at start;
* a young collection runs whenever allocations outnumber deallocations by 700, which a tick building batches of
  thousands of alerts does all the time; the survivors are promoted and soon trigger full collections. A
  1,000,000-user budget tick spent 5.35 s of its 18 s of CPU in the collector (12,521 young, 1,138 middle and 103
  full collections over two ticks); with the young threshold at 50,000, 0.10 s. Cyclic garbage then waits for at
  most 50,000 net allocations, a few megabytes.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Net allocations between young collections (CPython's default: 700)."""
OLDER_THRESHOLD = 20
"""Young collections between middle ones, and middle ones between full ones (defaults: 10)."""


def settle_heap() -> int:
    """Collect once, freeze every object alive now, and space out collections (see the module docstring); returns
    how many objects are frozen. Done once, at start: objects frozen and later dropped are freed by reference
    counting only, so a reload does not freeze again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    return gc.get_freeze_count()
