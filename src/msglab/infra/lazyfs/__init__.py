"""msglab's lazy filesystem: power cuts on one machine.

A FUSE passthrough of a backing folder that keeps written data in its own cache and writes it
to the backing folder only when the file is fsynced (or at a clean unmount); a *cut* drops
the rest, as a power cut drops what the page cache held. Jepsen's LazyFS idea, in Python:

    cache.py    dirty pages of one file (no FUSE)
    files.py    the mount's open handles and dirty files; sync, cut
    fs.py       the FUSE operations (mfusepy: the one import of the driver)
    control.py  the control socket: ping, unsynced, sync, cut
    mount.py    a mount as its own process: mount, cut, unmount; is FUSE there at all
    disk.py     a server's data folder on the lazy filesystem or not
    report.py   what a cut dropped

``python -m msglab.infra.lazyfs MOUNTPOINT BACKING --control SOCKET`` runs one mount.
"""

from msglab.infra.lazyfs.mount import LazyMount, check_available, unavailable
from msglab.infra.lazyfs.report import CutReport, FileLoss

__all__ = ["CutReport", "FileLoss", "LazyMount", "check_available", "unavailable"]
