"""Copy budgets: transfer() against `cp`, and the memory of an 8 GiB copy.

- A 1 GiB incompressible template copied from an emulated share to an emulated pool with
  transfer() (the plain path: the backend's kernel copy) runs at >= 0.9x the speed of `cp`
  on the same files (best of 7, alternating). For information: the checksum-verified
  (sha256) streaming path, the same stream with one `to_thread` per chunk instead of one
  worker thread, and .gz decompression.
- A process that has loaded the whole agent (hyperv_agent.service) peaks below 150 MB
  resident while it copies 8 GiB through the verified streaming path.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

from bench.common import report, require, verdict
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.hostfs.api import COPY_CHUNK_BYTES, HostFiles
from hyperv_agent.hostfs.transfer import transfer

MB = 1_000_000
MIB = 1 << 20
GIB = 1 << 30
TEMPLATE_BYTES = GIB
GZ_BYTES = 256 * MIB
BIG_BYTES = 8 * GIB
ROUNDS = 7
SHARE = "\\\\nas\\secondary"
RSS_BUDGET_MB = 150

CHILD = """
import asyncio, hashlib, json, resource, sys, time
import hyperv_agent.service  # the whole agent, as a running agent has it loaded
from hyperv_agent.hostfs.local import LocalFiles
from hyperv_agent.hostfs.transfer import transfer

def high_water_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0

source, target, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
loaded_kb = high_water_kb()
digest, zeros = hashlib.sha256(), bytes(1 << 20)
for _ in range(size >> 20):
    digest.update(zeros)
started = time.perf_counter()
done = asyncio.run(transfer(LocalFiles(), source, target,
                            checksum="{SHA-256}" + digest.hexdigest()))
print(json.dumps({"loaded_kb": loaded_kb, "hwm_kb": high_water_kb(), "size": done.size,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - started}))
"""


def make_template(path: Path, size: int) -> str:
    """``size`` bytes that do not compress (a random 16 MiB block, repeated); its sha256."""
    block = os.urandom(16 * MIB)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
            digest.update(block)
    return digest.hexdigest()


def make_gz(path: Path, size: int) -> None:
    """A disk-like file (a quarter data, the rest zeros), gzip-compressed."""
    data = os.urandom(size // 4)
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(data)
        for _ in range((size - len(data)) // MIB):
            out.write(bytes(MIB))


async def timed(work: Awaitable[object]) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


def cp_s(source: Path, target: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(target)], check=True)
    return time.perf_counter() - started


async def alternate(files: HostFiles, root: Path) -> tuple[list[float], list[float]]:
    """``ROUNDS`` pairs of transfer() and cp, the first of each pair alternating; the source
    stays in the page cache for both."""
    ours: list[float] = []
    theirs: list[float] = []
    source, pool = root / "share" / "t.vhd", root / "C" / "pool"
    for index in range(ROUNDS):
        for kind in (("ours", "cp") if index % 2 == 0 else ("cp", "ours")):
            os.sync()  # start each copy with no earlier copy's dirty pages in flight
            if kind == "ours":
                ours.append(await timed(transfer(files, f"{SHARE}\\t.vhd", "C:\\pool\\t.vhd")))
                assert (pool / "t.vhd").stat().st_size == TEMPLATE_BYTES
                (pool / "t.vhd").unlink()
            else:
                theirs.append(cp_s(source, pool / "cp.vhd"))
                (pool / "cp.vhd").unlink()
    return ours, theirs


async def per_chunk_threads(files: HostFiles, source: str, target: str) -> float:
    """The verified stream with one ``to_thread`` per chunk, for comparison."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    reader = await asyncio.to_thread(files.open_binary, source, "rb")
    writer = await asyncio.to_thread(files.open_binary, target, "wb")
    with reader, writer:
        while chunk := await asyncio.to_thread(reader.read, COPY_CHUNK_BYTES):
            digest.update(chunk)
            await asyncio.to_thread(writer.write, chunk)
    return time.perf_counter() - started


def big_copy(root: Path, size: int = BIG_BYTES) -> dict[str, float]:
    """A sparse source of ``size`` bytes copied, verified, by a child process that loaded
    the whole agent; its figures (``loaded_kb``, ``hwm_kb``, ``size``, ``seconds``)."""
    source, target = root / "big.raw", root / "big-copy.raw"
    with source.open("wb") as sparse:
        sparse.truncate(size)
    try:
        run = subprocess.run([sys.executable, "-c", CHILD, str(source), str(target),
                              str(size)], capture_output=True, text=True, check=True)
    finally:
        source.unlink()
        target.unlink(missing_ok=True)
    figures: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return figures


