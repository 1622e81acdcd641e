"""The middleware every request of the emulator passes: the request log, the user-agent filter,
the rate limit and the injected faults of :mod:`.faults`."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from .faults import (
    CHALLENGE,
    FAULT,
    FILE_ONLY,
    KINDS,
    NGINX_429,
    QUERY_CANCELED,
    FaultConfig,
    InjectedReset,
    RequestLog,
    is_blocked_agent,
)
from .state import EMULATOR


async def _delay(request: web.Request, seconds: float) -> None:
    """Sleep ``seconds``, or less when the client hangs up first (a client that timed out):
    a test can ask for a delay far past its client's timeout and not wait for it."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(left, 0.02))


@web.middleware
async def fault_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Log the request, then answer it with a fault when one applies, else with ``handler``
    (requests not yet answered are counted in ``log.in_flight``)."""
    log: RequestLog = request.config_dict[EMULATOR].log
    log.in_flight += 1
    try:
        return await _faulty(request, handler)
    finally:
        log.in_flight -= 1


async def _faulty(request: web.Request, handler) -> web.StreamResponse:
    emu = request.config_dict[EMULATOR]
    config: FaultConfig = emu.faults
    log: RequestLog = emu.log
    url = str(request.rel_url)
    agent = request.headers.get("User-Agent", "")
    client = request.remote or "?"
    log.attempts[url] += 1
    attempt = log.attempts[url]
    entry = {"t": time.time(), "client": client, "method": request.method,
             "path": request.path, "query": request.query_string, "agent": agent}
    control = request.path.startswith("/_emulator")
    is_file = _looks_like_file(request.path)
    fault = None
    response: web.StreamResponse | None = None
    if not control:
        if config.block_browser_ua and is_blocked_agent(agent):
            fault = "ua_blocked"
            response = web.Response(status=403, text=CHALLENGE, content_type="text/html",
                                    headers={"Server": "cloudflare",
                                             "cf-mitigated": "challenge"})
        elif config.rate_limit > 0 and not emu.bucket.take(client, config.rate_limit,
                                                            config.burst):
            fault = "rate_limited"
            response = web.Response(status=429, text=NGINX_429, content_type="text/html")
        else:
            fault = next((k for k in KINDS if (is_file or k not in FILE_ONLY)
                          and config.hits(k, url, attempt)), None)
    if is_file and not control and response is None:
        await emu.gate.through()
    if fault == "slow":
        await _delay(request, config.slow_seconds)
    elif fault == "reset":
        log.add(**entry, status=0, fault=fault)
        request.transport.close()
        raise InjectedReset("emulator: injected connection reset")
    elif fault == "server_error":
        status = (500, 502, 503, 504)[attempt % 4]
        headers = {"Retry-After": str(config.retry_after)} if status == 503 else {}
        if status == 500 and request.path.startswith("/danbooru") and not is_file:
            response = web.json_response(QUERY_CANCELED, status=500)
        else:
            response = web.Response(status=status, text=f"<html><body><h1>{status}</h1>"
                                    "</body></html>", content_type="text/html", headers=headers)
    elif fault == "rate_429":
        headers = {"Retry-After": str(config.retry_after)} if attempt % 2 else {}
        response = web.Response(status=429, text=NGINX_429, content_type="text/html",
                                headers=headers)
    elif fault == "html_200":
        response = web.Response(status=200, text="<!DOCTYPE html><html><body>Error: the file "
                                "is temporarily unavailable.</body></html>",
                                content_type="text/html")
    elif fault == "empty":
        response = web.Response(status=200, body=b"", content_type="image/jpeg")
    elif fault == "not_found":
        response = web.Response(status=404, text="<html><body>404 Not Found</body></html>",
                                content_type="text/html")
    if response is None:
        request[FAULT] = fault
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            log.add(**entry, status=exc.status, fault=fault)
            raise
    log.add(**entry, status=response.status, fault=fault)
    return response


def _looks_like_file(path: str) -> bool:
    return "." in path.rsplit("/", 1)[-1] and not path.endswith((".json", ".xml", ".php"))
