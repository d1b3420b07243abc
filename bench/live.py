"""``python -m bench.live``: packet-to-alert latency of ``certwatch watch`` under load on lo.

Usage: ``python -m bench.live [--mbps 100] [--duration 20] [--sender auto|tcpreplay|python]
[--marker-interval 0.5]``. Needs root (AF_PACKET on lo).

1. Background traffic: ``tools.tlsgen``'s benchmark scenario (70% TLS 1.2 with a chain, 30%
   TLS 1.3, ``--app-segments`` full segments of server data per connection), enough for
   ``--duration`` seconds at ``--mbps``, generated with loopback addresses (servers
   127.77.0.x, clients 127.77.100-115.x: the IPv4 header checksums are the generator's) and
   kept in ``bench/.cache``. Only 127.77.0.0/16 is ever sent to, and only on lo.
2. ``certwatch watch --interface lo --bpf 'tcp and net 127.77.0.0/16'`` runs as a child;
   its alerts are read from its stdout pipe by a thread that stamps every line when it
   arrives (the command flushes each alert).
3. The background is sent onto lo at ``--mbps`` by ``tcpreplay`` when installed, else (or
   with ``--sender python``) by a Python AF_PACKET sender paced by bytes. Frames sent on
   lo come back as received frames addressed to another host, so the IP stack drops them
   (no replies, no RSTs) while the capture socket sees each once.
4. Meanwhile a marker connection is sent every ``--marker-interval`` seconds from another
   AF_PACKET socket: the tlsgen ``self-signed`` handshake with a unique SNI
   (``m<N>-<run>.marker.test``) and client port. Its send time is taken just before its
   first frame; its latency is the time its ``cert.self_signed`` alert line was read minus
   that (an upper bound: it includes the ~15 frames of the handshake itself).
5. At the end the watch gets SIGINT; its summary gives the packets it saw, the kernel's
   received/dropped counts, handshakes and alerts; ``wait4`` gives its CPU time.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.run import CACHE, ROOT
from sensor.capture import open_capture
from tools.tlsgen.connection import ConnectionSpec, conversation
from tools.tlsgen.pcap import Timing, tcp_frames, write_capture
from tools.tlsgen.scenarios import Options, build

NET = "127.77"
BPF = f"tcp and net {NET}.0.0/16"
MARKER_SERVER = (f"{NET}.251.1", 8443)
MARKER_SUFFIX = ".marker.test"
BYTES_PER_CONNECTION = 18_300  # the benchmark scenario with 10 app segments (measured)
SEED = 7
SETTLE_S = 5.0  # after the last marker, how long alerts are still waited for
READY_TIMEOUT_S = 30.0
SEND_CHUNK_S = 0.002  # the Python sender sleeps when it is this far ahead of the rate
_ALERT_SELF_SIGNED = b'"cert.self_signed"'


# -- traffic ----------------------------------------------------------------------------------

def loopback(address: tuple[str, int]) -> tuple[str, int]:
    """tlsgen's documentation addresses moved into 127.77.0.0/16, one to one: servers
    192.0.2.x -> 127.77.0.x; clients 10.1.s.h -> 127.77.s.h (s is 100-115 for the
    benchmark's servers, so the two never meet)."""
    host, port = address
    octets = host.split(".")
    if host.startswith("192.0.2."):
        return f"{NET}.0.{octets[3]}", port
    return f"{NET}.{octets[2]}.{octets[3]}", port


def background_capture(mbps: float, duration: float, app_segments: int) -> Path:
    """The background pcap for ``duration`` s at ``mbps`` (generated once, then cached)."""
    connections = max(100, int(mbps * 1e6 / 8 * duration / BYTES_PER_CONNECTION * 1.1))
    path = CACHE / f"live-{connections}x{app_segments}.pcap"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"generating {connections:,} background connections into {path.name} ...",
          flush=True)
    scenario = build("benchmark", Options(seed=SEED, connections=connections,
                                          app_segments=app_segments, concurrency=200))
    specs = (dataclasses.replace(s, client=loopback(s.client), server=loopback(s.server))
             for s in scenario.connections)
    partial = path.with_suffix(".partial")
    write_capture(partial, (conversation(s, SEED, scenario.timing.mss) for s in specs),
                  scenario.timing)
    partial.rename(path)
    return path


@functools.cache
def _marker_template() -> ConnectionSpec:
    # Building the scenario makes its keys and certificate (seconds of CPU): once.
    return build("self-signed").connections[0]


def marker_frames(index: int, run: str) -> tuple[str, list[bytes]]:
    """The ``index``-th marker: a self-signed TLS 1.2 handshake with its own SNI and client
    port. Returns its SNI and frames."""
    template = _marker_template()
    sni = f"m{index}-{run}{MARKER_SUFFIX}"
    spec = dataclasses.replace(template, client=(f"{NET}.250.1", 20_000 + index % 40_000),
                               server=MARKER_SERVER, sni=sni, app_segments=0)
    return sni, [frame for _, frame in tcp_frames(conversation(spec, SEED), Timing())]


