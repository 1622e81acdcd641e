"""`scrape`: download posts from a booru into raw/ (the scraper itself arrives with issue 3).

The offline booru emulator is already here: `python -m scrape.emulator --port 8765`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    print("scrape: not built yet (issue 3). The emulator runs with "
          "`python -m scrape.emulator`.", file=sys.stderr)
    return 2
