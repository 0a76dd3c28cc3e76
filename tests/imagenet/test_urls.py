from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.imagenet.download import DownloadOptions, download
from cnnlab.data.imagenet.urllist import read_url_list
from ilsvrc_fixtures import COLORS, encode, rgb_image
from httpserver import LocalServer, fixed, flaky, redirect, wait_for

REPO = Path(__file__).resolve().parents[2]
A, B = "n01440764", "n01443537"


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cnnlab" not in p.parts and p.name != "report.json"
    }


def jpeg(w: str, seed: int) -> bytes:
    return encode(rgb_image(COLORS[w], seed))


def test_url_list_parsing(tmp_path: Path) -> None:
    lst = tmp_path / "urls.txt"
    lst.write_bytes(
        b"n01440764_1\thttp://h/a.jpg\n"
        b"\n"
        b"n01440764_2\thttp://h/\xff\xfe.jpg\n"  # not UTF-8
        b"garbage line\n"
        b"n01440764_3\n"  # no URL
        b"n01443537_1\thttp://h/b.jpg\r\n"
        b"n01443537_1\thttp://h/c.jpg\n"  # repeated id
        b"n01443537_2\thttp://h/a.jpg\n"  # repeated URL
        b"n01443537_3\thttp://h/d.jpg\n"
        b"n02119789_1\thttp://h/e.jpg\n"
    )
    entries, rep = read_url_list(lst)
    assert [e.image_id for e in entries] == ["n01440764_1", "n01443537_1", "n01443537_3", "n02119789_1"]
    assert rep.counts == {"bad_line": 3, "duplicate": 2}
    assert rep.failures["bad_line"] == ["line 3", "line 4", "line 5"]
    entries, _ = read_url_list(lst, wnids={B}, per_class=1)
    assert [e.image_id for e in entries] == ["n01443537_1"]