def packet_socket() -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind(("lo", 0))
    return sock


def python_sender(capture: Path, mbps: float, duration: float, stop: threading.Event,
                  counts: list[float]) -> None:
    """Send ``capture``'s frames onto lo at ``mbps`` (paced by bytes, in 2 ms steps) for at
    most ``duration`` s; ``counts`` gets [frames, bytes] as it goes, then its CPU time."""
    rate = mbps * 1e6 / 8  # bytes per second
    with packet_socket() as sock, open_capture(capture) as reader:
        send = sock.send
        started = time.monotonic()
        sent_bytes = frames = 0
        for _, _, data in reader:
            send(data)
            frames += 1
            sent_bytes += len(data)
            if not frames & 63:
                counts[:] = [frames, sent_bytes]
                ahead = sent_bytes / rate - (time.monotonic() - started)
                if ahead > SEND_CHUNK_S:
                    time.sleep(ahead)
                if stop.is_set() or time.monotonic() - started >= duration:
                    break
        counts[:] = [frames, sent_bytes, time.thread_time()]


def tcpreplay(capture: Path, mbps: float, duration: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["tcpreplay", "-i", "lo", f"--mbps={mbps}", f"--duration={int(duration)}",
         str(capture)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def tcpreplay_counts(output: str) -> tuple[int, int]:
    """(packets, bytes) from tcpreplay's "Actual: N packets (B bytes) sent in ..." line."""
    match = re.search(r"Actual: (\d+) packets \((\d+) bytes\)", output)
    if not match:
        raise RuntimeError(f"tcpreplay said:\n{output}")
    return int(match.group(1)), int(match.group(2))


# -- the watch ---------------------------------------------------------------------------------

@dataclass
class Watch:
    process: subprocess.Popen[bytes]
    stderr: Path
    alerts: dict[str, float] = field(default_factory=dict)  # marker SNI -> time read
    lines: int = 0

    def read_alerts(self) -> None:
        """Stamp every alert line as it arrives; keep the markers' self-signed ones."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            now = time.time()
            self.lines += 1
            if _ALERT_SELF_SIGNED in line and MARKER_SUFFIX.encode() in line:
                match = re.search(rb'"server_name":"(m\d+-[0-9a-f]+\.marker\.test)"', line)
                if match:
                    self.alerts.setdefault(match.group(1).decode(), now)

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")


def start_watch(directory: Path) -> Watch:
    stderr = directory / "watch.err"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "certwatch.cli", "--log-format", "text", "watch",
             "--interface", "lo", "--bpf", BPF, "--allow-root"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    watch = Watch(process, stderr)
    threading.Thread(target=watch.read_alerts, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "watching lo" not in watch.err():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"certwatch watch did not start:\n{watch.err()}")
        time.sleep(0.05)
    return watch


def stop_watch(watch: Watch) -> tuple[float, str]:
    """SIGINT, then reap it with ``wait4``: (CPU seconds, its summary)."""
    watch.process.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(watch.process.pid, 0)
    watch.process.returncode = os.waitstatus_to_exitcode(status)
    if watch.process.returncode != 0:
        raise RuntimeError(f"certwatch watch exited {watch.process.returncode}:\n{watch.err()}")
    return usage.ru_utime + usage.ru_stime, watch.err()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary_numbers(text: str) -> dict[str, int]:
    """Packets, handshakes, alerts, kernel received/dropped, queue drops from the summary."""
    patterns = {
        "packets": r"capture\(s\), ([\d,]+) packets",
        "handshakes": r"handshakes\s+([\d,]+)",
        "alerts": r"alerts\s+([\d,]+)",
        "kernel_received": r"kernel\s+([\d,]+) frames",
        "kernel_dropped": r"; ([\d,]+) dropped by the kernel",
        "queue_dropped": r"queue\s+([\d,]+) events dropped",
    }
    numbers = {}
    for name, pattern in patterns.items():
        match = re.search(pattern, text)
        if not match:
            raise RuntimeError(f"no {name} in the summary:\n{text}")
        numbers[name] = int(match.group(1).replace(",", ""))
    return numbers


# -- one run -----------------------------------------------------------------------------------

@dataclass
class Result:
    sender: str
    mbps_target: float
    seconds: float
    frames_sent: int
    bytes_sent: int
    markers_sent: int
    latencies: list[float]
    cpu_s: float
    cpu_total_s: float
    sender_cpu_s: float
    numbers: dict[str, int]

    def lines(self) -> Iterator[str]:
        rate = self.bytes_sent * 8 / 1e6 / self.seconds if self.seconds else 0.0
        seen = self.numbers["packets"]
        yield (f"sender {self.sender}: {self.frames_sent:,} frames, {rate:.1f} Mbit/s "
               f"achieved (target {self.mbps_target:g}) over {self.seconds:.1f} s; sender "
               f"CPU {self.sender_cpu_s:.2f} s")
        yield (f"watch saw {seen:,} packets ({seen - self.frames_sent:+,} vs sent); kernel "
               f"received {self.numbers['kernel_received']:,}, dropped "
               f"{self.numbers['kernel_dropped']:,}; queue dropped "
               f"{self.numbers['queue_dropped']:,}")
        yield (f"handshakes {self.numbers['handshakes']:,}, alerts "
               f"{self.numbers['alerts']:,}; watch CPU while traffic flowed {self.cpu_s:.2f} s "
               f"({100 * self.cpu_s / self.seconds:.0f}% of one core), whole run incl. "
               f"start-up {self.cpu_total_s:.2f} s")
        found = sorted(self.latencies)
        if found:
            p95 = found[min(len(found) - 1, round(0.95 * (len(found) - 1)))]
            yield (f"markers {len(found)}/{self.markers_sent} alerted; packet-to-alert "
                   f"latency p50 {1000 * statistics.median(found):.1f} ms, p95 "
                   f"{1000 * p95:.1f} ms, max {1000 * found[-1]:.1f} ms")
        else:
            yield f"markers 0/{self.markers_sent} alerted"


def send_markers(sock: socket.socket, markers: list[tuple[str, list[bytes]]],
                 interval: float, sent: dict[str, float]) -> None:
    """One of ``markers`` (built beforehand: no CPU taken from the run) every
    ``interval`` s."""
    next_at = time.monotonic() + interval
    for sni, frames in markers:
        time.sleep(max(0.0, next_at - time.monotonic()))
        sent[sni] = time.time()
        for frame in frames:
            sock.send(frame)
        next_at += interval


def run_once(args: argparse.Namespace, sender: str, capture: Path | None,
             directory: Path) -> Result:
    run = os.urandom(4).hex()
    markers = [marker_frames(i, run)
               for i in range(max(1, int((args.duration - 0.5) / args.marker_interval)))]
    watch = start_watch(directory)
    counts: list[float] = [0, 0, 0.0]
    sent: dict[str, float] = {}
    stop = threading.Event()
    cpu_before = cpu_seconds(watch.process.pid)
    started = time.monotonic()
    background: subprocess.Popen[str] | threading.Thread | None = None
    if capture is not None and sender == "tcpreplay":
        background = tcpreplay(capture, args.mbps, args.duration)
    elif capture is not None:
        background = threading.Thread(target=python_sender, args=(
            capture, args.mbps, args.duration, stop, counts), daemon=True)
        background.start()
    with packet_socket() as sock:
        send_markers(sock, markers, args.marker_interval, sent)
    if isinstance(background, threading.Thread):
        background.join()
    elif background is not None:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        output, _ = background.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # tcpreplay's, now reaped
        counts[:] = [*tcpreplay_counts(output), after.ru_utime + after.ru_stime
                     - children.ru_utime - children.ru_stime]
    seconds = time.monotonic() - started
    cpu_during = cpu_seconds(watch.process.pid) - cpu_before
    deadline = time.monotonic() + SETTLE_S
    while len(watch.alerts) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the capture loop read the last frames before it is stopped
    cpu, text = stop_watch(watch)
    marker_frames_sent = len(sent) * len(markers[0][1])
    latencies = [watch.alerts[sni] - at for sni, at in sent.items() if sni in watch.alerts]
    if args.verbose:
        print("latencies in send order (ms):",
              " ".join(f"{1000 * x:.0f}" for x in latencies), flush=True)
    return Result(sender if capture is not None else "none", args.mbps, seconds,
                  int(counts[0]) + marker_frames_sent, int(counts[1]), len(sent), latencies,
                  cpu_during, cpu, counts[2], summary_numbers(text))


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--mbps", type=float, default=100.0,
                        help="background rate (0: markers only; default: %(default)g)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of traffic")
    parser.add_argument("--sender", choices=["auto", "tcpreplay", "python"], default="auto",
                        help="auto: tcpreplay when installed, else the Python sender")
    parser.add_argument("--marker-interval", type=float, default=0.5, metavar="SECONDS")
    parser.add_argument("--verbose", action="store_true",
                        help="print every marker's latency, in send order")
    parser.add_argument("--app-segments", type=int, default=10,
                        help="server data segments per background connection")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if os.geteuid() != 0:
        print("bench.live needs root (AF_PACKET on lo)", file=sys.stderr)
        return 2
    sender = args.sender
    if sender == "auto":
        sender = "tcpreplay" if shutil.which("tcpreplay") else "python"
    capture = (background_capture(args.mbps, args.duration, args.app_segments)
               if args.mbps > 0 else None)
    directory = CACHE / "live-run"
    directory.mkdir(parents=True, exist_ok=True)
    result = run_once(args, sender, capture, directory)
    for line in result.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
