"""Logging for every command line of the project (scrape, prep, train, train export, tag).

    configure_logging(args.verbose, args.quiet)   # in each cli.main(), nowhere else

One handler on stderr, ``LEVEL logger: message``; ``-v`` shows DEBUG, ``-q`` only warnings and
errors. Calling it again (tests run several commands in one process) replaces the handler it
added instead of stacking another. It lives in ``cli_kit``, which imports no stage, so that
every command uses this same one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


def configure_logging(verbose: bool, quiet: bool, noisy: Iterable[str] = ()) -> None:
    """Send log records to stderr at DEBUG (``verbose``), WARNING (``quiet``) or INFO; the
    loggers named in ``noisy`` (third-party libraries) are held at WARNING."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "booru_tagger_cli", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.booru_tagger_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    for name in noisy:
        logging.getLogger(name).setLevel(logging.WARNING)
