"""What every command line of the project shares: help, ``--config FILE.toml``, deprecated
aliases and the start of ``main()`` (scrape, prep, train, train export/report, tag, tag review).

    parser = argparse.ArgumentParser(prog="train", formatter_class=HelpFormatter, ...)
    add_config_option(parser)
    return run_main("train", parser, argv, handler, expected=(TrainError,))

``--config`` works in two passes: the TOML file is read first and its values become the
defaults of the parser (or of the subcommand's parser), so any flag given on the command line,
abbreviated or not, wins. Each value is checked through the action of the flag it stands for
(its type, choices, a bool for a switch, a list for several values; a list of strings
for a one-value flag is joined with commas); a bad or unknown key is a
one-line error, ``CMD: error: FILE: key: ...``, and exit code 2. It lives in ``cli_kit``, which
imports no stage, so that every command shares this one copy.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .disk_full import AGAIN as DISK_FULL_AGAIN
from .disk_full import EXIT_CODE as DISK_FULL_EXIT
from .disk_full import no_space, no_space_line
from .logs import configure_logging

Handler = Callable[[argparse.Namespace], int]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions kept as written, and each option's default after its help (unless the help
    already says it, or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (isinstance(action, _Deprecated) or "default" in text
                or action.default in (None, argparse.SUPPRESS, "", [], ())
                or action.nargs == 0 and action.default is False):
            return text
        return super()._get_help_string(action)


class ConfigError(ValueError):
    """A --config file that cannot be read, or a key or value in it that is wrong."""


class _Deprecated(argparse.Action):
    """An old spelling of a flag: stores like the new one, after a one-line warning."""

    def __init__(self, option_strings, dest, new: str = "", convert=None, **kwargs):
        self.new, self.convert = new, convert
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, self.convert(values) if self.convert else values)


def add_deprecated_alias(group: argparse._ActionsContainer, old: str, new: str, dest: str,
                         convert: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
    """Add ``old`` as a deprecated spelling of ``new`` (same ``dest``); ``convert`` maps an old
    value to the new flag's (e.g. tag's ``--resize stretch`` to ``keep_ratio``)."""
    group.add_argument(old, dest=dest, action=_Deprecated, new=new, convert=convert,
                       default=argparse.SUPPRESS, help=f"deprecated spelling of {new}", **kwargs)


def add_config_option(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """``--config FILE.toml`` (read by :func:`run_main` before parsing)."""
    parser.add_argument("--config", metavar="FILE.toml", default=default,
                        help="option values from a TOML file (keys are the long flag names, "
                        "with - or _); flags on the command line win")


def config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` wherever it appears (it must be known before parsing)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    return known.config


def apply_config(path: str | Path, parser: argparse.ArgumentParser) -> None:
    """Make the values of the TOML file ``path`` the defaults of ``parser``. Raises ConfigError."""
    try:
        values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read --config {path}: {exc}") from None
    actions = _actions_by_key(parser)
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        action = actions.get(key.replace("_", "-"))
        if action is None:
            raise ConfigError(f"{path}: {key}: unknown option")
        try:
            defaults[action.dest] = _convert(action, value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {key}: {exc}") from None
        action.required = False
    parser.set_defaults(**defaults)


def _actions_by_key(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options a TOML key may name: by each long flag (without --) and by destination."""
    found: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "config"):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        found.setdefault(action.dest.replace("_", "-"), action)
        for flag in action.option_strings:
            if flag.startswith("--"):
                found[flag[2:]] = action
    return found


def _convert(action: argparse.Action, value: Any) -> Any:
    """A TOML value checked and converted as the flag's action would on the command line."""
    if action.nargs == 0:                                   # store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, not {value!r}")
        return value
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int) \
        or isinstance(action, argparse._AppendAction)
    if many:
        items = value if isinstance(value, list) else [value]
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise ConfigError(f"expected a list of {action.nargs} values, not {value!r}")
        if action.nargs == "+" and not items:
            raise ConfigError("expected at least one value")
        return [_one(action, v) for v in items]
    if isinstance(value, list):              # categories = ["general", "character"]
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"expected one value or a list of strings, not {value!r}")
        value = ",".join(value)
    return _one(action, value)


def _one(action: argparse.Action, value: Any) -> Any:
    if isinstance(value, dict | list) or isinstance(value, bool) and action.type is not None:
        raise ConfigError(f"invalid value {value!r}")
    text = str(value)                                       # as if typed: 2.5 is no int
    try:
        converted = action.type(text) if action.type else text
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc)) from None
    except (TypeError, ValueError):
        kind = getattr(action.type, "__name__", "")
        raise ConfigError(f"invalid {kind} value {value!r}".replace("  ", " ")) from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"invalid choice {value!r} (choose from "
                          f"{', '.join(map(str, action.choices))})")
    return converted


def run_main(prog: str, parser: argparse.ArgumentParser, argv: list[str] | None,
             handler: Handler, expected: tuple[type[BaseException], ...] = (), *,
             subparsers: Mapping[str, argparse.ArgumentParser] | None = None,
             noisy: Iterable[str] = (), interrupted: str = "interrupted",
             disk_full: str = DISK_FULL_AGAIN) -> int:
    """Parse ``argv`` (after its --config file), configure logging, run ``handler(args)``.

    Usage errors, config errors and the ``expected`` exceptions are one line on stderr and exit
    code 2; a full disk is one line naming the file, then ``disk_full`` (how to go on), and
    exit code 1 (scrape/disk_full.py);
    Ctrl-C prints ``interrupted`` and exits 130. With ``subparsers`` (command name -> parser),
    the config file fills the defaults of the command named in ``argv``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        path = config_path(argv)
        if path:
            target = parser
            if subparsers is not None:
                target = next((subparsers[a] for a in argv if a in subparsers), None)
            if target is not None:
                apply_config(path, target)
        args = parser.parse_args(argv)
    except SystemExit as exc:                              # argparse printed usage and message
        return exc.code if isinstance(exc.code, int) else 2
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.verbose, args.quiet, noisy)
    try:
        return handler(args)
    except Exception as exc:
        full = no_space(exc)                    # a full disk first, whatever it caused
        if full is not None:
            print(no_space_line(prog, full, disk_full), file=sys.stderr)
            return DISK_FULL_EXIT
        if not isinstance(exc, expected):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
