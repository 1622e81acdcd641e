"""`scrape`: download the posts of a booru tag search into raw/.

    scrape --site danbooru --tags "1girl solo" --out raw/ --limit 20000 --variant sample

Writes raw/images/<md5[0:2]>/<md5>.<ext> (samples: <md5>-sample.<ext>), raw/posts/part-*.parquet
(a row per post, with its tags by category, a status and scraped_at) and raw/state.sqlite
(resume and dedupe). Rerun the same command after an interruption to finish the job; nothing
is downloaded twice. A later row of a post (--retry-failed, an original after a sample)
supersedes the earlier one for every reader.
Credentials come only from the environment: DANBOORU_LOGIN/DANBOORU_API_KEY,
GELBOORU_USER_ID/GELBOORU_API_KEY, SAFEBOORU_USER_ID/SAFEBOORU_API_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cli_kit.command_line import HelpFormatter, add_config_option, run_main

from . import DEFAULT_AGENT
from .errors import FetchError, ScrapeError, UsageError
from .post import RATINGS
from .sites import SITES

if TYPE_CHECKING:                   # the job (aiohttp, pyarrow, tqdm) loads when a scrape runs
    from .job import ScrapeSettings, Summary

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scrape", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--site", choices=sorted(SITES), help="which booru (required)")
    p.add_argument("--tags", help='the search, as on the site: "1girl solo rating:g" '
                   '(required; "" lists every post)')
    p.add_argument("--out", type=Path, help="the raw/ folder (required)")
    p.add_argument("--limit", type=int, help="stop after the first N posts of the search "
                   "(default: all)")
    p.add_argument("--base-url", help="the site's API root (default: the real site; tests "
                   "use the emulator, e.g. http://127.0.0.1:8765/danbooru)")
    p.add_argument("--concurrency", type=int, default=8, help="parallel downloads")
    p.add_argument("--rate", type=float, help="API requests/s, retries included "
                   "(default: the site's polite rate: " + ", ".join(
                       f"{n} {c.rate:g}" for n, c in sorted(SITES.items())) + "; 0: no limit)")
    p.add_argument("--file-rate", type=float, help="file requests/s per file host, where the "
                   "files come from another host than the API, like a CDN (default: " + ", ".join(
                       f"{n} {c.file_rate:g}" for n, c in sorted(SITES.items())) + "; 0: no "
                   "limit; --concurrency bounds the files in flight either way)")
    p.add_argument("--burst", type=int, help="requests allowed at once before --rate applies "
                   "(default: the site's)")
    p.add_argument("--retries", type=int, default=5, help="extra attempts per request")
    p.add_argument("--backoff", type=float, default=1.0,
                   help="first retry wait in seconds, doubled each time, with jitter")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--ratings", help="keep only these ratings, a comma list of "
                   + ",".join(RATINGS) + " (default: all)")
    p.add_argument("--min-score", type=int, help="keep only posts with at least this score "
                   "(default: any)")
    p.add_argument("--variant", choices=["original", "sample"], default="original",
                   help="original file, or the site's sample (about 850 px wide; smaller, "
                   "and what training at 448 px needs)")
    p.add_argument("--retry-failed", action="store_true",
                   help="also retry the posts whose latest row failed, e.g. after a site "
                   "outage (default: off; a failed post stays failed)")
    p.add_argument("--replace-samples", action="store_true",
                   help="an --variant original run deletes the samples whose originals it "
                   "stored (default: off, keep both)")
    p.add_argument("--metadata-only", action="store_true", help="write rows, download nothing")
    p.add_argument("--user-agent", default=DEFAULT_AGENT, help="identify yourself")
    add_config_option(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    return p


def settings_from(args: argparse.Namespace) -> ScrapeSettings:
    """The job's settings from the parsed flags (defaults < --config file < flags)."""
    from .job import ScrapeSettings
    values = vars(args)
    for name in ("site", "tags", "out"):           # --tags "" (every post) is allowed
        if values.get(name) is None or (name != "tags" and values[name] == ""):
            raise UsageError(f"--{name} is required")
    ratings = None
    if values["ratings"]:
        ratings = [r.strip() for r in str(values["ratings"]).split(",") if r.strip()]
        bad = [r for r in ratings if r not in RATINGS]
        if bad:
            raise UsageError(f"unknown rating(s) {', '.join(bad)}; use {', '.join(RATINGS)}")
    for name in ("limit", "concurrency", "burst"):
        if values[name] is not None and values[name] < 1:
            raise UsageError(f"--{name} must be at least 1")
    for name in ("rate", "file_rate"):
        if values[name] is not None and values[name] < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if values["retries"] < 0:
        raise UsageError("--retries must be >= 0")
    if values["timeout"] <= 0 or values["backoff"] < 0:
        raise UsageError("--timeout must be > 0 and --backoff >= 0")
    return ScrapeSettings(
        site=values["site"], tags=values["tags"], out=Path(values["out"]),
        limit=values["limit"], base_url=values["base_url"],
        concurrency=values["concurrency"], rate=values["rate"], burst=values["burst"],
        file_rate=values["file_rate"],
        retries=values["retries"], backoff=values["backoff"], timeout=values["timeout"],
        ratings=ratings, min_score=values["min_score"], variant=values["variant"],
        retry_failed=values["retry_failed"], replace_samples=values["replace_samples"],
        metadata_only=values["metadata_only"], user_agent=values["user_agent"],
        progress=not values["quiet"] and sys.stderr.isatty())


