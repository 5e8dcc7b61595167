#!/usr/bin/env python3
"""Open-loop HTTP load for the overload benchmarks: requests are sent at a
fixed rate whatever the server does, as many independent clients would
(wrk's closed loop slows down with the server and hides an overload).

    load.py --url http://127.0.0.1:8080/ --duration 20 --timeout 1 \\
        --stream anon:1000:X-Tier=anonymous --stream premium:40:X-Tier=premium \\
        --phase 5 --at 5:http://127.0.0.1:8001/__app/set?delay_ms=100

--stream NAME:RATE[:HEADER=VALUE[,HEADER=VALUE...]]  requests a second,
    evenly spaced, with those request headers (default: one stream "all"
    of --rate a second).
--phase T  (repeatable) splits the results at T seconds: a request counts
    in the phase in which it was due to be sent.
--at T:URL  GET URL at T seconds (the benchmark's "the app turns slow").
--timeout  a client gives up after that many seconds (closes its
    connection): counted as a timeout, not a success, whatever comes later.

Latency is measured from the moment a request was due, not from when it
could be sent (no coordinated omission); how late the client itself sent
them (its 99th percentile) is printed on stderr, with a warning above
50 ms.  Connections are kept alive and
reused, a new one is opened when none is idle; a request that fails on a
reused connection before any byte of the answer is sent again once on a
new one.  At most --max-open requests are outstanding: one due beyond
that is not sent and counted as "unsent" (the client machine saturated).

Output, one line per stream and phase, then one per stream for the whole
run (phase "all"), whitespace-separated:
    stream phase seconds sent ok shed other timeout error unsent
        p50_ok p99_ok p99_admitted codes
ok = 2xx; shed = the --shed-status (default 503); other = any other
status; p50_ok and p99_ok are over the 2xx answers (ms); p99_admitted is
over every request not shed (timeouts and errors count as infinitely
slow: "inf"); codes = status:count,... ; "-" where there is nothing.
Standard library only.
"""

import argparse
import asyncio
import math
import resource
import sys
import time
from urllib.parse import urlsplit


class Stream:
    def __init__(self, spec, default_rate):
        parts = spec.split(":", 2)
        self.name = parts[0]
        self.rate = float(parts[1]) if len(parts) > 1 else default_rate
        self.headers = []
        if len(parts) > 2 and parts[2]:
            for h in parts[2].split(","):
                name, _, value = h.partition("=")
                self.headers.append((name, value))
        if not self.name or self.rate <= 0:
            raise ValueError("bad --stream %r" % spec)
        self.results = []      # (due time, latency or None, outcome)


