"""booru-tagger: the scrape stage (booru APIs -> raw/ images and posts parquet)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("booru-tagger")
except PackageNotFoundError:     # running from a checkout that was never installed
    __version__ = "0.0.0"
DEFAULT_AGENT = f"booru-tagger/{__version__} (+https://github.com/booru-tagger)"
