"""Download throughput: `cnnlab data urls` against img2dataset on the same list and the same server.

Claim: cnnlab downloads, validates and writes ImageNet URL lists at >= 1.5x img2dataset's rate.
Evidence: this script serves N generated JPEGs on 127.0.0.1 (bounded in requests and lifetime),
runs both tools as a user would (their command lines, one process, the same thread count) and prints
images/s for each and the ratio. img2dataset must be installed in a separate venv (`--img2dataset
PATH`, default /tmp/venv-i2d/bin/img2dataset); without it, cnnlab's figure is printed alone.

    PYTHONPATH=. python bench/download.py --images 3000 --threads 16
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, images: list[bytes], max_requests: int) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.images = images
        self.max_requests = max_requests
        self.count = 0
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts do
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls
    server: Server

    def do_GET(self) -> None:  # noqa: N802
        with self.server.lock:
            self.server.count += 1
            over = self.server.count > self.server.max_requests
        try:
            i = int(self.path.strip("/").split(".")[0])
            body = None if over else self.server.images[i]
        except (ValueError, IndexError):
            body = None
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


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
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--img2dataset", default="/tmp/venv-i2d/bin/img2dataset")
    args = ap.parse_args()

    images = make_jpegs(args.images)
    srv = Server(images, max_requests=4 * args.images)
    serve = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serve.start()
    limit = threading.Timer(1800, srv.shutdown)  # the server never outlives a stuck run
    limit.daemon = True
    limit.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
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
        limit.cancel()
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
