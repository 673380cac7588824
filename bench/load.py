"""A small HTTP load generator for gunicorn sync servers: raw sockets, pre-encoded requests.

Each request is the bytes of one HTTP/1.1 request built before the clock starts; only the
Idempotency-Key is spliced in per request (so every request is a new decision). A request is: connect,
send, read until the server closes (gunicorn's sync workers answer ``Connection: close``), look at the
status line. No HTTP library sits between the clock and the socket.

Concurrency comes from several processes (so the generator is not held back by one GIL), each with
threads; every client runs closed-loop (its next request leaves when its previous answer arrived). The
generator reports its own CPU time, so the share of the 2-core machine it took from the server is known.
Only the standard library is imported here: ``spawn`` children start quickly.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

Template = tuple[bytes, bytes]  # the request bytes before and after the Idempotency-Key value


def templates(port: int, path: str, bodies: list[bytes], headers: dict[str, str] | None = None,
              method: str = "POST") -> list[Template]:
    """Pre-encode one request per body; the Idempotency-Key value goes between the two halves."""
    out = []
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    for body in bodies:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            "Idempotency-Key: "
        ).encode()
        out.append((head, b"\r\n\r\n" + body))
    return out


def get_template(port: int, path: str) -> list[Template]:
    """A body-less GET (the key header is sent and ignored)."""
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nIdempotency-Key: ".encode()
    return [(head, b"\r\n\r\n")]


def exchange(port: int, raw: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    """Send one request on a new connection; return the status code and the whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(raw)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    response = b"".join(chunks)
    try:
        return int(response[9:12]), response
    except ValueError:
        return 0, response


def sequential(port: int, tmpl: list[Template], count: int, key_prefix: str) -> tuple[list[float], int]:
    """One closed-loop client: `count` requests one after another; return latencies (s) and non-expected answers."""
    latencies = []
    bad = 0
    for i in range(count):
        head, tail = tmpl[i % len(tmpl)]
        raw = head + f"{key_prefix}-{i}".encode() + tail
        t0 = time.perf_counter()
        status, _ = exchange(port, raw)
        latencies.append(time.perf_counter() - t0)
        if status not in (200, 201):
            bad += 1
    return latencies, bad


@dataclass
class WindowResult:
    """What the clients of one process saw during the measured window."""

    completed: int  # answers with the expected status that arrived inside the window
    failed: int  # errors or unexpected statuses inside the window
    latencies: list[float]  # of the completed requests, seconds
    cpu_s: float  # this process's user+system CPU time during the window
    warmup_completed: int
    statuses: dict[int, int]


def _client_loop(port: int, tmpl: list[Template], key_prefix: str, start: float, measure_from: float, end: float,
                 offset: int, out: list[Any]) -> None:
    completed = failed = warm = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    i = offset
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now < start:
            time.sleep(start - now)
            continue
        head, tail = tmpl[i % len(tmpl)]
        raw = head + f"{key_prefix}-{i}".encode() + tail
        i += 1
        t0 = time.monotonic()
        try:
            status, _ = exchange(port, raw)
        except OSError:
            status = 0
        t1 = time.monotonic()
        if t1 > end:
            break  # answered after the window closed: not counted
        if t0 < measure_from:
            warm += status in (200, 201)
            continue
        statuses[status] = statuses.get(status, 0) + 1
        if status in (200, 201):
            completed += 1
            latencies.append(t1 - t0)
        else:
            failed += 1
    out.append((completed, failed, latencies, warm, statuses))


def _process_main(port: int, tmpl: list[Template], key_prefix: str, threads: int, ready: Any, go: Any,
                  results: Any) -> None:
    ready.put(None)
    start, measure_from, end = go.get(timeout=300)
    out: list[Any] = []
    workers = [
        threading.Thread(
            target=_client_loop,
            args=(port, tmpl, f"{key_prefix}-t{t}", start, measure_from, end, t * 7, out),
            daemon=True,
        )
        for t in range(threads)
    ]
    for w in workers:
        w.start()
    # CPU of this process over the measured window (the threads sleep until `start`).
    time.sleep(max(0.0, measure_from - time.monotonic()))
    cpu0 = _cpu()
    for w in workers:
        w.join()
    cpu1 = _cpu()
    statuses: dict[int, int] = {}
    for *_, s in out:
        for k, v in s.items():
            statuses[k] = statuses.get(k, 0) + v
    results.put(WindowResult(
        completed=sum(o[0] for o in out),
        failed=sum(o[1] for o in out),
        latencies=[x for o in out for x in o[2]],
        cpu_s=cpu1 - cpu0,
        warmup_completed=sum(o[3] for o in out),
        statuses=statuses,
    ))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Throughput:
    rps: float
    completed: int
    failed: int
    window_s: float
    p50_ms: float
    p99_ms: float
    generator_cpu_s: float
    statuses: dict[int, int]


def closed_loop(port: int, tmpl: list[Template], *, key_prefix: str, clients: int, processes: int,
                warmup_s: float, window_s: float, on_window: Any = None) -> Throughput:
    """Run `clients` closed-loop clients over `processes` processes; count answers inside the window.

    `on_window(phase)` is called in this process with "start" and "end" at the window's edges (to sample
    the server's CPU time); this process only sleeps meanwhile.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    per = [clients // processes + (1 if p < clients % processes else 0) for p in range(processes)]
    ready, go = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_process_main, args=(port, tmpl, f"{key_prefix}-p{p}", n, ready, go, results), daemon=True)
        for p, n in enumerate(per) if n
    ]
    for p in procs:
        p.start()
    try:
        # The clock starts once every child runs (a spawned child first imports the parent's main module, which
        # takes seconds on a busy machine when that module imports much); CLOCK_MONOTONIC is machine-wide.
        for _ in procs:
            ready.get(timeout=300)
        start = time.monotonic() + 0.3
        measure_from = start + warmup_s
        end = measure_from + window_s
        for _ in procs:
            go.put((start, measure_from, end))
        time.sleep(max(0.0, measure_from - time.monotonic()))
        if on_window:
            on_window("start")
        time.sleep(max(0.0, end - time.monotonic()))
        if on_window:
            on_window("end")
        got = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    latencies = sorted(x for r in got for x in r.latencies)
    statuses: dict[int, int] = {}
    for r in got:
        for k, v in r.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    completed = sum(r.completed for r in got)
    return Throughput(
        rps=completed / window_s,
        completed=completed,
        failed=sum(r.failed for r in got),
        window_s=window_s,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        generator_cpu_s=sum(r.cpu_s for r in got),
        statuses=statuses,
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


def median(values: list[float]) -> float:
    return float(statistics.median(values))
