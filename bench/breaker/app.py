#!/usr/bin/env python3
"""The overload benchmarks' application server: a model of an app with a
fixed pool of workers (threads, database connections), not of nginx.

    app.py --port 8001 --workers 8 --delay-ms 5

Every request waits, first come first served, for one of WORKERS slots,
holds it DELAY ms (a sleep: the slot is busy, the CPU is not), then gets
its answer: "200 OK" and a small JSON body.  So the app serves at most
WORKERS / DELAY requests a second, and what arrives faster waits in its
queue, which has no bound, as in an app server's accept queue and thread
pool.  A request whose client (the nginx in front) has gone away while it
waited is still worked on when its turn comes, as in an app that does not
check for that: the wasted work behind a congestion collapse, counted as
"abandoned" in the stats (its socket is closed at once, though).

Control, answered at once (no slot):
    GET /__app/set?delay_ms=100      the service time from now on
    GET /__app/stats                 JSON: served, abandoned, queued, ...

Standard library only.  Listens on 127.0.0.1; exits on SIGTERM/SIGINT, when
the process that started it (--parent PID) is gone, or after --lifetime
seconds (default 600).
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from urllib.parse import parse_qs, urlsplit


class Job:
    __slots__ = ("done", "left")

    def __init__(self, done):
        self.done = done
        self.left = False


class App:
    def __init__(self, workers, delay_ms, status):
        self.workers = workers
        self.delay = delay_ms / 1000.0
        self.status = status
        self.queue = asyncio.Queue()
        self.served = 0
        self.abandoned = 0
        self.max_queued = 0
        self.connections = 0

    async def worker(self):
        # one slot: take the oldest waiting request, hold the slot for
        # the service time (even if its client has left: the app does not
        # know), hand the request back to its connection
        while True:
            job = await self.queue.get()
            await asyncio.sleep(self.delay)
            self.served += 1
            if job.left:
                self.abandoned += 1
            elif not job.done.done():
                job.done.set_result(None)

    def stats(self):
        return {
            "workers": self.workers,
            "delay_ms": self.delay * 1000.0,
            "served": self.served,
            "abandoned": self.abandoned,
            "queued": self.queue.qsize(),
            "max_queued": self.max_queued,
            "connections": self.connections,
        }

    def control(self, target):
        url = urlsplit(target)
        if url.path == "/__app/set":
            q = parse_qs(url.query)
            if "delay_ms" in q:
                self.delay = float(q["delay_ms"][0]) / 1000.0
            return 200, json.dumps(self.stats())
        if url.path == "/__app/stats":
            return 200, json.dumps(self.stats())
        return 404, '{"error":"unknown control path"}'

    async def work(self, reader):
        """Queue a request and wait for a worker to have served it; False
        if the client closed the connection meanwhile (the request stays
        queued and is worked on all the same; the socket is closed at
        once, so that a long queue does not hold thousands of them)."""
        job = Job(asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        self.max_queued = max(self.max_queued, self.queue.qsize())
        # nginx sends nothing more on the connection before the answer
        # (no pipelining): a read that ends is the client leaving
        eof = asyncio.ensure_future(reader.read(1))
        await asyncio.wait((job.done, eof),
                           return_when=asyncio.FIRST_COMPLETED)
        if job.done.done():
            # the read must be over before the next one starts
            eof.cancel()
            try:
                await eof
            except asyncio.CancelledError:
                pass
            return True
        job.left = True
        return False

    async def serve(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    return
                target, close = head
                if target.startswith("/__app/"):
                    status, body = self.control(target)
                else:
                    if not await self.work(reader):
                        return
                    status = self.status
                    body = '{"ok":%s,"from":"bench app"}' % (
                        "true" if status < 400 else "false")
                writer.write(response(status, body, close))
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError):
            return
        finally:
            self.connections -= 1
            writer.close()


REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}


def response(status, body, close):
    body = body.encode() + b"\n"
    return ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n%s\r\n" % (
                status, REASONS.get(status, "Status"), len(body),
                "Connection: close\r\n" if close else "")).encode() + body


async def read_head(reader):
    """The request target and whether the connection closes after the
    answer; None at the end of the connection.  GETs only: a body is not
    read."""
    try:
        data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line")
    close = parts[2] == "HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "connection":
            close = value.strip().lower() == "close"
    return parts[1], close


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--delay-ms", type=float, default=5.0)
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--parent", type=int, default=0,
                   help="exit when this process is gone")
    p.add_argument("--lifetime", type=float, default=600.0)
    a = p.parse_args()

    app = App(a.workers, a.delay_ms, a.status)
    for _ in range(a.workers):
        asyncio.ensure_future(app.worker())
    server = await asyncio.start_server(app.serve, "127.0.0.1", a.port,
                                        backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + a.lifetime
    async with server:
        while not stop.is_set() and time.monotonic() < deadline:
            if a.parent and not os.path.exists("/proc/%d" % a.parent):
                break
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
    print(json.dumps(app.stats()), file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
