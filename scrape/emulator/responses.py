"""What the site dialects answer with: files (Content-Length, ETag, Range, the file faults),
JSON bodies, and Ruby's reading of numbers.

``serve_file`` serves one variant of a post's file from the emulator's `FileStore`; the listed
md5 of a post is the md5 of the bytes it serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import re

from aiohttp import web

from .faults import FAULT
from .state import EMULATOR, Emulator
from .world import Post


def file_base(request: web.Request, prefix: str) -> str:
    """Where a site's listed file URLs point: the files address if set, else the API's."""
    emu: Emulator = request.config_dict[EMULATOR]
    root = emu.files_url or f"{request.scheme}://{request.host}"
    return f"{root}/{prefix}"


async def serve_file(request: web.Request, post: Post | None, variant: str,
                     content_type: str | None = None) -> web.StreamResponse:
    """Serve one variant of a post's file with ETag, Range and the file faults."""
    if post is None:
        raise web.HTTPNotFound(text="404 Not Found")
    emu: Emulator = request.app[EMULATOR]
    data = await asyncio.get_running_loop().run_in_executor(None, emu.store.get, post, variant)
    fault = request.get(FAULT)
    if fault == "md5_mismatch":
        data = data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) \
            + data[len(data) // 2 + 1:]
    etag = '"' + hashlib.md5(data).hexdigest() + '"'
    ctype = content_type or mimetypes.guess_type(request.path)[0] or "application/octet-stream"
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "max-age=31536000"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    status, body = 200, data
    range_header = request.headers.get("Range")
    if range_header:
        span = _parse_range(range_header, len(data))
        if span is None:
            return web.Response(status=416, headers={**headers,
                                                     "Content-Range": f"bytes */{len(data)}"})
        start, end = span
        status, body = 206, data[start:end + 1]
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    if fault == "truncate":
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = ctype
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        request.transport.close()
        return response
    return web.Response(status=status, body=body, content_type=ctype, headers=headers)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), (int(last) if last else size - 1)
    except ValueError:
        return None
    if start >= size or start > end:
        return None
    return start, min(end, size - 1)


_RUBY_INT = re.compile(r"^\s*([-+]?\d+)")


def ruby_to_i(text: str | None, default: int = 0) -> int:
    """Ruby's String#to_i, as the Rails sites (Danbooru, Moebooru) read numbers: the leading
    integer, or 0; `default` when the parameter is absent."""
    if text is None:
        return default
    m = _RUBY_INT.match(text)
    return int(m.group(1)) if m else 0


def json_response(data, status: int = 200, **kwargs) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, ensure_ascii=False),
                        content_type="application/json", **kwargs)