class Client:
    def __init__(self, url, timeout, max_open):
        u = urlsplit(url)
        self.host = u.hostname
        self.port = u.port or 80
        self.path = (u.path or "/") + ("?" + u.query if u.query else "")
        self.hostport = "%s:%d" % (self.host, self.port)
        self.timeout = timeout
        self.max_open = max_open
        self.idle = []
        self.outstanding = 0

    def request_bytes(self, stream):
        h = "".join("%s: %s\r\n" % kv for kv in stream.headers)
        return ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
            self.path, self.hostport, h)).encode()

    async def exchange(self, conn, data):
        reader, writer = conn
        writer.write(data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                close = value == "close"
        if chunked:
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await reader.readexactly(length)
        return status, close

    async def one(self, data):
        """The status of one request's answer, with no time limit (the
        caller sets one); a kept-alive connection found closed is
        replaced once."""
        for attempt in (0, 1):
            reused = bool(self.idle)
            if reused:
                conn = self.idle.pop()
            else:
                conn = await asyncio.open_connection(self.host, self.port)
            try:
                status, close = await self.exchange(conn, data)
            except (ConnectionError, asyncio.IncompleteReadError):
                conn[1].close()
                if reused and attempt == 0:
                    continue        # a kept-alive connection the server closed
                raise
            except BaseException:
                # a timeout (cancelled) or a bad answer: this connection
                # is in an unknown state
                conn[1].transport.abort()
                raise
            if close:
                conn[1].close()
            else:
                self.idle.append(conn)
            return status
        raise ConnectionError("unreachable")

    async def send(self, stream, due, t0, shed_status):
        self.outstanding += 1
        try:
            status = await asyncio.wait_for(
                self.one(self.request_bytes(stream)), self.timeout)
            latency = time.monotonic() - (t0 + due)
            if latency > self.timeout:
                outcome = "timeout"     # late: the client had given up
            elif 200 <= status < 300:
                outcome = "ok"
            elif status == shed_status:
                outcome = "shed"
            else:
                outcome = "other"
            stream.results.append((due, latency, outcome, status))
        except asyncio.TimeoutError:
            stream.results.append((due, None, "timeout", None))
        except (OSError, ValueError, IndexError,
                asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            stream.results.append((due, None, "error", None))
        finally:
            self.outstanding -= 1


async def pace(client, stream, t0, duration, shed_status, tasks, lags):
    """Send stream's requests at their due times until duration; lags
    gets how late each was sent (the client's own delay)."""
    interval = 1.0 / stream.rate
    i = 0
    while True:
        due = i * interval
        if due >= duration:
            return
        wait = t0 + due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        lags.append(max(0.0, time.monotonic() - (t0 + due)))
        if client.outstanding >= client.max_open:
            stream.results.append((due, None, "unsent", None))
        else:
            tasks.add(asyncio.ensure_future(
                client.send(stream, due, t0, shed_status)))
        i += 1
        if len(tasks) > 4096:
            tasks.difference_update([t for t in tasks if t.done()])


async def get(url):
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
    writer.write(("GET %s%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                  % (u.path or "/", "?" + u.query if u.query else "",
                     u.netloc)).encode())
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return line.decode("latin-1").strip()


async def at(t0, when, url):
    await asyncio.sleep(max(0.0, t0 + when - time.monotonic()))
    try:
        line = await asyncio.wait_for(get(url), 5)
        print("# at %.1fs GET %s: %s" % (when, url, line), file=sys.stderr)
    except (OSError, asyncio.TimeoutError) as e:
        print("# at %.1fs GET %s failed: %s" % (when, url, e), file=sys.stderr)


def percentile(values, p):
    if not values:
        return "-"
    values = sorted(values)
    v = values[min(len(values) - 1, max(0, math.ceil(p / 100.0 * len(values)) - 1))]
    return "inf" if v == math.inf else "%.1f" % (v * 1000.0)


def report(stream, name, lo, hi):
    rs = [r for r in stream.results if lo <= r[0] < hi]
    count = {k: 0 for k in ("ok", "shed", "other", "timeout", "error",
                             "unsent")}
    codes = {}
    ok, admitted = [], []
    for due, latency, outcome, status in rs:
        count[outcome] += 1
        if status is not None:
            codes[status] = codes.get(status, 0) + 1
        if outcome == "ok":
            ok.append(latency)
        if outcome != "shed" and outcome != "unsent":
            admitted.append(latency if outcome in ("ok", "other")
                            else math.inf)
    print("%s %s %.1f %d %d %d %d %d %d %d %s %s %s %s" % (
        stream.name, name, hi - lo, len(rs), count["ok"], count["shed"],
        count["other"], count["timeout"], count["error"], count["unsent"],
        percentile(ok, 50), percentile(ok, 99), percentile(admitted, 99),
        ",".join("%d:%d" % kv for kv in sorted(codes.items())) or "-"))


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--stream", action="append", default=[])
    p.add_argument("--phase", type=float, action="append", default=[])
    p.add_argument("--at", action="append", default=[])
    p.add_argument("--shed-status", type=int, default=503)
    p.add_argument("--max-open", type=int, default=4000)
    a = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.max_open * 2 + 256)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    streams = [Stream(s, a.rate) for s in (a.stream or ["all"])]
    client = Client(a.url, a.timeout, a.max_open)
    tasks = set()
    t0 = time.monotonic() + 0.1
    lags = []
    jobs = [pace(client, s, t0, a.duration, a.shed_status, tasks, lags)
            for s in streams]
    for spec in a.at:
        when, _, url = spec.partition(":")
        jobs.append(at(t0, float(when), url))
    await asyncio.gather(*jobs)
    # the last requests get their full timeout
    if tasks:
        await asyncio.wait(tasks, timeout=a.timeout + 1)
    edges = [0.0] + sorted(t for t in a.phase if 0 < t < a.duration) \
        + [a.duration]
    for s in streams:
        for i in range(len(edges) - 1):
            report(s, "%g-%g" % (edges[i], edges[i + 1]), edges[i],
                   edges[i + 1])
        if len(edges) > 2:
            report(s, "all", 0.0, a.duration)
    for conn in client.idle:
        conn[1].close()
    # a client that could not keep up measured itself, not the server
    lag = percentile(lags, 99)
    print("# client: 99%% of the requests sent within %s ms of their due "
          "time" % lag, file=sys.stderr)
    if lags and sorted(lags)[int(0.99 * (len(lags) - 1))] > 0.05:
        print("# warning: the client fell behind (a busy machine): "
              "latencies include its delay", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
