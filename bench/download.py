"""Download throughput: `cnnlab data urls` against img2dataset on the same list and the same server.

Claim: cnnlab downloads, validates and writes ImageNet URL lists at >= 1.5x img2dataset's rate.
Evidence: this script serves N generated JPEGs on 127.0.0.1 (bounded in requests and lifetime),
runs both tools as a user would (their command lines, one process, the same number of concurrent
downloads: img2dataset's threads, cnnlab's --workers) and prints
images/s for each and the ratio. img2dataset must be installed in a separate venv (`--img2dataset
PATH`, default /tmp/venv-i2d/bin/img2dataset); without it, cnnlab's figure is printed alone.

    PYTHONPATH=. python bench/download.py --images 3000 --threads 16
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_jpegs(n: int, size: tuple[int, int] = (160, 120)) -> list[bytes]:
    """n distinct photo-sized-ish JPEGs (smooth gradients + noise, so they compress like photos)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    out = []
    for i in range(n):
        base = (np.stack([xx * (i % 7 + 1), yy * (i % 5 + 1), xx + yy], -1) % 256).astype(np.int16)
        arr = np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)  # (H, W, 3)
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


async def _serve_async(images: list[bytes], port_q: "mp.Queue[int]", max_requests: int, lifetime: float) -> None:
    """A minimal keep-alive HTTP/1.1 GET responder on asyncio: several times faster than
    http.server, so the clients, not the server, are what the benchmark measures. Hand-written
    because the standard library has no fast server and the bench must not add a dependency."""
    served = 0
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                served += 1
                try:
                    body = images[int(path.strip("/").split(".")[0])] if served <= max_requests else b""
                except (ValueError, IndexError):
                    body = b""
                status = b"200 OK" if body else b"404 Not Found"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
    port_q.put(server.sockets[0].getsockname()[1])
    async with server:
        try:
            await asyncio.wait_for(done.wait(), timeout=lifetime)  # stops by itself
        except asyncio.TimeoutError:
            pass


def _server_process(images: list[bytes], port_q: "mp.Queue[int]", max_requests: int, lifetime: float) -> None:
    asyncio.run(_serve_async(images, port_q, max_requests, lifetime))


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr.decode()[-2000:]}")
    return dt


def count_files(root: Path, suffixes: tuple[str, ...]) -> int:
    return sum(1 for p in root.rglob("*") if p.suffix.lower() in suffixes and ".cnnlab" not in p.parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=16, help="img2dataset threads = cnnlab --workers")
    ap.add_argument("--img2dataset", default="/tmp/venv-i2d/bin/img2dataset")
    args = ap.parse_args()

    images = make_jpegs(args.images)
    port_q: mp.Queue[int] = mp.Queue()
    srv = mp.Process(target=_server_process, args=(images, port_q, 4 * args.images, 1200.0), daemon=True)
    srv.start()
    base = f"http://127.0.0.1:{port_q.get(timeout=30)}"
    work = Path(tempfile.mkdtemp(prefix="cnnlab-bench-dl-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    try:
        wnids = [f"n{10000000 + c:08d}" for c in range(10)]
        lst = work / "urls.txt"
        lst.write_text("".join(f"{wnids[i % 10]}_{i}\t{base}/{i}.jpg\n" for i in range(args.images)))
        plain = work / "urls_plain.txt"
        plain.write_text("".join(f"{base}/{i}.jpg\n" for i in range(args.images)))

        print(f"{args.images} JPEGs ({sum(map(len, images)) / len(images) / 1024:.1f} KiB mean) on {base}, "
              f"{args.threads} threads, {os.cpu_count()} CPUs")
        t_cnn = timed([sys.executable, "-m", "cnnlab", "data", "urls", str(lst), "--out", str(work / "cnnlab"),
                       "--workers", str(args.threads), "--no-progress"], env)
        n_cnn = count_files(work / "cnnlab" / "train", (".jpeg",))
        s_cnn = timed([sys.executable, "-m", "cnnlab", "data", "urls", "--help"], env)
        print(f"cnnlab data urls : {n_cnn} images in {t_cnn:.2f} s = {n_cnn / t_cnn:.0f} images/s (wall, incl. start-up); "
              f"start-up alone {s_cnn:.2f} s")

        i2d = shutil.which(args.img2dataset) or (args.img2dataset if Path(args.img2dataset).exists() else None)
        if i2d is None:
            print(f"img2dataset      : not installed ({args.img2dataset} missing); no ratio")
            return 0
        t_i2d = timed([i2d, "--url_list", str(plain), "--input_format", "txt", "--output_folder", str(work / "i2d"),
                       "--output_format", "files", "--processes_count", "1", "--thread_count", str(args.threads),
                       "--resize_mode", "no", "--number_sample_per_shard", str(args.images),
                       "--enable_wandb", "False", "--timeout", "10", "--retries", "0"], env)
        n_i2d = count_files(work / "i2d", (".jpg", ".jpeg"))
        s_i2d = timed([i2d, "--help"], env)
        print(f"img2dataset      : {n_i2d} images in {t_i2d:.2f} s = {n_i2d / t_i2d:.0f} images/s (wall, incl. start-up); "
              f"start-up alone {s_i2d:.2f} s")
        print(f"ratio cnnlab / img2dataset = {(n_cnn / t_cnn) / (n_i2d / t_i2d):.2f}x wall (target >= 1.5x); "
              f"{(n_cnn / (t_cnn - s_cnn)) / (n_i2d / (t_i2d - s_i2d)):.2f}x after subtracting each tool's start-up")
    finally:
        srv.terminate()  # our own child, by handle
        srv.join(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
