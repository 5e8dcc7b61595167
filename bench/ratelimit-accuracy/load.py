#!/usr/bin/env python3
"""Open-loop HTTP load for bench/ratelimit-accuracy.sh: one client key,
requests at a fixed schedule whatever the servers answer, spread round
robin over several nginx nodes.

    load.py --target 127.0.0.1:8001 --target 127.0.0.1:8002 \\
        --rate 600 --duration 10 --header 'X-Api-Key: k1'

Request i is due at t0 + i / rate (i = 0, 1, ... while i / rate <
duration) and goes to target i mod N.  With --arrivals poisson the same
number of requests are due at random times instead, uniform over the
duration and sorted (a Poisson process with that many arrivals; seeded
by --seed, so a run can be repeated): the schedule is still fixed before
the start, and evenly spaced arrivals can no longer line up with the
limit's own period (at 3 times the rate over 3 nodes, every admitted
request may fall on the same node).  It is written on an idle
kept-alive connection to that target; when none is idle a new one is
opened (up to --conns per target; a few are opened before t0), and past
that it is pipelined behind the connection with the fewest requests in
flight.  No request ever waits for another's answer before it is sent:
the load is open loop.  When the loop wakes up late it sends every
request already due at once (their lateness is measured, see below).

The send time of a request is when its bytes were handed to the kernel
(transport.write on a connected socket: asyncio writes at once when the
socket's buffer is empty), on the monotonic clock.  A request pipelined
behind an answer that closes its connection (Connection: close) was not
processed: it is sent again on another connection, and its send time is
the second one.

After the last request is sent, the answers still missing get --timeout
seconds; what is still missing then counts as a timeout.

Output, one line of key=value fields on stdout:
    offered       requests scheduled (rate x duration)
    sent          requests written to a connection
    unsent        scheduled but never written (none unless the run broke)
    ok            answered 200 (admitted)
    r429, r503    answered 429 / 503 (refused)
    other         answered anything else (codes= has the detail)
    errors        connection failed (the request was then never sent),
                  closed before the answer, or an unreadable answer
    timeouts      no answer within --timeout after the last send
    first_send, last_send, elapsed
                  monotonic seconds of the first and last send, and the
                  difference (the window of the limit)
    last_ok_recv  when the last 200 was read, relative to first_send
    rate_sent     (sent - 1) / elapsed: the send rate achieved
    lag_p50, lag_p99, lag_max
                  how late requests were sent, ms after their due time
    lat_p50, lat_p99, lat_max
                  answer time - send time, ms, over the answered ones
    node_ok       200s per target, comma-separated, in --target order
    conns         connections opened
    codes         status:count,...
Standard library only.
"""

import argparse
import asyncio
import collections
import math
import random
import resource
import sys
import time


class Node:
    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.conns = []         # open or opening connections
        self.idle = []          # connected, nothing in flight
        self.ok = 0


