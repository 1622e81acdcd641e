"""``python -m prep``: same as the ``prep`` console script."""

from .cli import main

raise SystemExit(main())
