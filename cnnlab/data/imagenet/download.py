"""``cnnlab data urls``: download an ImageNet URL list into class folders, robustly and resumably.

Threads + one shared ``urllib3`` pool (connection reuse, per-request timeouts; urllib3 costs about
half the CPU per request of httpx here, and a loaded 2-core machine is CPU-bound). Redirects are
followed by hand so every hop's scheme is checked (http/https only) and Flickr's
``photo_unavailable`` redirect is caught before the placeholder image is fetched. Each finished
entry is appended to ``DIR/.cnnlab/urls.jsonl`` after its file is renamed into place, so a killed
run resumes where the journal ends. Content duplicates are resolved at the end, in list order, so
the result does not depend on which download finished first.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import threading
import time
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import urllib3
from tqdm import tqdm
from urllib3.exceptions import HTTPError, LocationParseError, LocationValueError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from cnnlab.data.imagenet.imagecheck import Unusable, normalise
from cnnlab.data.imagenet.report import KEPT, Report, write_bytes_atomic, write_json_atomic
from cnnlab.data.imagenet.synsets import write_labels, write_synsets_tsv
from cnnlab.data.imagenet.urllist import Entry

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK = 64 * 1024


@dataclass(frozen=True)
class DownloadOptions:
    workers: int = 32
    timeout: float = 10.0  # seconds: connect/read/write limit, and 2x this for one whole response
    retries: int = 2  # extra attempts for transient errors (timeouts, resets, 5xx, 429)
    backoff: float = 0.5  # seconds before the first retry; doubles each time, with jitter
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    resize_short: int | None = None
    grayscale: str = "keep"
    placeholder_patterns: tuple[str, ...] = ("photo_unavailable",)
    placeholder_sha256: frozenset[str] = field(default_factory=frozenset)
    val_per_class: int = 0
    progress: bool = True
    user_agent: str = "cnnlab-data-urls/0.1"


class _Transient(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


class HttpClient:
    """Thread-safe pooled GETs; honours http(s)_proxy / no_proxy from the environment like browsers."""

    def __init__(self, opts: DownloadOptions) -> None:
        common = dict(maxsize=opts.workers, retries=False, headers={"User-Agent": opts.user_agent})
        self._direct = urllib3.PoolManager(num_pools=64, **common)
        self._proxies = {
            scheme: urllib3.ProxyManager(url, num_pools=64, **common)
            for scheme, url in urllib.request.getproxies().items()
            if scheme in ("http", "https")
        }
        self.timeout = urllib3.Timeout(connect=opts.timeout, read=opts.timeout)

    def open(self, url: str) -> urllib3.BaseHTTPResponse:
        parts = urlsplit(url)
        pool = self._proxies.get(parts.scheme.lower())
        if pool is None or urllib.request.proxy_bypass(parts.hostname or ""):
            pool = self._direct
        return pool.request("GET", url, redirect=False, preload_content=False, timeout=self.timeout)

    def close(self) -> None:
        for pool in (self._direct, *self._proxies.values()):
            pool.clear()


def _fetch_once(client: HttpClient, url: str, opts: DownloadOptions) -> bytes:
    current = url
    deadline = time.monotonic() + 2 * opts.timeout
    for _hop in range(opts.max_redirects + 1):
        parts = urlsplit(current)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise Unusable("bad_scheme", current[:200])
        if any(p in current for p in opts.placeholder_patterns):
            raise Unusable("placeholder", current[:200])
        try:
            r = client.open(current)
        except (LocationParseError, LocationValueError) as e:
            raise Unusable("bad_url", str(e)[:200]) from None
        except NewConnectionError as e:  # a subclass of urllib3's connect timeout: refused is not slow
            raise _Transient("connection_error", f"{type(e).__name__}: {e}"[:200]) from None
        except Urllib3Timeout as e:
            raise _Transient("timeout", type(e).__name__) from None
        except HTTPError as e:
            raise _Transient("connection_error", f"{type(e).__name__}: {e}"[:200]) from None
        complete = False  # only a fully read response leaves its connection reusable
        try:
            if 300 <= r.status < 400 and r.status != 304:
                loc = r.headers.get("location")
                if not loc:
                    raise Unusable("http_error", f"{r.status} without Location")
                current = urljoin(current, loc)
                continue
            if r.status in TRANSIENT_STATUS:
                raise _Transient("http_error", str(r.status))
            if not 200 <= r.status < 300:
                raise Unusable("http_error", str(r.status))
            length = r.headers.get("content-length")
            if length and length.isdigit() and int(length) > opts.max_bytes:
                raise Unusable("too_large", f"{length} bytes")
            body = bytearray()
            for chunk in r.stream(CHUNK):
                body += chunk
                if len(body) > opts.max_bytes:
                    raise Unusable("too_large", f"> {opts.max_bytes} bytes")
                if time.monotonic() > deadline:  # a trickling server defeats the read timeout
                    raise _Transient("timeout", "response too slow")
            complete = True
            return bytes(body)
        except Urllib3Timeout as e:
            raise _Transient("timeout", type(e).__name__) from None
        except HTTPError as e:  # reset mid-body, bad chunking, short read
            raise _Transient("connection_error", f"{type(e).__name__}: {e}"[:200]) from None
        finally:
            if not complete:
                r.close()  # unread bytes would otherwise be taken as the next response on this connection
            r.release_conn()
    raise Unusable("too_many_redirects", url[:200])


def fetch(client: HttpClient, url: str, opts: DownloadOptions, stop: threading.Event | None = None) -> bytes:
    """The body of ``url``, retrying transient failures; raises :class:`Unusable` otherwise."""
    for attempt in range(opts.retries + 1):
        try:
            return _fetch_once(client, url, opts)
        except _Transient as e:
            if attempt == opts.retries or (stop is not None and stop.is_set()):
                raise Unusable(e.outcome, e.detail) from None
            time.sleep(opts.backoff * (2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


@dataclass
class Result:
    entry: Entry
    outcome: str
    sha256: str | None = None
    detail: str = ""


def _process(client: HttpClient, e: Entry, out: Path, opts: DownloadOptions, stop: threading.Event) -> Result:
    try:
        body = fetch(client, e.url, opts, stop)
        sha = hashlib.sha256(body).hexdigest()
        if sha in opts.placeholder_sha256:
            return Result(e, "placeholder", sha, "known placeholder content")
        img = normalise(body, grayscale=opts.grayscale, resize_short=opts.resize_short)
    except Unusable as u:
        return Result(e, u.outcome, None, u.detail)
    write_bytes_atomic(out / "train" / e.wnid / f"{e.image_id}.JPEG", img.data, out / ".cnnlab" / "tmp")
    return Result(e, img.outcome, sha)


def _read_journal(path: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                done[rec["id"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # the last line of a killed run may be cut short: that entry is redone
    return done


def download(entries: list[Entry], out: Path, opts: DownloadOptions, list_report: Report) -> dict:
    """Download every entry not already in the journal, then finalise; returns report.json's dict."""
    out.mkdir(parents=True, exist_ok=True)
    journal_path = out / ".cnnlab" / "urls.jsonl"
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    done = _read_journal(journal_path)
    todo = [e for e in entries if e.image_id not in done]
    stop = threading.Event()
    client = HttpClient(opts)
    with ThreadPoolExecutor(opts.workers) as pool, open(journal_path, "a") as journal, tqdm(
        total=len(entries), initial=len(entries) - len(todo), unit="img", desc="download",
        disable=not opts.progress, dynamic_ncols=True, smoothing=0.1,
    ) as bar:
        pending: set[Future[Result]] = set()
        it = iter(todo)
        try:
            while True:
                # A bounded window keeps memory flat on lists of millions of URLs.
                while len(pending) < opts.workers * 4:
                    e = next(it, None)
                    if e is None:
                        break
                    pending.add(pool.submit(_process, client, e, out, opts, stop))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    r = fut.result()
                    rec = {"id": r.entry.image_id, "outcome": r.outcome, "sha256": r.sha256, "detail": r.detail}
                    journal.write(json.dumps(rec) + "\n")
                    done[r.entry.image_id] = rec
                    bar.update(1)
                journal.flush()  # to the kernel: survives the process being killed
        finally:
            stop.set()  # on Ctrl-C, in-flight downloads stop retrying
            for f in pending:
                f.cancel()
    client.close()
    return finalise(entries, done, out, opts, list_report)


