"""The review app on a loopback port, and a JSON POST to it."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request

from train.tag.review.cli import serve


class Served:
    """The app on a free loopback port, in a thread with its own event loop."""

    def __init__(self, app):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner, self.url = asyncio.run_coroutine_threadsafe(
            serve(app, "127.0.0.1", 0), self.loop).result(30)

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def post_json(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
