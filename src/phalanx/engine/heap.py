"""The garbage collector and a coordinator's long-lived heap.

Python's cyclic collector walks every tracked object in a full (generation 2) collection. A
coordinator process holds a large heap that lives as long as it does: torch and the other
imports (some 170,000 objects; a full collection of them alone takes about 0.2 s on the
development machine), the configuration, the health table of every registered client. A
round of k clients allocates enough surviving objects to trigger a full collection every few
rounds at k = 1,000 and every round at k = 10,000, and each one re-walks that whole heap:
measured, that was half of a k = 10,000 round.

So once, when the engine has built its health index for the first time (the heap is then
set up), it collects and moves everything alive into the collector's permanent generation
(``gc.freeze``): later collections walk only what rounds allocate. Frozen objects are still
freed when their reference count drops; only a reference cycle among them would outlive its
use, and the collection just before the freeze leaves none behind. It happens once per
process, is skipped where the collector is disabled, and ``gc.unfreeze()`` undoes it.
"""

from __future__ import annotations

import gc

_settled = False


def settle_long_lived() -> bool:
    """Collect, then freeze the heap as it is now (once per process); whether it did."""
    global _settled
    if _settled or not gc.isenabled():
        return False
    _settled = True
    gc.collect()
    gc.freeze()
    return True
