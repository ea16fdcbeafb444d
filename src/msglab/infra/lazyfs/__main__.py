"""``python -m msglab.infra.lazyfs MOUNTPOINT BACKING --control SOCKET [--allow-other]``:
the lazy filesystem in the foreground, until it is unmounted (``fusermount3 -u``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msglab.errors import MissingExtraError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msglab.infra.lazyfs", description=__doc__)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("backing", type=Path)
    parser.add_argument("--control", type=Path, required=True, help="the control unix socket")
    parser.add_argument("--allow-other", action="store_true", help="let other users in")
    args = parser.parse_args(argv)
    try:
        from msglab.infra.lazyfs import fs
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fs.run(args.mountpoint, args.backing, args.control, args.allow_other)
    return 0


if __name__ == "__main__":
    sys.exit(main())
