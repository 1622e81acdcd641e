"""`tag` (also `python -m train tag`): tag images with a trained model (arrives with issue 8)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    print("tag: not built yet (issue 8).", file=sys.stderr)
    return 2
