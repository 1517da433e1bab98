"""A tiny SSE upstream that holds every stream open: first event, a pause, then the rest.

nginx cannot keep a canned stream open, so the 1,000-open-streams measurement
points a separate spangate at this server.
Run: `python -m bench.slow_stream --port P --hold-s 8`.

With `--gap-ms G` it sends each of the canned stream's events in a write of its
own, G ms apart, as a provider streaming tokens does (bench/chunks.py).
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from bench import canned

HOLD_S = web.AppKey("hold_s", float)
GAP_S = web.AppKey("gap_s", float)


async def stream(request: web.Request) -> web.StreamResponse:
    await request.read()
    events = canned.sse_events()
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    await out.write(events[0])
    gap = request.app[GAP_S]
    if gap > 0:
        for event in events[1:]:  # the end follows the last event at once, as a provider's
            await asyncio.sleep(gap)
            await out.write(event)
    else:
        await asyncio.sleep(request.app[HOLD_S])
        await out.write(b"".join(events[1:]))
    await out.write_eof()
    return out


async def _serve(port: int, hold_s: float, gap_s: float) -> None:
    app = web.Application()
    app[HOLD_S] = hold_s
    app[GAP_S] = gap_s
    # Any path: the nginx upstream passes chunked streams on under its own prefix.
    app.router.add_post("/{path:.*}", stream)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hold-s", type=float, default=8.0)
    parser.add_argument("--gap-ms", type=float, default=0.0, help="one write per event")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.hold_s, args.gap_ms / 1e3))


if __name__ == "__main__":
    main()
