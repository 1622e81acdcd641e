"""Process images in order, in this process or in a pool of worker processes.

    with ImagePool(settings, workers=4) as pool:
        for status, message, encoded in pool.map(items):  # items: (path | None, shown name)
            ...

Results come back in the order of ``items`` whatever the number of workers, so the shards do
not depend on it. Work goes out in small batches with a bounded number in flight (memory does
not grow with the input); the pool uses the ``spawn`` start method (no inherited threads or
locks), and each worker exits by itself when the parent process dies (kill -9). A worker that
dies (out of memory, a crashing decoder) costs only its images: they are retried one by one in
a fresh pool, and the one that kills a worker again is recorded as ``failed_worker_died``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice

from .imaging import EncodedImage, ImageRejected, ImageSettings, process_file

log = logging.getLogger(__name__)

Item = tuple[str | None, str]  # (file to read, or None for an unsafe path; name for messages)
Result = tuple[str, str | None, EncodedImage | None]  # (status, error message, image)
BATCH = 8  # images per task: small, so the last shard's tail spreads over the workers
_settings: ImageSettings | None = None
_process: Callable[[Item, ImageSettings], Result] | None = None


def process_item(item: Item, settings: ImageSettings) -> Result:
    """Process one item; every failure becomes a status and a message, never an exception."""
    path, shown = item
    if path is None:
        return ("failed_bad_path",
                f"image_path {shown!r} is not a relative path inside the image folder", None)
    try:
        return ("success", None, process_file(path, settings))
    except ImageRejected as rejected:
        return (rejected.status, rejected.message, None)
    except Exception as exc:  # an unexpected library error: recorded, the run goes on
        return ("failed_error", f"{type(exc).__name__}: {exc}"[:300], None)


def _init_worker(settings: ImageSettings, process: Callable[[Item, ImageSettings], Result],
                 parent: int) -> None:
    global _settings, _process
    _settings, _process = settings, process

    def watch() -> None:  # reparented when the parent dies: exit instead of lingering
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_batch(items: list[Item]) -> list[Result]:
    assert _settings is not None and _process is not None
    return [_process(item, _settings) for item in items]


class ImagePool:
    """Ordered image processing; ``workers`` 0 or 1 runs in the calling process (one worker
    process would only add the cost of the pipe).

    ``process`` (default :func:`process_item`) must be a module-level function, as workers
    import it by name.
    """

    def __init__(self, settings: ImageSettings, workers: int = 1, batch: int = BATCH,
                 process: Callable[[Item, ImageSettings], Result] = process_item):
        self.settings = settings
        self.process = process
        self.workers = max(1, workers)
        self.batch = batch
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> ImagePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self.settings, self.process, os.getpid()))
        return self._executor

    def map(self, items: Iterable[Item]) -> Iterator[Result]:
        """Results of ``items``, in order."""
        if self.workers == 1:
            for item in items:
                yield self.process(item, self.settings)
            return
        source = iter(items)
        window: deque[tuple[list[Item], Future]] = deque()

        def submit() -> bool:
            batch = list(islice(source, self.batch))
            if batch:
                window.append((batch, self._submit(batch)))
            return bool(batch)

        for _ in range(2 * self.workers):
            if not submit():
                break
        while window:
            batch, future = window.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:
                results = self._after_crash(batch, window)
            submit()
            yield from results

    def _after_crash(self, batch: list[Item],
                     window: deque[tuple[list[Item], Future]]) -> list[Result]:
        """A worker died: rerun the batch one image per task, resubmit what was in flight."""
        log.warning("a worker process died; retrying its %d images one by one", len(batch))
        self.close()
        results = []
        for item in batch:
            try:
                results += self._pool().submit(_run_batch, [item]).result()
            except BrokenProcessPool:
                self.close()
                results.append(("failed_worker_died",
                                 "the worker process died on this image (out of memory?)", None))
        pending = [b for b, _ in window]
        window.clear()
        window.extend((b, self._submit(b)) for b in pending)
        return results

    def _submit(self, batch: list[Item]) -> Future:
        """The batch's future; a pool that broke since the last result (a worker died while
        this batch waited) gives a failed future, handled in order like any other crash."""
        try:
            return self._pool().submit(_run_batch, batch)
        except BrokenProcessPool as broken:
            failed: Future = Future()
            failed.set_exception(broken)
            return failed