def _require_size(path: Path, size: int) -> None:
    written = path.stat().st_size
    require(written == size, f"a copy of {size} bytes to {path.name} (it wrote {written})")


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / MB:,.0f} MB/s"


def memory_folder() -> str | None:
    """A RAM-backed folder with room for the 1 GiB runs, so they measure the copy engines
    rather than a shared disk's write-back; None to use the default temporary folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free >= 4 * TEMPLATE_BYTES:
        return str(shm)
    return None


async def main() -> None:
    folder = memory_folder()
    with tempfile.TemporaryDirectory(prefix="bench-copy-", dir=folder) as scratch:
        root = Path(scratch)
        (root / "share").mkdir()
        (root / "C" / "pool").mkdir(parents=True)
        digest = make_template(root / "share" / "t.vhd", TEMPLATE_BYTES)
        make_gz(root / "share" / "d.vhd.gz", GZ_BYTES)
        cim = EmulatorCim.open(EmulatorConfig(state_dir=root / "state",
                                              drives={"C": root / "C"},
                                              shares={SHARE: root / "share"}))
        files = EmulatedFiles(cim.host)
        ours, theirs = await alternate(files, root)
        verified = await timed(transfer(files, f"{SHARE}\\t.vhd", "C:\\pool\\v.vhd",
                                        checksum="{SHA-256}" + digest))
        _require_size(root / "C" / "pool" / "v.vhd", TEMPLATE_BYTES)
        (root / "C" / "pool" / "v.vhd").unlink()
        threads = await per_chunk_threads(files, f"{SHARE}\\t.vhd", "C:\\pool\\p.vhd")
        (root / "C" / "pool" / "p.vhd").unlink()
        unzipped = await timed(transfer(files, f"{SHARE}\\d.vhd.gz", "C:\\pool\\d.vhd"))
        _require_size(root / "C" / "pool" / "d.vhd", GZ_BYTES)
        packed = (root / "share" / "d.vhd.gz").stat().st_size
        await cim.close()
    with tempfile.TemporaryDirectory(prefix="bench-copy-") as scratch:
        big = big_copy(Path(scratch))
    require(big["size"] == BIG_BYTES, f"a copy of {BIG_BYTES} bytes (it wrote {big['size']})")
    ratio = min(theirs) / min(ours)
    peak_mb = big["hwm_kb"] * 1024 / MB
    where = "RAM-backed folders" if folder else "the temporary folder's disk"
    print(f"1 GiB runs on {where}; the 8 GiB run on the temporary folder's disk")
    report("copy", [
        ("1 GiB share -> pool, transfer(): best", rate(TEMPLATE_BYTES, min(ours)), "-", "-"),
        ("1 GiB share -> pool, cp: best", rate(TEMPLATE_BYTES, min(theirs)), "-", "-"),
        (f"transfer() / cp throughput, best of {ROUNDS}", f"{ratio:.2f}", ">= 0.90",
         verdict(ratio >= 0.9)),
        (f"transfer() / cp throughput, median of {ROUNDS}",
         f"{statistics.median(theirs) / statistics.median(ours):.2f}", "-", "-"),
        ("1 GiB verified (sha256), one worker thread", rate(TEMPLATE_BYTES, verified), "-",
         "-"),
        ("1 GiB verified (sha256), to_thread per chunk", rate(TEMPLATE_BYTES, threads), "-",
         "-"),
        (f".gz {packed / MB:,.0f} MB -> {GZ_BYTES / MB:,.0f} MB, written",
         rate(GZ_BYTES, unzipped), "-", "-"),
        ("8 GiB verified copy: agent loaded, resident", f"{big['loaded_kb'] * 1024 / MB:.0f} MB",
         "-", "-"),
        ("8 GiB verified copy: throughput", rate(BIG_BYTES, big["seconds"]), "-", "-"),
        ("8 GiB verified copy: peak resident (VmHWM)", f"{peak_mb:.0f} MB",
         f"< {RSS_BUDGET_MB} MB", verdict(peak_mb < RSS_BUDGET_MB)),
    ])


if __name__ == "__main__":
    asyncio.run(main())
