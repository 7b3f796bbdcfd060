"""wrk, the C load generator (Debian's `wrk`), driven by a Lua script over a file of lines: what
bench/serve.py and bench/stores.py share. Each script sets its own `request()` (and `response()`); this
module adds the thread index (`index`, from 1), reads the lines into `lines`, and prints the totals."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_PRELUDE = r"""
lines, index, salt = {}, 0, ""
hits, errors = 0, 0
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end
function init(args)
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
  salt = args[2] .. "." .. index
  if start then start(args) end
end
function done(summary, latency, requests)
  local h = 0
  for _, thread in ipairs(threads) do h = h + (thread:get("hits") or 0) end
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), h, summary.errors.status))
  -- what a script timed itself (`timed`, microseconds: e.g. only the answers of a storefront's steps)
  for _, thread in ipairs(threads) do
    local timed = thread:get("timed")
    if timed and #timed > 0 then io.write("TIMED " .. table.concat(timed, " ") .. "\n") end
  end
end
-- a monotonic clock in microseconds (wrk runs LuaJIT), for scripts that time some requests themselves
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } recsys_timespec;
           int clock_gettime(int clock, recsys_timespec *now); ]]
local clock_now = ffi.new("recsys_timespec")
function monotonic_us()
  ffi.C.clock_gettime(1, clock_now)
  return tonumber(clock_now.tv_sec) * 1000000 + math.floor(tonumber(clock_now.tv_nsec) / 1000)
end
"""


@dataclass(frozen=True)
class Totals:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    hits: int  # responses the script counted as cache hits
    errors: int  # responses that were not 2xx or 3xx
    timed_us: tuple[int, ...] = ()  # what the script timed itself (its `timed` table), every thread's


def run(
    script: str,
    lines: list[str],
    *,
    port: int,
    threads: int,
    connections: int,
    seconds: float,
    headers: tuple[str, ...] = (),
    salt: str = "0",
) -> Totals:
    """Run wrk against 127.0.0.1:`port` with the script (after the shared prelude) over the lines."""
    with tempfile.TemporaryDirectory() as folder:
        listing = Path(folder) / "lines.txt"
        listing.write_text("\n".join(lines) + "\n")
        path = Path(folder) / "script.lua"
        path.write_text(_PRELUDE + script)
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                   "--timeout", "10s", "-s", str(path)]  # fmt: skip
        for header in headers:
            command += ["-H", header]
        done = subprocess.run(
            [*command, f"http://127.0.0.1:{port}", "--", str(listing), salt], capture_output=True, text=True
        )
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    requests, duration, p50, p95, p99, hits, errors = (int(v) for v in found[0].split()[1:])
    timed_lines = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("TIMED ")]
    timed = tuple(int(value) for values in timed_lines for value in values)
    return Totals(requests, duration / 1e6, p50 / 1000, p95 / 1000, p99 / 1000, hits, errors, timed)
