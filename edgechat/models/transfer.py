"""Bring a file's bytes from the hub's file host into a partial file, resumably, never forever.

Why not huggingface_hub's ``http_get``? It has no minimum rate (a host that sends one
byte every few seconds never trips its read timeout, so a pull hangs forever), it
fails for good on a ``416`` when the partial file is already complete or longer than
the file, and its errors are library exceptions with multi-line texts. This loop uses
the same HTTP client (``httpx2``, which huggingface_hub brings), resumes after a dropped
connection, restarts a partial the host will not resume, and turns every failure into
one line that says what it means.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from edgechat.errors import EdgechatError

CONNECT_S = 10.0  # connecting, and the longest wait for any byte
STALL_WINDOW_S = 30.0  # a download slower than MIN_RATE over this window is abandoned
MIN_RATE = 1024  # bytes per second
RETRIES = 5  # reconnections in a row with no new byte


class TransferError(EdgechatError):
    """The file host failed, in a way the message explains."""


def status_meaning(status: int, what: str) -> str:
    """What an HTTP status from the hub or its file host means, and what to do."""
    if status == 401:
        return (
            f"the hub needs you signed in for {what} (401): run `edgechat login` with a "
            "token from your account settings"
        )
    if status == 403:
        return (
            f"the hub refused access to {what} (403): accept its licence on the model page "
            "while signed in, or use a token that has read access"
        )
    if status == 404:
        return (
            f"the hub has no {what} (404): check the name; if it is private, `edgechat login` first"
        )
    if status == 429:
        return f"the hub is rate-limiting downloads of {what} (429): wait a minute and retry"
    if 500 <= status < 600:
        return f"the hub had a server error for {what} ({status}): try again later"
    return f"the hub answered {status} for {what}: try again later"


def download(
    url: str,
    partial: Path,
    size: int,
    headers: dict[str, str],
    name: str,
    tqdm_class=None,
    say: Callable[[str], None] = lambda _: None,
    now: Callable[[], float] = time.monotonic,
) -> int:
    """Append ``url``'s bytes to ``partial`` until it holds ``size``; returns bytes fetched."""
    import httpx2

    have = _open_size(partial)
    fetched = 0
    tries = 0
    restarted = False
    bar = None
    if tqdm_class is not None:
        bar = tqdm_class(total=size, initial=have, unit="B", unit_scale=True, desc=name)
    try:
        with httpx2.Client(follow_redirects=True) as client:
            while have < size:
                got_before = have
                try:
                    have, restart = _one_request(
                        client, url, partial, have, size, headers, name, bar, now
                    )
                except (httpx2.TransportError, httpx2.StreamError) as e:
                    if have == got_before:
                        tries += 1
                    else:
                        tries = 0
                    if tries > RETRIES:
                        raise TransferError(
                            f"the connection to the file host kept failing for {name} "
                            f"({type(e).__name__}); check the network and pull again to resume"
                        ) from None
                    have = _open_size(partial)
                    say("the connection dropped; resuming where it stopped")
                    time.sleep(min(0.2 * tries, 1.0))
                    continue
                fetched += max(have - got_before, 0)
                if not restart and have == got_before:
                    tries += 1  # the host closed without sending a byte
                    if tries > RETRIES:
                        raise TransferError(
                            f"the file host stopped sending {name} at {have:,} of {size:,} "
                            "bytes; pull again later to resume"
                        )
                    continue
                if not restart:
                    tries = 0
                if restart:
                    if restarted:
                        raise TransferError(
                            f"the file host will not resume {name} and a fresh start failed "
                            "too; try again later"
                        )
                    restarted = True
                    _truncate(partial)
                    have = 0
                    if bar is not None:
                        bar.reset(total=size)
    finally:
        if bar is not None:
            bar.close()
    return fetched


def _open_size(partial: Path) -> int:
    """The partial file's size, refusing a link or anything but a regular file."""
    try:
        st = os.lstat(partial)
    except FileNotFoundError:
        return 0
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise TransferError(
            f"{partial} is not a regular file (a link or a device?); edgechat did not make "
            "it: move it aside and pull again"
        )
    return st.st_size


def _truncate(partial: Path) -> None:
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0))
    os.close(fd)


def _one_request(client, url, partial, have, size, headers, name, bar, now):
    """One GET from ``have`` on; returns (bytes now held, whether to restart from zero)."""
    import httpx2

    req_headers = dict(headers)
    req_headers["Accept-Encoding"] = "identity"
    if have:
        req_headers["Range"] = f"bytes={have}-"
    timeout = httpx2.Timeout(CONNECT_S, read=CONNECT_S)
    with client.stream("GET", url, headers=req_headers, timeout=timeout) as r:
        if r.status_code == 416 and have:
            return have, True  # the host will not resume from here: start again
        if r.status_code not in (200, 206):
            raise TransferError(status_meaning(r.status_code, f"the file {name}"))
        if "text/html" in r.headers.get("content-type", "").lower():
            raise TransferError(
                f"the file host sent a web page instead of {name} (a login or error page?); "
                "try again later"
            )
        if r.status_code == 200 and have:
            _truncate(partial)  # the range was ignored: the body is the whole file
            have = 0
            if bar is not None:
                bar.reset(total=size)
        elif r.status_code == 206:
            start = r.headers.get("content-range", "").removeprefix("bytes ").split("-")[0]
            if start != str(have):
                return have, True
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(partial, flags, 0o600)
        with os.fdopen(fd, "ab") as fh:
            window_start, window_bytes = now(), 0
            for chunk in r.iter_raw():
                if not chunk:
                    continue
                if have + len(chunk) > size:
                    raise TransferError(
                        f"the file host sent more than the {size:,} bytes the hub lists for "
                        f"{name}; the listing and the file disagree: try again later"
                    )
                fh.write(chunk)
                have += len(chunk)
                window_bytes += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                elapsed = now() - window_start
                if elapsed >= STALL_WINDOW_S:
                    if window_bytes < MIN_RATE * elapsed:
                        fh.flush()
                        raise TransferError(
                            f"the download of {name} crawled at {window_bytes / elapsed:.0f} "
                            f"bytes/s for {elapsed:.0f} s and was stopped; the bytes received "
                            "are kept: pull again later to resume"
                        )
                    window_start, window_bytes = now(), 0
    return have, False
