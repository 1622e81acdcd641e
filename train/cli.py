"""`train`: stream shards into a multi-label tagger (arrives with issue 6)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tag"]:
        from .tag_cli import main as tag_main
        return tag_main(argv[1:])
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    print("train: not built yet (issue 6).", file=sys.stderr)
    return 2