def make_routes() -> tuple[dict, dict[str, bytes]]:
    good = {"a": jpeg(A, 1), "b": jpeg(A, 2), "c": jpeg(B, 3), "f": jpeg(B, 4)}
    trunc = encode(rgb_image(COLORS[A], 5, (200, 160)))
    routes = {
        "/a.jpg": fixed(good["a"]),
        "/b.jpg": fixed(good["b"]),
        "/c.jpg": fixed(good["c"]),
        "/flaky.jpg": flaky(good["f"], failures=1),
        "/copy-of-a.jpg": fixed(good["a"]),  # same bytes under another URL
        "/flickr/123.jpg": redirect("/images/photo_unavailable.png"),
        "/images/photo_unavailable.png": fixed(encode(rgb_image((128, 128, 128), 9), "PNG"), "image/png"),
        "/page.jpg": fixed(b"<!DOCTYPE html><html><body>Not found</body></html>", "text/html"),
        "/trunc.jpg": fixed(trunc[: len(trunc) // 2]),
        "/slow.jpg": fixed(good["a"], delay=5.0),
        "/to-file.jpg": redirect("file:///etc/passwd"),
    }
    return routes, good


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_list(path: Path, base: str) -> None:
    lines = [
        f"{A}_1\t{base}/a.jpg",
        f"{A}_2\t{base}/b.jpg",
        f"{A}_3\t{base}/missing.jpg",
        f"{A}_4\t{base}/flickr/123.jpg",
        f"{A}_5\t{base}/page.jpg",
        f"{A}_6\t{base}/trunc.jpg",
        f"{A}_7\t{base}/slow.jpg",
        f"{A}_8\tfile:///etc/passwd",
        f"{A}_9\t{base}/to-file.jpg",
        f"{B}_1\t{base}/c.jpg",
        f"{B}_2\t{base}/copy-of-a.jpg",
        f"{B}_3\t{base}/flaky.jpg",
        f"{B}_1\t{base}/other.jpg",
        f"{B}_4\thttp://[::1/broken-ipv6.jpg",
        f"{B}_5\thttp://127.0.0.1:{closed_port()}/refused.jpg",
        "this line is malformed",
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"n01443537_9\thttp://\xff\n")


def test_report_counts_every_outcome(tmp_path: Path) -> None:
    routes, good = make_routes()
    with LocalServer(routes, max_requests=60, lifetime=30) as srv:
        lst = tmp_path / "urls.txt"
        write_list(lst, srv.base)
        entries, list_report = read_url_list(lst)
        opts = DownloadOptions(workers=4, timeout=0.5, retries=1, backoff=0.05, progress=False)
        result = download(entries, tmp_path / "out", opts, list_report)
        assert srv.hits["/images/photo_unavailable.png"] == 0  # caught at the redirect, not fetched
    assert result["counts"] == {
        "ok": 4,  # a, b, c and flaky (after one retry)
        "http_error": 1,
        "placeholder": 1,
        "not_image": 1,
        "corrupt": 1,
        "timeout": 1,
        "bad_scheme": 2,  # file:// in the list, and a redirect hop to file://
        "bad_url": 1,
        "connection_error": 1,  # refused (not a timeout)
        "duplicate": 2,  # repeated id in the list, same content as a
        "bad_line": 2,
    }
    f = result["failures"]
    assert f["http_error"] == [f"{A}_3"] and f["placeholder"] == [f"{A}_4"] and f["not_image"] == [f"{A}_5"]
    assert f["corrupt"] == [f"{A}_6"] and f["timeout"] == [f"{A}_7"] and f["bad_scheme"] == [f"{A}_8", f"{A}_9"]
    assert f["bad_url"] == [f"{B}_4"] and f["connection_error"] == [f"{B}_5"]
    assert any(d.startswith(f"{B}_2 ") for d in f["duplicate"])
    out = tmp_path / "out"
    assert sorted(tree(out)) == sorted([
        f"train/{A}/{A}_1.JPEG", f"train/{A}/{A}_2.JPEG", f"train/{B}/{B}_1.JPEG", f"train/{B}/{B}_3.JPEG",
        "labels.txt", "synsets.tsv",
    ])
    assert (out / f"train/{A}/{A}_1.JPEG").read_bytes() == good["a"]  # good JPEGs are kept byte for byte
    assert (out / "labels.txt").read_text().split() == [A, B]
    assert json.loads((out / "report.json").read_text())["counts"] == result["counts"]


def test_resize_keeps_aspect_and_val_split(tmp_path: Path) -> None:
    big = encode(rgb_image(COLORS[A], 7, (300, 120)))
    routes = {f"/{i}.jpg": fixed(encode(rgb_image(COLORS[A], 10 + i, (300, 120)))) for i in range(4)}
    routes["/big.jpg"] = fixed(big)
    with LocalServer(routes, max_requests=20, lifetime=30) as srv:
        lst = tmp_path / "urls.txt"
        lst.write_text("".join(f"{A}_{i}\t{srv.base}/{i}.jpg\n" for i in range(4)))
        code = main(["data", "urls", str(lst), "--out", str(tmp_path / "o"), "--resize", "60", "--val-per-class", "1",
                     "--workers", "2", "--no-progress"])
    assert code == 0
    train = list((tmp_path / "o/train" / A).iterdir())
    val = list((tmp_path / "o/val" / A).iterdir())
    assert len(train) == 3 and len(val) == 1
    with Image.open(val[0]) as im:
        assert im.size == (150, 60)


def test_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "urls", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "URL list" in capsys.readouterr().err
    lst = tmp_path / "l.txt"
    lst.write_text("nothing useful here\n")
    assert main(["data", "urls", str(lst), "--out", str(tmp_path / "o")]) == 2
    assert main(["data", "urls", str(lst), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "no usable entries" in err and "--workers" in err


N_RESUME = 48


def _run_cli(lst: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "data", "urls", str(lst), "--out", str(out), "--workers", "3",
         "--timeout", "5", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_killed_download_resumes_to_the_same_result(tmp_path: Path) -> None:
    routes = {f"/{i}.jpg": fixed(jpeg(A if i % 2 else B, 100 + i), delay=0.04) for i in range(N_RESUME)}
    routes["/dup.jpg"] = fixed(jpeg(B, 100), delay=0.04)  # same content as /0.jpg
    with LocalServer(routes, max_requests=4 * N_RESUME, lifetime=90) as srv:
        lst = tmp_path / "urls.txt"
        lst.write_text(
            "".join(f"{A if i % 2 else B}_{i}\t{srv.base}/{i}.jpg\n" for i in range(N_RESUME))
            + f"{B}_999\t{srv.base}/dup.jpg\n" + f"{A}_404\t{srv.base}/missing.jpg\n"
        )
        # The uninterrupted run goes in-process (same code the CLI calls; saves a slow interpreter start).
        clean = tmp_path / "clean"
        entries, list_report = read_url_list(lst)
        download(entries, clean, DownloadOptions(workers=3, timeout=5, progress=False), list_report)
        hits_clean = sum(srv.hits.values())

        killed = tmp_path / "killed"
        journal = killed / ".cnnlab" / "urls.jsonl"
        p = _run_cli(lst, killed)
        try:
            assert wait_for(lambda: journal.exists() and journal.read_text().count("\n") >= 12, timeout=30)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
        journaled = [json.loads(line)["id"] for line in journal.read_text().splitlines() if line.endswith("}")]
        assert 12 <= len(journaled) < N_RESUME + 2  # really interrupted midway
        assert not (killed / "report.json").exists()
        before = srv.hits.copy()
        p = _run_cli(lst, killed)
        assert p.wait(timeout=60) == 0
        again = srv.hits - before
        # Nothing already journaled was requested again.
        paths = {line.split("\t")[0]: "/" + line.split("\t")[1].rsplit("/", 1)[1] for line in lst.read_text().splitlines()}
        assert not [i for i in journaled if again[paths[i]]]
        assert sum(srv.hits.values()) - hits_clean <= hits_clean + 3 * 3  # at most the in-flight ones twice
    assert tree(killed) == tree(clean)
    rep_clean = json.loads((clean / "report.json").read_text())
    rep_killed = json.loads((killed / "report.json").read_text())
    assert rep_killed == rep_clean
    assert rep_clean["counts"] == {"ok": N_RESUME, "duplicate": 1, "http_error": 1}
