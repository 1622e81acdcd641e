"""The file store: bytes of every post's original, sample and preview, with an LRU cache.

Rendering is deterministic, so the cache only saves time: the md5 listed by the APIs is computed
from the same bytes the file server sends. Renders run on a thread pool (Pillow releases the GIL).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import replace

from . import render
from .world import IMAGE_EXTS, Post, World


class FileStore:
    def __init__(self, world: World, cache_bytes: int = 256 << 20):
        self.world = world
        self._cache: OrderedDict[tuple[int, str], bytes] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._size = 0
        self._md5: dict[int, str] = {}
        self._lock = threading.Lock()

    def md5(self, post: Post) -> str:
        """md5 of the post's original file (rendered once, then remembered)."""
        with self._lock:
            known = self._md5.get(post.id)
        if known is None:
            known = hashlib.md5(self.get(post, "original")).hexdigest()
            with self._lock:
                self._md5[post.id] = known
        return known

    def get(self, post: Post, variant: str) -> bytes:
        """The bytes of one variant of a post's file."""
        key = (post.id, variant)
        with self._lock:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
                return data
        data = self._render(post, variant)
        with self._lock:
            if key not in self._cache and len(data) <= self._cache_bytes // 4:
                self._cache[key] = data
                self._size += len(data)
                while self._size > self._cache_bytes:
                    _, old = self._cache.popitem(last=False)
                    self._size -= len(old)
        return data

    def _picture(self, post: Post) -> render.Image.Image:
        """The post's picture; a re-upload shows its parent's, resized or with a note."""
        shown = self.world.picture_of(post) if post.file_ext in IMAGE_EXTS else post
        im = render.render_image(shown, self.world.seed, self.world.object_count(shown))
        if shown is not post:
            im = render.reupload(im, (post.width, post.height), post.reupload == "edited")
        return im

    def _render(self, post: Post, variant: str) -> bytes:
        ext = post.file_ext
        if variant == "original" and ext not in IMAGE_EXTS:
            return render.stand_in(ext, post.id)
        if variant == "sample" and ext == "zip":
            return render.stand_in("webm", post.id)
        if ext not in IMAGE_EXTS:          # previews of videos and flash: a grey tile
            post = _grey_stand_in(post)
        im = self._picture(post)
        if variant == "original":
            if post.mislabeled:
                ext = {"jpg": "png", "png": "jpg"}[ext]
            return render.encode(im, ext, post.id)
        box = (render.SAMPLE_WIDTH, 10**6) if variant == "sample" else (render.PREVIEW_BOX,) * 2
        return render.encode(render.resized(im, box), "jpg", post.id)


def _grey_stand_in(post: Post) -> Post:
    return replace(post, width=min(post.width, 360), height=min(post.height, 360), rgba=False)
