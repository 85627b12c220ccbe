"""Which queued jobs an idle worker takes: a share balanced by cost, kept in queue order.

A round's jobs differ in size (a client with 150 examples takes five times the steps of one
with 28), and the round waits for its slowest worker: shares of equal counts leave one worker
idle while another still trains a big client. An idle worker's share is its part of a
longest-processing-time-first plan over every worker: the jobs, largest first, each to the
least loaded worker, where a busy worker starts loaded with the cost it still has in hand and
the asking worker wins ties. The asker takes its part at once; the parts planned for the
others stay queued and are planned again when a worker next asks, so a cost guessed wrong is
corrected at the next share. Within a share, jobs keep their queue order (the order their
replies are due), so the coordinator uses the first replies while the later ones train.
"""

from __future__ import annotations

from collections.abc import Sequence


def planned_share(costs: Sequence[float], others: Sequence[float]) -> list[int]:
    """Indices, ascending, of the jobs (of ``costs``) that the asking idle worker takes when
    the other workers have ``others`` cost in hand (one entry each, 0 for an idle one).

    Never empty when ``costs`` is not: the largest job goes to the asker, the least loaded.
    """
    loads = [0.0, *others]  # the asker first, so that it wins ties
    mine: list[int] = []
    for i in sorted(range(len(costs)), key=lambda j: (-costs[j], j)):
        least = min(range(len(loads)), key=loads.__getitem__)
        loads[least] += costs[i]
        if least == 0:
            mine.append(i)
    return sorted(mine)
