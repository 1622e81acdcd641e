"""Console entry points of `train` and `tag`: they need the `train` extra (torch, torchvision).

The base install (scrape, prep, shards) has no torch; without it these commands answer with one
line that names the extra to install instead of an ImportError traceback.
"""

from __future__ import annotations

import logging
import os
import sys

EXTRA = "booru-tagger[train]"


def _require_torch(command: str) -> None:
    """Exit with code 2 and a one-line message when torch or torchvision cannot be imported."""
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as exc:
        print(f"{command}: needs torch and torchvision ({exc}); install them with "
              f"pip install '{EXTRA}'", file=sys.stderr)
        raise SystemExit(2) from None


def train_main(argv: list[str] | None = None) -> int:
    """`train`: checks for torch, then runs train.cli.main."""
    _require_torch("train")
    from .cli import main
    code = main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _leave_now(code)
    return code


def _leave_now(code: int) -> None:
    """A torchrun rank whose run has ended (its process group torn down, its files written)
    leaves without the interpreter's finalisation: there, tensors still referenced by gloo's
    C++ worker threads can abort the process (SIGABRT, "terminate called without an active
    exception", pytorch/pytorch#190489) after the run succeeded, and the launcher would then
    report a failed run."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def tag_main(argv: list[str] | None = None) -> int:
    """`tag`: checks for torch, then runs the tag command."""
    _require_torch("tag")
    from .tag.cli import main
    return main(argv)
