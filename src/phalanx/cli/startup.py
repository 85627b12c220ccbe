"""Importing a command's heavy modules without the garbage collector walking them.

Importing torch and phalanx's engine allocates ~190k long-lived objects, and the collector
would walk them all several times on the way: about 0.25 s of CPU, a tenth of the default
run. ``frozen_imports`` collects nothing while its block imports, then freezes what is
allocated by then: later collections (and the last one, at exit) skip it. A garbage cycle
made meanwhile is kept, which is the price of skipping the walks.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_imports() -> Iterator[None]:
    """No collection inside the block; everything alive at its end frozen."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
