"""`tag review IMAGES --model run/`: the review app on http://127.0.0.1:8777/.

    tag review pics/ --model run/                 # predicts what is not yet, then serves
    tag review pics/ --model run/ --port 0        # any free port (printed)

Edits are saved at once to each image's caption file and to IMAGES/.review/corrections.jsonl;
Ctrl-C stops the server and loses nothing. Then train on the corrections:

    prep make-shards --folder pics/ --tags run/tags.csv --out pics-shards/ ...
    train --stream --shards pics-shards/ --init-from run/ --out run-2/ ...
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import socket
from pathlib import Path

from aiohttp import web

from cli_kit.command_line import HelpFormatter, run_main
from cli_kit.workers import LOADER_CAP, workers_argument

from ...errors import TrainError
from ...runs import LoadedRun, load_run, thresholds
from ..captions import CaptionStyle
from .predictions import ensure_predictions
from .server import make_app
from .store import CORRECTIONS, REVIEW_DIR, ReviewStore

log = logging.getLogger(__name__)
PORT = 8777


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tag review", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("folder", type=Path, metavar="IMAGES", help="a folder of images")
    p.add_argument("--model", required=True, type=Path, metavar="RUN",
                   help="a train run folder (config.json, tags.csv, model.safetensors)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=PORT, help="port to listen on; 0 picks a free one")
    p.add_argument("--threshold", type=float, metavar="X",
                   help="one threshold for every tag (default: the run's per-tag ones from "
                   "eval.json, else its evaluation threshold)")
    p.add_argument("--underscores-to-spaces", action="store_true",
                   help="write long_hair as `long hair` in new captions")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="images per forward pass")
    p.add_argument("--workers", **workers_argument("decoding processes for the first "
                                                   "prediction", LOADER_CAP))
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def run_thresholds(run: LoadedRun, threshold: float | None):
    """--threshold, else eval.json's per-tag thresholds, else the run's evaluation one."""
    if threshold is not None:
        return thresholds(run, threshold)
    try:
        return thresholds(run, per_tag=True)
    except TrainError:
        return thresholds(run)


def retrain_commands(folder: Path, run: LoadedRun) -> str:
    """The two commands that turn the reviewed folder into a new run started from `run`."""
    c, q = run.config, shlex.quote
    shards, out = f"{folder.resolve()}-shards", f"{run.path.resolve()}-reviewed"
    return (f"prep make-shards --folder {q(str(folder.resolve()))} --tags "
            f"{q(str(run.path.resolve() / 'tags.csv'))} --out {q(shards)} --image-size "
            f"{run.image_size} --val-fraction 0.1\n"
            f"train --stream --shards {q(shards)} --out {q(out)} --init-from "
            f"{q(str(run.path.resolve()))} --arch {c.get('model', 'resnet50')} --image-size "
            f"{run.image_size} --weights none --epochs {c.get('epochs', 10)}")


def prepare(args: argparse.Namespace) -> tuple[ReviewStore, dict, int, int]:
    """Load the run, predict the folder where needed; (store, page info, predicted, captions
    written). Raises TrainError."""
    if not args.folder.is_dir():
        raise TrainError(f"{args.folder}: not a folder of images")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise TrainError("--threshold must be between 0 and 1")
    if not 0 <= args.port <= 65535 or args.batch_size < 1 or args.workers < 0:
        raise TrainError("--port must be 0-65535, --batch-size at least 1, --workers 0 or more")
    run = load_run(args.model, device=args.device)
    limits = run_thresholds(run, args.threshold)
    style = CaptionStyle(underscores_to_spaces=args.underscores_to_spaces)
    predictions, predicted, written = ensure_predictions(
        args.folder, run, limits, style=style, batch_size=args.batch_size, workers=args.workers)
    store = ReviewStore(args.folder, predictions=predictions, names=run.names,
                        categories={t["name"]: t["category"] for t in run.tags},
                        thresholds=dict(zip(run.names, map(float, limits), strict=True)),
                        style=style)
    if not store.images:
        raise TrainError(f"{args.folder}: no images found")
    info = {"folder": str(args.folder.resolve()), "model": str(run.path.resolve()),
            "corrections": str(args.folder.resolve() / REVIEW_DIR / CORRECTIONS),
            "retrain": retrain_commands(args.folder, run)}
    return store, info, predicted, written


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, taken before any image is predicted, so
    a port already in use is one line at once. Raises TrainError."""
    if not 0 <= port <= 65535:
        raise TrainError("--port must be 0-65535")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise TrainError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another "
                         "`tag review` running there? --port N chooses another port (0: any "
                         "free one)") from None


async def serve(app: web.Application, host: str, port: int,
                sock: socket.socket | None = None) -> tuple[web.AppRunner, str]:
    """Start `app` (on `sock` when given, else on host:port); returns the runner (to clean up)
    and the URL it answers on."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, f"http://{host}:{bound}/"


async def _serve_forever(app: web.Application, host: str, port: int,
                         sock: socket.socket | None = None) -> None:
    runner, url = await serve(app, host, port, sock)
    print(f"tag review: open {url} (Ctrl-C stops; every edit is already saved)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_review(args: argparse.Namespace) -> int:
    """Predict what is not yet, then serve the review app until Ctrl-C; the exit code."""
    sock = listen(args.host, args.port)
    try:
        store, info, predicted, written = prepare(args)
    except BaseException:
        sock.close()
        raise
    print(f"tag review: {len(store.images)} images in {args.folder} ({predicted} predicted now, "
          f"{written} captions written); the retrain commands:\n{info['retrain']}")
    try:
        asyncio.run(_serve_forever(make_app(store, info), args.host, args.port, sock))
    except OSError as exc:
        raise TrainError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    except KeyboardInterrupt:
        print("tag review: stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `tag review`; the exit code (0 stopped, 2 usage error)."""
    return run_main("tag review", build_parser(), argv, run_review, (TrainError,))
