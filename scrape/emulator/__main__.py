"""`python -m scrape.emulator --port 8765 --seed 0 --posts 3000`: serve the offline booru."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .faults import KINDS, FaultConfig
from .runner import build, start
from .sites import SITES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scrape.emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--seed", type=int, default=0, help="the world's seed (default 0)")
    p.add_argument("--posts", type=int, default=3000, help="number of posts (default 3000)")
    p.add_argument("--image-scale", type=float, default=1.0,
                   help="scale every image's size (e.g. 0.2 for quick tests)")
    p.add_argument("--faults", default="",
                   help="comma list of kind=value, kinds: " + ", ".join(KINDS)
                   + "; also attempts, slow_seconds, retry_after, rate_limit, burst, "
                   "block_browser_ua, seed")
    p.add_argument("--rate-limit", type=float, default=0.0,
                   help="requests/s per client before 429 (Danbooru's edge: 10)")
    p.add_argument("--burst", type=int, default=50)
    p.add_argument("--gelbooru-auth", choices=["off", "401", "xml"], default="off",
                   help="require api_key+user_id on /gelbooru (401 as since 2025, or the "
                   "2022 XML error)")
    p.add_argument("--cache-mb", type=int, default=256, help="rendered-file cache size")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    try:
        faults = FaultConfig.parse(args.faults)
    except ValueError as exc:
        raise SystemExit(f"emulator: {exc}") from None
    faults.rate_limit, faults.burst = args.rate_limit, args.burst
    emulator = build(args.seed, args.posts, args.image_scale, faults, args.gelbooru_auth,
                     args.cache_mb)
    await start(emulator, args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    print(f"booru emulator: {args.posts} posts (seed {args.seed}) on {base}", flush=True)
    for site in SITES:
        print(f"  {site:10s} {base}/{site}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
