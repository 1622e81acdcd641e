"""Start the emulator: in the foreground (`python -m scrape.emulator`) or on a background thread
(tests and benchmarks: `with EmulatorThread(posts=500) as emu: emu.url`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from .app import make_app
from .faults import FaultConfig, QuietResets
from .files import FileStore
from .state import Emulator
from .world import World


def build(seed: int = 0, posts: int = 3000, image_scale: float = 1.0,
          faults: FaultConfig | None = None, gelbooru_auth: str = "off",
          cache_mb: int = 256) -> Emulator:
    world = World(seed=seed, n_posts=posts, image_scale=image_scale)
    return Emulator(world=world, store=FileStore(world, cache_mb << 20),
                    faults=faults or FaultConfig(), gelbooru_auth=gelbooru_auth)


async def start(emulator: Emulator, host: str = "127.0.0.1", port: int = 0,
                files_port: int | None = None) -> web.AppRunner:
    """Start serving on the running loop; returns the runner (its port in `runner.addresses`).

    With `files_port` (0: any free port) the same application also listens on a second
    address, and the sites list their file URLs there, as real sites list a CDN host."""
    logging.getLogger("aiohttp.server").addFilter(QuietResets())
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=4, thread_name_prefix="render"))
    runner = web.AppRunner(make_app(emulator), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    if files_port is not None:
        await web.TCPSite(runner, host, files_port).start()
        emulator.files_url = f"http://{host}:{runner.addresses[-1][1]}"
    return runner


class EmulatorThread:
    """The emulator on its own event loop in a daemon thread, for tests and benchmarks."""

    def __init__(self, emulator: Emulator | None = None, port: int = 0,
                 files_host: bool = False, **build_args):
        self.emulator = emulator or build(**build_args)
        self.port = port
        self.files_host = files_host        # serve files from a second address (a "CDN")
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="booru-emulator")
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = self._loop.run_until_complete(
            start(self.emulator, port=self.port, files_port=0 if self.files_host else None))
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the emulator did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def hold_files_after(self, allow: int) -> None:
        """Serve ``allow`` more file requests, then hold the rest until :meth:`release_files`."""
        self._on_loop(self.emulator.gate.close_after, allow)

    def release_files(self) -> None:
        """Answer the held file requests and stop holding."""
        self._on_loop(self.emulator.gate.open)

    def wait_idle(self, limit: float = 120.0) -> None:
        """Until no request is being answered (a `slow` fault's handlers still sleeping after
        their client gave up, say); a RuntimeError after ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while self.emulator.log.in_flight:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the emulator is still answering after {limit:.0f} s")
            time.sleep(0.01)

    def _on_loop(self, function, *args) -> None:
        async def call() -> None:
            function(*args)

        asyncio.run_coroutine_threadsafe(call(), self._loop).result(30)

    @property
    def app(self) -> web.Application:
        """The running application (sub-applications hold per-site knobs)."""
        return self._runner.app

    @property
    def world(self) -> World:
        return self.emulator.world

    @property
    def faults(self) -> FaultConfig:
        return self.emulator.faults

    def site(self, name: str) -> str:
        return f"{self.url}/{name}"
