"""cnnlab's darknet commands beside the real darknet programs, same cfg, weights, images and protocol.

Claim (issue 15, acceptance 4): ``cnnlab darknet classifier predict`` on darknet.cfg and ``cnnlab
darknet detector test`` on yolov3-tiny.cfg predict at least 2.5x as fast per image as AlexeyAB's
darknet built with AVX and OpenMP, at equal threads, in fp32 with equal outputs, and at least 4x with
``--precision bf16``.
Evidence: each program runs as a user runs it — the image paths fed on stdin, as darknet's "Enter
Image Path:" loop reads them — and the bench reads the "Predicted in" time each one prints for each
image (network_predict in darknet; the network call in cnnlab). Programs alternate in paired rounds in
this one invocation (the order flips every round) so machine load hits them alike; per round the
median over the images (the first image of each process, the warm-up, is dropped), then the median
of the rounds and its ratio to AlexeyAB's. The printed top-N lines / detections of cnnlab fp32 are
compared with darknet's of the same flavor (on PNGs: JPEG decoders differ by a level here and there).

    PYTHONPATH=. python bench/darknet.py --darknet-src /tmp/dk-bench --darknet-src /tmp/pj-src \
        [--threads 1 2] [--rounds 3] [--passes 3] [--nets darknet yolov3-tiny]

Each ``--darknet-src`` is a source folder the user fetched (``git -C <clone> archive HEAD | tar -x
-C DIR``); the bench recognises AlexeyAB's and pjreddie's, copies each to a folder in the system's
temp dir and builds it there (AlexeyAB: ``make GPU=0 CUDNN=0 OPENCV=0 OPENMP=1 AVX=1``; pjreddie:
plain ``make``, which has no OpenMP, so it runs at one thread only). Nothing is built or written in
the repository. Without ``--darknet-src`` the bench says so and compares nothing. The weights are
the reference tests' (regenerated bit-exact by ``tests/darknet/refweights.py``) and the images the
reference PNGs in ``tests/darknet/reference/images``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "darknet" / "reference"
TIME = re.compile(r"Predicted in ([0-9.]+) (seconds|milli-seconds)")
PROGRAM = {"darknet": ("classifier", "predict", "classify1k.data"), "yolov3-tiny": ("detector", "test", "detect80.data")}


@dataclass
class Program:
    name: str  # as printed
    flavor: str  # whose outputs it should match
    argv: list[str]  # up to (not including) the mode's own arguments
    extra: list[str] = field(default_factory=list)  # after DATA CFG WEIGHTS
    threads: tuple[int, ...] = (1, 2)


def flavor_of(src: Path) -> str:
    if (src / "src" / "gaussian_yolo_layer.c").is_file():
        return "alexeyab"
    if (src / "examples" / "darknet.c").is_file():
        return "pjreddie"
    sys.exit(f"bench/darknet.py: error: {src} is neither AlexeyAB's nor pjreddie's darknet source folder")


def build(src: Path) -> tuple[str, Path]:
    """(flavor, binary) of ``src`` built in the temp dir (reused when the binary is there)."""
    flavor = flavor_of(src)
    key = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]
    where = Path(tempfile.gettempdir()) / f"cnnlab-darknet-{flavor}-{key}"
    binary = where / "darknet"
    if binary.is_file():
        return flavor, binary
    make = ["make", "-j2", "GPU=0", "CUDNN=0", "OPENCV=0", "OPENMP=1", "AVX=1"] if flavor == "alexeyab" else ["make", "-j2"]
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", f"{src}/.", str(where)], check=True)
    print(f"building {flavor} darknet in {where} ({' '.join(make)}) ...", flush=True)
    done = subprocess.run(make, cwd=where, capture_output=True, text=True, check=False)
    if done.returncode or not binary.is_file():
        sys.exit(f"bench/darknet.py: error: building {src} failed:\n{done.stderr[-2000:]}")
    return flavor, binary


def weights(net: str, folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.darknet.refweights import write_reference_weights

    out = folder / f"{net}.weights"
    if not out.is_file():
        write_reference_weights(REF / "cfg" / f"{net}.cfg", out)
    return out


def data_file(net: str, folder: Path) -> Path:
    """The reference .data with an absolute names= (programs run in a scratch folder)."""
    src = REF / "data" / PROGRAM[net][2]
    text = re.sub(r"(?m)^names=(.*)$", lambda m: f"names={REF / m.group(1)}", src.read_text())
    out = folder / f"{net}.data"
    out.write_text(text)
    return out


def run_once(prog: Program, net: str, files: tuple[Path, Path, Path], images: list[str], threads: int, cwd: Path) -> tuple[list[float], str]:
    """Per-image "Predicted in" seconds of one process over ``images`` (stdin), and its stdout."""
    group, mode, _ = PROGRAM[net]
    data, cfg, wts = files
    argv = [*prog.argv, group, mode, str(data), str(cfg), str(wts), *prog.extra]
    if group == "detector":
        if prog.name.startswith("cnnlab"):
            argv += ["--force", "-out", str(cwd / "pred")]
        elif prog.flavor == "alexeyab":
            argv += ["-dont_show"]  # (pjreddie's would read it as the image path)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    if not prog.name.startswith("cnnlab"):
        cwd = Path(prog.argv[0]).parent  # darknet reads its font from data/labels/ there (and writes predictions.jpg)
    done = subprocess.run(argv, input="".join(p + "\n" for p in images), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in (0,):
        sys.exit(f"bench/darknet.py: error: {prog.name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    times = [float(v) / (1000 if unit == "milli-seconds" else 1) for v, unit in TIME.findall(done.stdout + done.stderr)]
    if len(times) != len(images):
        sys.exit(f"bench/darknet.py: error: {prog.name} printed {len(times)} times for {len(images)} images")
    return times[1:], done.stdout  # the first image warms up (allocations, oneDNN kernel choice)


RESULT_LINE = {
    ("classifier", "pjreddie"): re.compile(r"^\s*\d+\.\d+%: \S+$"),
    ("classifier", "alexeyab"): re.compile(r"^class_\d+: [0-9.]+$"),
    ("detector", "pjreddie"): re.compile(r"^class_\d+: +\d+%$"),
    ("detector", "alexeyab"): re.compile(r"^class_\d+: +\d+%"),
}


def same_results(a: list[str], b: list[str]) -> bool:
    """Equal lines; AlexeyAB's "name: 0.123456" lines compare their numbers within 1e-5: its FMA gemm and
    oneDNN round differently in the last printed digits (cnnlab's eager path before the engine differed
    from it by up to 2e-6 as well; the engine by up to 3e-6 on the reference PNGs)."""
    if len(a) != len(b) or not a:
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        (nx, vx), (ny, vy) = x.rsplit(": ", 1), y.rsplit(": ", 1)
        if nx != ny or not re.fullmatch(r"[0-9.]+", vx) or abs(float(vx) - float(vy)) > 1e-5:
            return False
    return True


def results(stdout: str, group: str, flavor: str) -> list[str]:
    """The printed top-N lines / detections (what must be equal), in order (detections sorted)."""
    pat = RESULT_LINE[(group, flavor)]
    lines = [line.replace("Enter Image Path: ", "").strip() for line in stdout.splitlines()]
    got = [line for line in lines if pat.match(line)]
    return sorted(got) if group == "detector" else got


def programs(builds: dict[str, Path]) -> list[Program]:
    cnnlab = [sys.executable, "-m", "cnnlab", "darknet"]
    progs = []
    if "alexeyab" in builds:
        progs.append(Program("darknet AlexeyAB (AVX+OpenMP)", "alexeyab", [str(builds["alexeyab"])]))
    if "pjreddie" in builds:
        progs.append(Program("darknet pjreddie", "pjreddie", [str(builds["pjreddie"])], threads=(1,)))
    for flavor in ("alexeyab", "pjreddie"):
        if flavor in builds:
            progs.append(Program(f"cnnlab --flavor {flavor}", flavor, cnnlab, ["--flavor", flavor]))
            progs.append(Program(f"cnnlab --flavor {flavor} bf16", flavor, cnnlab, ["--flavor", flavor, "--precision", "bf16"]))
    return progs


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(progs: list[Program], net: str, files: tuple, images: list[str], threads: int, rounds: int, work: Path) -> dict[str, list[float]]:
    """Round medians (ms per image) per program; the order flips every round. Checks outputs once."""
    per: dict[str, list[float]] = {p.name: [] for p in progs}
    outs: dict[str, str] = {}
    active = [p for p in progs if threads in p.threads]
    for r in range(rounds):
        print(f"  round {r + 1}/{rounds}, {threads} thread(s), load {load()}", flush=True)
        for p in active if r % 2 == 0 else active[::-1]:
            times, stdout = run_once(p, net, files, images, threads, work)
            per[p.name].append(1000 * statistics.median(times))
            outs.setdefault(p.name, stdout)
    _check_outputs(active, outs, PROGRAM[net][0])
    return {k: v for k, v in per.items() if v}


def _check_outputs(progs: list[Program], outs: dict[str, str], group: str) -> None:
    darknets = {p.flavor: p for p in progs if p.name.startswith("darknet")}
    for p in progs:
        ref = darknets.get(p.flavor)
        if not p.name.startswith("cnnlab") or ref is None:
            continue
        a, b = results(outs[p.name], group, p.flavor), results(outs[ref.name], group, p.flavor)
        same = sum(same_results([x], [y]) for x, y in zip(a, b))
        verdict = f"equal ({len(a)} lines)" if same_results(a, b) else f"{same} of {max(len(a), len(b))} lines equal"
        print(f"  outputs of {p.name} vs {ref.name}: {verdict}", flush=True)


def table(net: str, threads: int, per: dict[str, list[float]]) -> None:
    base = statistics.median(per["darknet AlexeyAB (AVX+OpenMP)"]) if "darknet AlexeyAB (AVX+OpenMP)" in per else None
    print(f"\n| {net} ({PROGRAM[net][0]} {PROGRAM[net][1]}), {threads} thread(s) | ms/image per round | median | vs AlexeyAB |")
    print("| --- | --- | --- | --- |")
    for name, ms in per.items():
        med = statistics.median(ms)
        ratio = f"{base / med:.2f}x" if base else "n/a"
        print(f"| {name} | {' / '.join(f'{m:.1f}' for m in ms)} | {med:.1f} | {ratio} |", flush=True)
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--darknet-src", type=Path, action="append", default=[], help="a darknet source folder (AlexeyAB's or pjreddie's); repeat for both")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passes", type=int, default=3, help="each process predicts the image list this many times")
    ap.add_argument("--nets", nargs="+", default=list(PROGRAM), choices=list(PROGRAM))
    args = ap.parse_args()
    if not args.darknet_src:
        print("bench/darknet.py: no --darknet-src given, so there is no darknet to compare with; nothing measured.\n"
              "Fetch AlexeyAB's and/or pjreddie's darknet source and pass each folder with --darknet-src DIR.")  # fmt: skip
        return
    builds = dict(build(src) for src in args.darknet_src)
    images = [str(p) for p in sorted((REF / "images").glob("img*.png")) if not p.name.endswith(".stb.png")] * args.passes
    print(f"bench/darknet.py: {len(images)} images per process ({args.passes} passes over {len(images) // args.passes} PNGs), "
          f"rounds {args.rounds}, threads {args.threads}, builds {', '.join(f'{k}: {v}' for k, v in builds.items())}; load {load()}")  # fmt: skip
    progs = programs(builds)
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-darknet-") as tmp:
        work = Path(tmp)
        for net in args.nets:
            files = (data_file(net, work), REF / "cfg" / f"{net}.cfg", weights(net, work))
            for threads in args.threads:
                print(f"{net}, {threads} thread(s):", flush=True)
                table(net, threads, measure(progs, net, files, images, threads, args.rounds, work))
    print(f"load at the end: {load()}")


if __name__ == "__main__":
    main()
