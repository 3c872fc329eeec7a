"""A hostile hub: lying listings, bad digests, every HTTP failure, a trickling CDN.

Each case must end in one clear line (an ``EdgechatError``), leave nothing registered,
and touch nothing outside ``HF_HOME``: a sentinel tree next to it is compared byte for
byte before and after.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import REPO, run_cli, run_main
from support.hubserver import Hub

from edgechat.errors import EdgechatError
from edgechat.models import hub, registry, transfer

OWNER = "evil/model-GGUF"
GOOD = "m-Q4_K_M.gguf"
PAYLOAD = b"GGUF" + os.urandom(300_000)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """HF_HOME under tmp_path/home/hf, and a sentinel tree beside it that must not change."""
    home = tmp_path / "home" / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "precious.txt").write_text("keep me")
    (outside / "deep" / "x.gguf").write_bytes(b"mine")
    return home, outside


def tree(root: Path) -> dict[str, bytes | str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = (
            f"-> {os.readlink(p)}" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
        )
    return out


def refused(server: Hub, world, spec: str, *match: str) -> str:
    """Pull ``spec``: it must fail with one line, register nothing, change nothing outside."""
    _, outside = world
    before = tree(outside)
    with pytest.raises(EdgechatError) as err:
        hub.pull(spec)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    for m in match:
        assert m in message, message
    assert registry.records() == {}
    assert tree(outside) == before
    return message


def serve(files: dict, **faults) -> Hub:
    server = Hub({OWNER: files})
    for k, v in faults.items():
        setattr(server, k, v)
    return server


@pytest.fixture
def endpoint(monkeypatch):
    def use(server: Hub) -> Hub:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        return server

    return use


TRAVERSAL_NAMES = [
    "../../outside/precious-Q4_K_M.gguf",
    "../../../outside/deep/x-Q4_K_M.gguf",
    "/tmp/abs-Q4_K_M.gguf",
    "sub/../../m-Q4_K_M.gguf",
    "a\\..\\..\\m-Q4_K_M.gguf",
    "sub//m-Q4_K_M.gguf",
    "m\x1b]0;pwned\x07-Q4_K_M.gguf",
]


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_file_names_from_the_listing_stay_inside_the_cache(world, endpoint, name):
    with endpoint(serve({name: PAYLOAD})) as server:
        msg = refused(server, world, f"{OWNER}:Q4_K_M", "not a plain relative path")
        assert "\x1b" not in msg


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("commit", "../../outside", "no valid commit id"),
        ("commit", "main/../../x", "no valid commit id"),
        ("commit", None, "no valid commit id"),
        ("listed_sha", "../../outside/precious.txt", "no valid SHA-256"),
        ("listed_sha", "/etc/passwd", "no valid SHA-256"),
        ("listed_sha", "A" * 63, "no valid SHA-256"),
        ("linked_etag", "0" * 64, "two different SHA-256"),
        ("served_size", 12345, "disagree"),
        ("claimed_size", 55 * 10**12, "which no model file is"),
        ("claimed_size", -5, "no valid size"),
    ],
)
def test_bad_listing_fields_are_refused(world, endpoint, field, value, words):
    with endpoint(serve({GOOD: PAYLOAD}, **{field: value})) as server:
        refused(server, world, f"{OWNER}:Q4_K_M", words)
        assert not [r for r in server.requests if r[1].startswith("/blobs/")]


def test_etag_shaped_like_a_path_is_refused_when_the_listing_has_no_hash(world, endpoint):
    server = serve({GOOD: PAYLOAD}, linked_etag="../../../outside/precious.txt")
    server.listed_sha = ""  # no LFS hash: the ETag would be the blob's name
    with endpoint(server):
        refused(server, world, f"{OWNER}:Q4_K_M", "no valid SHA-256")


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Welcome</body></html>", b"[]", b'{"siblings": 7}', b'"text"', b"{", b""],
)
def test_api_answering_html_or_the_wrong_json(world, endpoint, body):
    with endpoint(serve({GOOD: PAYLOAD}, api_body=body)) as server:
        refused(server, world, f"{OWNER}:Q4_K_M", "HF_ENDPOINT")


@pytest.mark.parametrize(
    "where, status, words",
    [
        ("api_status", 401, "signed in"),
        ("api_status", 403, "refused access"),
        ("api_status", 404, "(404)"),
        ("api_status", 500, "server error"),
        ("resolve_status", 403, "refused access"),
        ("resolve_status", 502, "server error"),
        ("cdn_status", 500, "server error"),
        ("cdn_status", 401, "signed in"),
        ("cdn_status", 403, "refused access"),
        ("cdn_status", 404, "(404)"),
    ],
)
def test_http_errors_each_say_what_they_mean(world, endpoint, where, status, words):
    with endpoint(serve({GOOD: PAYLOAD}, **{where: status})) as server:
        msg = refused(server, world, f"{OWNER}:Q4_K_M", words)
        assert "try again later" not in msg or status >= 500


def test_cdn_web_page_instead_of_the_file(world, endpoint):
    with endpoint(serve({GOOD: PAYLOAD}, cdn_type="text/html; charset=utf-8")) as server:
        refused(server, world, f"{OWNER}:Q4_K_M", "web page")


def test_416_on_resume_restarts_the_partial(world, endpoint):
    home, _ = world
    with endpoint(serve({GOOD: PAYLOAD}, cdn_416_on_range=True)) as server:
        blobs = hub.repo_folder(OWNER) / "blobs"
        blobs.mkdir(parents=True)
        sha = hashlib.sha256(PAYLOAD).hexdigest()
        (blobs / f"{sha}.incomplete").write_bytes(b"stale bytes of another try")
        pulled = hub.pull(f"{OWNER}:Q4_K_M")
        assert pulled.path.read_bytes() == PAYLOAD
        ranges = [r for m, p, r in server.requests if p.startswith("/blobs/")]
        assert ranges == ["bytes=26-", None]


def test_a_complete_partial_is_not_a_416_forever(world, endpoint):
    with endpoint(serve({GOOD: PAYLOAD}, cdn_416_on_range=True)):
        blobs = hub.repo_folder(OWNER) / "blobs"
        blobs.mkdir(parents=True)
        sha = hashlib.sha256(PAYLOAD).hexdigest()
        (blobs / f"{sha}.incomplete").write_bytes(PAYLOAD)
        assert hub.pull(f"{OWNER}:Q4_K_M").path.read_bytes() == PAYLOAD


def test_trickling_cdn_is_abandoned_not_waited_on_forever(world, endpoint, monkeypatch):
    monkeypatch.setattr(transfer, "STALL_WINDOW_S", 1.5)
    with endpoint(serve({GOOD: PAYLOAD}, trickle=0.3)) as server:
        started = time.monotonic()
        refused(server, world, f"{OWNER}:Q4_K_M", "crawled", "resume")
        assert time.monotonic() - started < 10


def test_partial_that_is_a_link_is_not_followed(world, endpoint, tmp_path):
    _, outside = world
    with endpoint(serve({GOOD: PAYLOAD})) as server:
        blobs = hub.repo_folder(OWNER) / "blobs"
        blobs.mkdir(parents=True)
        sha = hashlib.sha256(PAYLOAD).hexdigest()
        (blobs / f"{sha}.incomplete").symlink_to(outside / "precious.txt")
        refused(server, world, f"{OWNER}:Q4_K_M", "not a regular file")


def test_snapshot_entry_edgechat_did_not_make_is_left_alone(world, endpoint):
    with endpoint(serve({GOOD: PAYLOAD})) as server:
        entry = hub.repo_folder(OWNER) / "snapshots" / server.commit / GOOD
        entry.parent.mkdir(parents=True)
        entry.write_bytes(b"someone else's file")
        refused(server, world, f"{OWNER}:Q4_K_M", "did not make it")
        assert entry.read_bytes() == b"someone else's file"


@pytest.mark.parametrize("spec", ["../../x:Q4_K_M", "a/../../b:Q4_K_M", "/abs/x:Q4_K_M"])
def test_repo_ids_that_are_paths_are_refused(world, spec):
    with pytest.raises(EdgechatError, match="not a hub repo id"):
        hub.pull(spec)


@pytest.mark.subprocess
def test_two_pulls_of_one_model_at_once(world, endpoint):
    home, _ = world
    with endpoint(serve({GOOD: PAYLOAD}, chunk_delay=0.0, trickle=0.002)) as server:
        env = {**os.environ, "HF_HOME": str(home), "HF_ENDPOINT": server.url}
        first = subprocess.Popen(
            [sys.executable, "-m", "edgechat", "models", "pull", f"{OWNER}:Q4_K_M"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        blobs = hub.repo_folder(OWNER) / "blobs"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(blobs.glob("*.incomplete")):
            time.sleep(0.05)
        second = run_cli("models", "pull", f"{OWNER}:Q4_K_M", env=env)
        assert second.returncode == 1 and "another pull is downloading" in second.stderr
        assert "Traceback" not in second.stderr
        first.kill()
        first.communicate(timeout=30)


def test_rm_deletes_only_inside_edgechat_folders(world, edgechat_home):
    _, outside = world
    before = tree(outside)
    registry.register(
        "evil:Q4_K_M",
        {
            "path": str(outside / "precious.txt"),
            "files": [str(outside / "precious.txt"), str(outside / "deep" / "x.gguf")],
            "source": "hub",
            "sha256": [],
        },
    )
    registry.register(
        "evil2:Q4_K_M",
        {"path": str(outside / "deep" / "x.gguf"), "source": "copy", "sha256": []},
    )
    assert run_main("models", "rm", "evil:Q4_K_M").returncode == 0
    assert run_main("models", "rm", "evil2:Q4_K_M").returncode == 0
    assert tree(outside) == before and registry.records() == {}