def _val_key(image_id: str) -> str:
    """A fixed pseudo-random order per image, so the val pick is the same on every run."""
    return hashlib.sha1(image_id.encode()).hexdigest()


def finalise(entries: list[Entry], done: dict[str, dict], out: Path, opts: DownloadOptions, list_report: Report) -> dict:
    """Resolve content duplicates in list order, move the val pick, write labels/synsets/report."""
    report = Report()
    report.merge(list_report)
    first_with_sha: dict[str, str] = {}
    kept: dict[str, list[Entry]] = {}
    for e in entries:  # list order: the earliest entry with some content keeps it
        rec = done.get(e.image_id)
        if rec is None:
            report.add("not_attempted", e.image_id)
            continue
        outcome, sha = rec["outcome"], rec.get("sha256")
        if outcome in KEPT and sha is not None:
            if sha in first_with_sha:
                _remove(out, e)
                report.add("duplicate", f"{e.image_id} (same content as {first_with_sha[sha]})")
                continue
            first_with_sha[sha] = e.image_id
            kept.setdefault(e.wnid, []).append(e)
        report.add(outcome, e.image_id)
    for wnid, items in kept.items():
        # Keep at least one image in train so the class exists for class-folder readers.
        n_val = min(opts.val_per_class, len(items) - 1)
        for e in sorted(items, key=lambda e: _val_key(e.image_id))[:n_val]:
            src = out / "train" / wnid / f"{e.image_id}.JPEG"
            dst = out / "val" / wnid / f"{e.image_id}.JPEG"
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                src.replace(dst)
    classes = sorted(kept)
    for d in (out / "train").iterdir() if (out / "train").is_dir() else []:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()  # emptied by de-duplication: an empty class folder would break readers
    write_labels(out, classes)
    write_synsets_tsv(out, classes)
    shutil.rmtree(out / ".cnnlab" / "tmp", ignore_errors=True)
    result = {"source": "urls", **report.to_dict(), "classes": len(classes)}
    write_json_atomic(out / "report.json", result)
    return result


def _remove(out: Path, e: Entry) -> None:
    for split in ("train", "val"):
        (out / split / e.wnid / f"{e.image_id}.JPEG").unlink(missing_ok=True)
