"""Give the memory of a big letter back to the system once it is freed, so one peak does not stay."""

from __future__ import annotations

import ctypes
import sys

#: Blocks from this size on get a mapping of their own, unmapped when freed: socket reads
#: (256 KiB each, held until a literal is whole) among them.
MMAP_THRESHOLD = 256 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def unmap_big_blocks() -> bool:
    """Fix glibc's mmap threshold at 256 KiB; give whether it took.

    glibc raises the threshold to the size of every mapped block freed (up to 32 MB), so after
    the first 25 MB letter the next ones come from the heaps of the threads that handled them
    (the event loop, the parser pool's feeder, the database thread, a parser worker) and stay
    resident there once freed, one such heap per thread. A fixed threshold keeps every block
    of 256 KiB or more a mapping of its own. It is not 1 MB: a 25 MB letter arrives as about a
    hundred 256 KiB reads, which then left 25–30 MB of free heap resident in maild for good.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
