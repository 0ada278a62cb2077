"""moto's request dispatch without a directory listing per request.

To find the service a request is for, moto's server lists its own package folder (``os.listdir`` and an
``isdir`` per entry, about 150 system calls) on every request, under the lock all requests share: about 4 %
of the local AWS's CPU during a run, and every concurrent request waits behind it. The folder does not change
while the process runs, so :func:`install` keeps the first listing. Nothing a client sees changes.
"""

from __future__ import annotations

import functools
import threading

_INSTALLED = threading.Lock()
_done = False


def install() -> None:
    """Make moto's ``list_of_moto_modules`` (in this process) list its folder once."""
    global _done
    with _INSTALLED:
        if _done:
            return
        from moto import backends

        listed = tuple(backends.list_of_moto_modules())
        backends.list_of_moto_modules = functools.cache(lambda: listed)
        _done = True