class Conn(asyncio.Protocol):
    """One kept-alive connection: requests written in order, answers read
    in order (HTTP/1.1 pipelining when more than one is in flight)."""

    def __init__(self, gen, node):
        self.gen = gen
        self.node = node
        self.transport = None
        self.buf = bytearray()
        self.inflight = collections.deque()    # request numbers
        self.queued = []        # written once connected
        self.usable = True      # the server did not say Connection: close

    def connection_made(self, transport):
        self.transport = transport
        queued, self.queued = self.queued, []
        for i in queued:
            self.write(i)
        if not self.inflight and self.usable:
            self.node.idle.append(self)

    def write(self, i):
        if self.transport is None:
            self.queued.append(i)
            return
        if self.transport.is_closing():
            # closed under us (by the server, seen a moment ago): this
            # request goes to another connection
            self.usable = False
            if self in self.node.conns:
                self.node.conns.remove(self)
            self.gen.dispatch(i, again=True)
            return
        self.inflight.append(i)
        self.transport.write(self.gen.request)
        self.gen.sent_at(i, time.monotonic())

    def data_received(self, data):
        self.buf += data
        while self.inflight:
            try:
                answer = self.parse()
            except (ProtocolError, ValueError):
                self.fail()         # its requests count as errors
                return
            if answer is None:
                break
            status, close = answer
            self.gen.answer(self.inflight.popleft(), status, self.node)
            if close:
                # no new request on it; its place goes to a new one, and
                # the requests pipelined behind this answer were not
                # processed (the server said it closes): they are sent
                # again on another connection
                self.usable = False
                if self in self.node.conns:
                    self.node.conns.remove(self)
                again = list(self.inflight)
                self.inflight.clear()
                for i in again:
                    self.gen.dispatch(i, again=True)
                break
        if len(self.buf) > 1 << 20:
            self.fail()
            return
        if not self.usable and not self.inflight:
            self.transport.close()
        elif self.usable and not self.inflight and self not in self.node.idle:
            self.node.idle.append(self)

    def parse(self):
        """(status, close) of the first complete answer in the buffer,
        which it consumes; None while it is incomplete."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise ProtocolError(lines[0])
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
        pos = end + 4
        if chunked:
            while True:
                eol = self.buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
                pos = eol + 2 + size + 2
                if len(self.buf) < pos:
                    return None
                if size == 0:
                    break
        else:
            pos += length
            if len(self.buf) < pos:
                return None
        del self.buf[:pos]
        return status, close

    def fail(self):
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc):
        self.usable = False
        if self in self.node.idle:
            self.node.idle.remove(self)
        if self in self.node.conns:
            self.node.conns.remove(self)
        for i in list(self.inflight) + self.queued:
            self.gen.error(i)
        self.inflight.clear()
        self.queued = []


class ProtocolError(Exception):
    pass


class Generator:
    def __init__(self, a):
        self.a = a
        self.loop = asyncio.get_running_loop()
        self.nodes = []
        for t in a.target:
            host, _, port = t.rpartition(":")
            self.nodes.append(Node(host, int(port)))
        headers = "".join("%s\r\n" % h for h in a.header)
        self.request = ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
            a.path, a.target[0], headers)).encode()
        self.total = int(math.ceil(a.duration * a.rate - 1e-9))
        if a.arrivals == "poisson":
            rnd = random.Random(a.seed)
            self.offsets = sorted(rnd.uniform(0.0, a.duration)
                                  for _ in range(self.total))
            self.offsets[0] = 0.0       # the window starts with the run
        else:
            self.offsets = [i / a.rate for i in range(self.total)]
        self.due = [0.0] * self.total
        self.send = [None] * self.total
        self.recv = [None] * self.total
        self.status = [None] * self.total       # int, "error"
        self.outstanding = 0
        self.over = False       # the run is over: nothing counts any more
        self.conns_opened = 0
        self.drained = None

    # --- connections ---------------------------------------------------

    def open_conn(self, node):
        conn = Conn(self, node)
        node.conns.append(conn)
        self.conns_opened += 1

        async def connect():
            try:
                await self.loop.create_connection(
                    lambda: conn, node.host, node.port)
            except OSError:
                conn.connection_lost(None)
        self.loop.create_task(connect())
        return conn

    def dispatch(self, i, again=False):
        node = self.nodes[i % len(self.nodes)]
        if not again:
            self.outstanding += 1
        if node.idle:
            conn = node.idle.pop()
        elif len(node.conns) < self.a.conns:
            conn = self.open_conn(node)
        elif node.conns:
            conn = min(node.conns,
                       key=lambda c: len(c.inflight) + len(c.queued))
        else:
            conn = self.open_conn(node)
        conn.write(i)

    # --- outcomes ------------------------------------------------------

    def sent_at(self, i, now):
        self.send[i] = now

    def settle(self, i, status):
        if self.status[i] is not None or self.over:
            return
        self.status[i] = status
        self.outstanding -= 1
        if self.outstanding == 0 and self.drained is not None:
            self.drained.set()

    def answer(self, i, status, node):
        self.recv[i] = time.monotonic()
        if status == 200:
            node.ok += 1
        self.settle(i, status)

    def error(self, i):
        self.settle(i, "error")

    # --- the schedule --------------------------------------------------

    async def warm_up(self):
        """Open a few connections to every target before t0 and wait
        for them, so that the first requests are not late."""
        for node in self.nodes:
            for _ in range(min(self.a.conns, self.a.preopen)):
                self.open_conn(node)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if all(len(n.idle) == len(n.conns) for n in self.nodes):
                break
            await asyncio.sleep(0.01)
        if not all(n.idle for n in self.nodes):
            print("load.py: cannot connect to every target", file=sys.stderr)
            sys.exit(2)

    async def run(self):
        await self.warm_up()
        offsets = self.offsets
        t0 = time.monotonic() + 0.05
        i = 0
        while i < self.total:
            now = time.monotonic()
            due = t0 + offsets[i]
            if due > now:
                await asyncio.sleep(due - now)
                continue
            # everything due by now, in order
            while i < self.total and t0 + offsets[i] <= now:
                self.due[i] = t0 + offsets[i]
                self.dispatch(i)
                i += 1
        # the answers still missing get --timeout seconds after the last
        # send (a connection still connecting counts from now)
        if self.outstanding:
            self.drained = asyncio.Event()
            try:
                await asyncio.wait_for(self.drained.wait(), self.a.timeout)
            except asyncio.TimeoutError:
                pass
        # what is still missing is a timeout, not the error that closing
        # its connection below would make of it
        self.over = True
        for node in self.nodes:
            for conn in list(node.conns):
                if conn.transport is not None:
                    conn.transport.close()

    def report(self):
        counts = collections.Counter()
        codes = collections.Counter()
        lags, lats = [], []
        for i in range(self.total):
            s = self.status[i]
            if s is None:
                if self.send[i] is not None:
                    counts["timeouts"] += 1
            elif s == "error":
                counts["errors"] += 1
            else:
                codes[s] += 1
                if s == 200:
                    counts["ok"] += 1
                elif s == 429:
                    counts["r429"] += 1
                elif s == 503:
                    counts["r503"] += 1
                else:
                    counts["other"] += 1
            if self.send[i] is not None:
                lags.append(self.send[i] - self.due[i])
                if self.recv[i] is not None:
                    lats.append(self.recv[i] - self.send[i])
        sends = [t for t in self.send if t is not None]
        first, last = (min(sends), max(sends)) if sends else (0.0, 0.0)
        elapsed = last - first
        oks = [self.recv[i] for i in range(self.total) if self.status[i] == 200]
        fields = [
            ("offered", self.total), ("sent", len(sends)),
            ("ok", counts["ok"]), ("r429", counts["r429"]),
            ("r503", counts["r503"]), ("other", counts["other"]),
            ("errors", counts["errors"]), ("timeouts", counts["timeouts"]),
            ("unsent", sum(1 for i in range(self.total)
                           if self.send[i] is None and self.status[i] is None)),
            ("first_send", "%.6f" % first), ("last_send", "%.6f" % last),
            ("elapsed", "%.6f" % elapsed),
            ("last_ok_recv", "%.6f" % (max(oks) - first) if oks else "-"),
            ("rate_sent", "%.2f" % ((len(sends) - 1) / elapsed)
             if elapsed > 0 else "-"),
            ("lag_p50", ms(pct(lags, 50))), ("lag_p99", ms(pct(lags, 99))),
            ("lag_max", ms(max(lags) if lags else None)),
            ("lat_p50", ms(pct(lats, 50))), ("lat_p99", ms(pct(lats, 99))),
            ("lat_max", ms(max(lats) if lats else None)),
            ("node_ok", ",".join(str(n.ok) for n in self.nodes)),
            ("conns", self.conns_opened),
            ("codes", ",".join("%s:%d" % kv for kv in sorted(codes.items()))
             or "-"),
        ]
        print(" ".join("%s=%s" % kv for kv in fields))


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1,
                      max(0, math.ceil(p / 100.0 * len(values)) - 1))]


def ms(v):
    return "-" if v is None else "%.2f" % (v * 1000.0)


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", action="append", required=True,
                   help="host:port of a node (repeat: round robin)")
    p.add_argument("--rate", type=float, required=True,
                   help="requests per second, over all the targets")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--header", action="append", default=[],
                   help="a request header line, 'Name: value'")
    p.add_argument("--arrivals", choices=("uniform", "poisson"),
                   default="uniform")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--path", default="/")
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--conns", type=int, default=32,
                   help="connections per target at most")
    p.add_argument("--preopen", type=int, default=4,
                   help="connections per target opened before the start")
    a = p.parse_args()
    if a.rate <= 0 or a.duration <= 0 or a.conns < 1:
        p.error("--rate, --duration and --conns must be positive")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.conns * len(a.target) + 256)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    gen = Generator(a)
    await gen.run()
    gen.report()


if __name__ == "__main__":
    asyncio.run(main())
