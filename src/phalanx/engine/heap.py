"""The garbage collector and a coordinator's heap: set up once, then rounds.

Python's cyclic collector walks every tracked object in a full (generation 2) collection. A
coordinator process holds a large heap that lives as long as it does: torch and the other
imports (some 170,000 objects; a full collection of them alone takes about 0.2 s on the
development machine), the configuration, the health table of every registered client. So
once, when the engine has built its health index for the first time (the heap is then set
up), it collects and moves everything alive into the collector's permanent generation
(``gc.freeze``): later collections walk only what rounds allocate. Frozen objects are still
freed when their reference count drops; only a reference cycle among them would outlive its
use, and the collection just before the freeze leaves none behind. It happens once per
process, is skipped where the collector is disabled, and ``gc.unfreeze()`` undoes it.

Then the round. A round of k clients keeps some k tracked objects per kind alive at once
(each task in flight, its key, the transport's record of it, the health records it
changes). The collector runs a young collection every ``threshold0`` (700) net
allocations, a middle one every 10 young ones and a full one every 10 middle ones, and each
walks what is alive in its generations: with fixed thresholds a round triggers a number of
collections proportional to k, each walking the round's in-flight objects (also
proportional to k): a cost growing as k squared. Measured at 10,000 clients per round: 148
young, 13 middle and 1-2 full collections a round, 15-30% of the engine's time, against 4 ms
(6%) at 1,000. ``fit_to_round`` scales the young threshold with the round's size, so a
round triggers a bounded number of collections whatever its k, each walking O(k) objects:
linear again. The collector still runs (cycles are still found, once per so many
allocations); only its cadence follows the round. The threshold is only ever raised above
what the process had set, never lowered.
"""

from __future__ import annotations

import gc

# Net tracked allocations allowed per task of the round before a young collection: about
# what a round keeps alive per task at its peak (task, key, the transport's record of it,
# the health and pool records: 5-10), so the young collection runs about once a round.
YOUNG_PER_TASK = 10

_settled = False
_base_threshold = 0  # the process's own young threshold (what the engine found there)
_applied: int | None = None  # what the engine last set


def settle_long_lived() -> bool:
    """Collect, then freeze the heap as it is now (once per process); whether it did."""
    global _settled
    if _settled or not gc.isenabled():
        return False
    _settled = True
    gc.collect()
    gc.freeze()
    return True


def fit_to_round(tasks: int) -> int:
    """Set the young generation's threshold for a round of ``tasks`` tasks, never below the
    process's own (the value found there on the first call, or set since by someone other
    than the engine); the threshold now in force."""
    global _base_threshold, _applied
    young, middle, old = gc.get_threshold()
    if young != _applied:  # the first call, or the process has set its own since
        _base_threshold = young
    if young == 0:  # the collector's automatic runs are off: leave them off
        _applied = 0
        return young
    wanted = max(_base_threshold, YOUNG_PER_TASK * tasks)
    if wanted != young:
        gc.set_threshold(wanted, middle, old)
    _applied = wanted
    return wanted