def print_summary(summary: Summary, out: Path) -> None:
    st = summary.statuses
    print(f"scrape: {summary.listed} posts listed, {sum(st.values())} rows written to "
          f"{out}/posts ({summary.already} done before, {summary.filtered} filtered out, "
          f"{summary.deduped} already on disk by md5)")
    for status, n in sorted(st.items()):
        print(f"  {status:24s} {n}")
    print(f"  {summary.bytes / 1e6:.1f} MB in {summary.requests} requests "
          f"({summary.retries} retries)")


def run_scrape(args: argparse.Namespace) -> int:
    """Run the scrape the flags describe; the exit code."""
    settings = settings_from(args)
    from .job import ScrapeJob
    try:
        summary = asyncio.run(ScrapeJob(settings).run())
    except FetchError as exc:
        print(f"scrape: the listing failed after its retries ({exc}); rerun to resume",
              file=sys.stderr)
        return 1
    if not args.quiet:
        print_summary(summary, settings.out)
    if summary.listed == 0:
        print(f"scrape: no post matched --tags {settings.tags!r} on {settings.site}; look the "
              f"tags up in the site's tag search: "
              f"{tag_search_url(settings.site, settings.base_url, settings.tags)}",
              file=sys.stderr)
        return 2
    return 0


# The page of each site where a person looks tags up (by name, * as a wildcard).
TAG_SEARCH = {"danbooru": "/tags?search[name_or_alias_matches]={}",
              "gelbooru": "/index.php?page=tags&s=list&tags={}",
              "safebooru": "/index.php?page=tags&s=list&tags={}",
              "yandere": "/tag?name={}", "konachan": "/tag?name={}"}


def tag_search_url(site: str, base_url: str | None, tags: str) -> str:
    """The site's tag search for the first plain tag of ``tags`` (its list of tags when the
    search has none), on ``base_url`` or the real site."""
    from urllib.parse import quote
    words = [w for w in tags.split() if ":" not in w and not w.startswith(("-", "~"))]
    word = words[0].strip("*") + "*" if words else ""
    base = (base_url or SITES[site].base_url).rstrip("/")
    return base + TAG_SEARCH[site].format(quote(word, safe="*()_"))


def main(argv: list[str] | None = None) -> int:
    """Run the scrape command line; the exit code (0 ok, 1 the listing failed or the disk is
    full, 2 a usage error, a site refusing the job, or a search that matched nothing)."""
    return run_main("scrape", build_parser(), argv, run_scrape, (ScrapeError,),
                    noisy=["aiohttp"],
                    interrupted="interrupted; rerun the same command to finish")
