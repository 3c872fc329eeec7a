"""Models other tools keep on this disk, found in each store's real layout in a temporary
home: Ollama's manifests and blobs, LM Studio's folders, llama.cpp's cache and the
Hugging Face cache. Listed with where they live, imported where they lie, forgotten by
`models rm`; nothing of theirs is ever moved, changed or deleted."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from support.cli import run_cli
from support.ggufs import tiny_gguf

from edgechat.errors import EdgechatError
from edgechat.models import ollama, registry, stores

COMMIT = "a" * 40


@pytest.fixture(scope="session")
def starter_copy(starter_path, tmp_path_factory) -> tuple[Path, str]:
    """The starter's bytes once in the temporary tree (hard-linked into each store, so
    every store's file is its own path) and their SHA-256, as Ollama names blobs."""
    copy = tmp_path_factory.mktemp("starter") / "model.gguf"
    shutil.copyfile(starter_path, copy)
    return copy, hashlib.sha256(copy.read_bytes()).hexdigest()


def place(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def blob(root: Path, data_or_file: bytes | Path) -> tuple[str, int]:
    """Store content as Ollama does: blobs/sha256-<hex>; returns (digest, size)."""
    if isinstance(data_or_file, Path):
        digest = hashlib.sha256(data_or_file.read_bytes()).hexdigest()
        place(data_or_file, root / "blobs" / f"sha256-{digest}")
        return f"sha256:{digest}", data_or_file.stat().st_size
    digest = hashlib.sha256(data_or_file).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data_or_file)
    return f"sha256:{digest}", len(data_or_file)


def manifest(root: Path, name: str, layers: list[tuple[str, bytes | Path]], **extra) -> Path:
    """manifests/<host>/<namespace>/<model>/<tag>, the JSON `ollama pull` writes."""
    config = blob(root, json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
    entry = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": config[0],
            "size": config[1],
        },
        "layers": [
            {"mediaType": f"application/vnd.ollama.image.{kind}", "digest": d, "size": n}
            for kind, content in layers
            for d, n in [blob(root, content)]
        ],
        **extra,
    }
    path = root / "manifests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry))
    return path


@pytest.fixture
def home(tmp_path, monkeypatch, starter_copy):
    """A fresh home holding every store's layout; no store variable set but HF_HOME."""
    starter, _ = starter_copy
    user = tmp_path / "user"
    monkeypatch.setenv("HOME", str(user))
    for name in ("OLLAMA_MODELS", "LLAMA_CACHE", "XDG_CACHE_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))

    # Ollama: a library model, a user's model, a hub model, a vision model with its
    # projector, a safetensors model for Ollama's own engine, and a pull never finished.
    om = user / ".ollama" / "models"
    template = ("template", b"{{ .Prompt }}")
    params = ("params", b'{"stop": ["<|im_end|>"]}')
    manifest(om, "registry.ollama.ai/library/smollm2/135m", [("model", starter), template, params])
    manifest(om, "registry.ollama.ai/someone/tiny/latest", [("model", tiny_gguf(tmp_path / "t1"))])
    manifest(om, "hf.co/bartowski/Tiny-GGUF/Q4_K_M", [("model", tiny_gguf(tmp_path / "t2", "hf"))])
    manifest(
        om,
        "registry.ollama.ai/library/seeing/latest",
        [("model", tiny_gguf(tmp_path / "t3", "v")), ("projector", tiny_gguf(tmp_path / "p"))],
    )
    manifest(
        om,
        "registry.ollama.ai/library/mlxthing/latest",
        [("tensor", b"\x00" * 64)],
        format="safetensors",
        runner="mlx",
    )
    gone = manifest(om, "registry.ollama.ai/library/halfway/latest", [("model", b"GGUF")])
    digest = json.loads(gone.read_text())["layers"][0]["digest"].replace(":", "-")
    (om / "blobs" / digest).unlink()

    # LM Studio: publisher/repo/file.gguf, a vision model with its mmproj, a split model
    # (and one with a part missing), an MLX folder of safetensors.
    lm = user / ".lmstudio" / "models"
    place(starter, lm / "lmstudio-community" / "SmolLM2-GGUF" / "SmolLM2-135M-Q4_1.gguf")
    tiny_gguf(lm / "vision" / "Seer-GGUF" / "Seer-Q4_K_M.gguf")
    tiny_gguf(lm / "vision" / "Seer-GGUF" / "mmproj-Seer-f16.gguf")
    for part in (1, 2):
        tiny_gguf(lm / "big" / "Big-GGUF" / f"Big-Q4_K_M-{part:05d}-of-00002.gguf")
    tiny_gguf(lm / "big" / "Broken-GGUF" / "Broken-Q4_K_M-00001-of-00003.gguf")
    mlx = lm / "mlx-community" / "Thing-4bit"
    mlx.mkdir(parents=True)
    (mlx / "config.json").write_text("{}")
    (mlx / "model.safetensors").write_bytes(b"\x00" * 32)

    # llama.cpp's cache: older `-hf` downloads (owner_repo_file.gguf) with their etag
    # notes, and an unfinished download.
    lc = user / ".cache" / "llama.cpp"
    place(starter, lc / "bartowski_SmolLM2-135M-Instruct-GGUF_SmolLM2-135M-Instruct-Q4_1.gguf")
    (lc / "bartowski_SmolLM2-135M-Instruct-GGUF_SmolLM2-135M-Instruct-Q4_1.gguf.json").write_text(
        '{"etag": "x"}'
    )
    (lc / "other_Repo_file.gguf.downloadInProgress").write_bytes(b"GGUF")

    # The Hugging Face cache: a GGUF repo someone else pulled (blobs, snapshots, refs).
    repo = tmp_path / "hf" / "hub" / "models--someone--Smol-GGUF"
    _, sha = starter_copy
    place(starter, repo / "blobs" / sha)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    link = repo / "snapshots" / COMMIT / "smol-q4_1.gguf"
    link.parent.mkdir(parents=True)
    link.symlink_to(Path("..") / ".." / "blobs" / sha)
    (repo / "snapshots" / COMMIT / "README.md").write_text("# Smol")
    return user


def snapshot(*roots: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and link under ``roots``: size, mtime and (for links) the target."""
    seen = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            st = path.lstat()
            target = os.readlink(path) if path.is_symlink() else ""
            seen[str(path)] = (st.st_size, st.st_mtime_ns, target)
    return seen


def test_every_store_is_found_in_its_real_layout(home, tmp_path):
    found = {(f.store, f.name): f for f in stores.discover()}
    ok = sorted(k for k, f in found.items() if f.usable)
    assert ok == [
        ("hf", "someone/Smol-GGUF/smol-q4_1.gguf"),
        ("llamacpp", "bartowski_SmolLM2-135M-Instruct-GGUF_SmolLM2-135M-Instruct-Q4_1.gguf"),
        ("lmstudio", "big/Big-GGUF/Big-Q4_K_M-00001-of-00002.gguf"),
        ("lmstudio", "lmstudio-community/SmolLM2-GGUF/SmolLM2-135M-Q4_1.gguf"),
        ("lmstudio", "vision/Seer-GGUF/Seer-Q4_K_M.gguf"),
        ("ollama", "hf.co/bartowski/Tiny-GGUF:Q4_K_M"),
        ("ollama", "seeing:latest"),
        ("ollama", "smollm2:135m"),
        ("ollama", "someone/tiny:latest"),
    ]
    smol = found[("ollama", "smollm2:135m")]
    assert smol.path.parent == home / ".ollama" / "models" / "blobs"
    assert smol.path.name.startswith("sha256-") and smol.suggested_id == "smollm2-135m"
    assert found[("ollama", "seeing:latest")].projector is not None  # attached, not a model
    big = found[("lmstudio", "big/Big-GGUF/Big-Q4_K_M-00001-of-00002.gguf")]
    assert len(big.files) == 2 and big.size == sum(f.stat().st_size for f in big.files)
    assert big.suggested_id == "big"  # the quant comes from the header on import
    lc = found[("llamacpp", "bartowski_SmolLM2-135M-Instruct-GGUF_SmolLM2-135M-Instruct-Q4_1.gguf")]
    assert lc.suggested_id == "smollm2-135m-instruct"
    seer = found[("lmstudio", "vision/Seer-GGUF/Seer-Q4_K_M.gguf")]
    assert seer.projector.name == "mmproj-Seer-f16.gguf"
    assert not any("mmproj" in name for _, name in found)
    problems = {k: f.problem for k, f in found.items() if not f.usable}
    assert "not in the store" in problems[("ollama", "halfway:latest")]
    assert "safetensors" in problems[("ollama", "mlxthing:latest")]
    assert "safetensors" in problems[("lmstudio", "mlx-community/Thing-4bit")]
    assert (
        "1 of its 3 parts"
        in problems[("lmstudio", "big/Broken-GGUF/Broken-Q4_K_M-00001-of-00003.gguf")]
    )


def test_the_environment_moves_each_store(home, tmp_path, monkeypatch, starter_copy):
    starter, _ = starter_copy
    moved = tmp_path / "elsewhere"
    manifest(moved / "ollama", "registry.ollama.ai/library/moved/v1", [("model", starter)])
    place(starter, moved / "llama" / "org_repo_moved.gguf")
    monkeypatch.setenv("OLLAMA_MODELS", f'"{moved / "ollama"}" ')  # quoted, as Ollama trims
    monkeypatch.setenv("LLAMA_CACHE", str(moved / "llama"))
    names = {(f.store, f.name) for f in stores.discover(["ollama", "llamacpp"])}
    assert names == {("ollama", "moved:v1"), ("llamacpp", "org_repo_moved.gguf")}
    (home / ".lmstudio-home-pointer").write_text(str(moved / "lms-home"))
    place(starter, moved / "lms-home" / "models" / "pub" / "repo" / "m.gguf")
    assert [f.name for f in stores.discover(["lmstudio"])] == ["pub/repo/m.gguf"]


def test_ollama_names_as_ollama_reads_them():
    assert ollama.canonical("llama3.2") == ("registry.ollama.ai", "library", "llama3.2", "latest")
    assert ollama.canonical("Llama3.2:3B") == ollama.canonical("library/llama3.2:3b")
    assert ollama.canonical("ollama.com/library/x:1") == ollama.canonical("x:1")
    assert ollama.canonical("hf.co/owner/repo:Q4_K_M")[0] == "hf.co"
    assert ollama.blob(Path("/m"), "sha256:../../etc/passwd") is None  # never a path


def test_a_manifest_list_and_manifests_v2_are_read(home, starter_copy):
    starter, sha = starter_copy
    om = home / ".ollama" / "models"
    gguf_child = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "runner": "ollama",
        "format": "gguf",
        "layers": [{"mediaType": ollama.MODEL, "digest": f"sha256:{sha}", "size": 1}],
    }
    mlx_child = {**gguf_child, "runner": "mlx", "format": "safetensors", "layers": []}
    listing = {"schemaVersion": 2, "mediaType": ollama.MANIFEST_LIST}
    listing["manifests"] = [mlx_child, gguf_child]
    data = json.dumps(listing).encode()
    digest, _ = blob(om, data)
    entry = om / "manifests-v2" / "ollama.com" / "library" / "both" / "latest"
    entry.parent.mkdir(parents=True)
    entry.symlink_to(os.path.relpath(om / "blobs" / digest.replace(":", "-"), entry.parent))
    both = stores.find("ollama", "both")
    assert both.path == om / "blobs" / f"sha256-{sha}" and both.usable


@pytest.mark.subprocess  # importing asks llama.cpp in a child whether the file loads
def test_import_from_each_store_without_copying_then_rm_only_forgets(home, tmp_path):
    theirs = [home, tmp_path / "hf"]
    before = snapshot(*theirs)
    imported = {}
    # Each import asks llama.cpp in a child process whether the file loads (about a
    # second): the two layouts unlike a plain file, a blob without an extension and a
    # snapshot link into the hub's blobs; the CLI test imports through the others.
    for store, name in [
        ("ollama", "smollm2:135m"),
        ("hf", "someone/Smol-GGUF"),
    ]:
        record = stores.adopt(store, name)
        imported[store] = record
        assert record["source"] == store and record["store_name"]
        assert Path(record["path"]).is_file() and tmp_path in Path(record["path"]).parents
    assert imported["ollama"]["id"] == "smollm2-135m:Q4_1"
    assert imported["hf"]["path"].endswith(f"snapshots/{COMMIT}/smol-q4_1.gguf")
    installed = registry.installed()
    assert {r["id"] for r in imported.values()} <= set(installed)
    assert not {f.name for f in stores.discover()} & {r["store_name"] for r in imported.values()}
    with pytest.raises(EdgechatError, match="already imported as smollm2-135m:Q4_1"):
        stores.adopt("ollama", "registry.ollama.ai/library/smollm2:135m")
    from edgechat.models.hub import remove

    for record in imported.values():
        _, freed = remove(record["id"])
        assert freed == 0
    assert registry.records() == {}
    assert snapshot(*theirs) == before  # nothing of theirs moved, changed or deleted


def test_what_cannot_be_imported_says_why_and_what_is_there(home):
    with pytest.raises(EdgechatError, match="no model 'nothere' in Ollama's store; it holds: "):
        stores.find("ollama", "nothere")
    with pytest.raises(EdgechatError, match="cannot be used: safetensors"):
        stores.find("ollama", "mlxthing")
    with pytest.raises(EdgechatError, match="'big' matches 2 models"):
        stores.find("lmstudio", "big")
    with pytest.raises(EdgechatError, match="only 1 of its 3 parts are here"):
        stores.find("lmstudio", "big/Broken-GGUF")


@pytest.mark.subprocess
def test_the_cli_lists_imports_and_forgets_in_a_fresh_home(home, tmp_path):
    env = {"HOME": str(home), "HF_HOME": str(tmp_path / "hf")}
    listed = run_cli("models", "list", "--all", env=env)
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout
    assert "on this machine, kept by other tools" in out
    assert "smollm2:135m" in out and str(home / ".ollama" / "models" / "blobs") in out
    assert "not usable: ollama mlxthing:latest: safetensors" in out
    as_json = json.loads(run_cli("models", "list", "--all", "--json", env=env).stdout)
    smol = next(r for r in as_json if r.get("name") == "smollm2:135m")
    assert smol["store"] == "ollama" and smol["suggested_id"] == "smollm2-135m"
    done = run_cli("models", "import", "--from", "ollama", "smollm2:135m", env=env)
    assert done.returncode == 0, done.stderr
    assert "imported smollm2-135m:Q4_1: smollm2:135m from Ollama's store" in done.stdout
    assert "nothing copied" in done.stdout
    again = run_cli("models", "list", env=env).stdout
    assert "smollm2-135m:Q4_1" in again and "ollama: smollm2:135m" in again
    copy = run_cli("models", "import", "--from", "ollama", "x", "--copy", env=env)
    assert copy.returncode == 1 and "--from registers the model where it lies" in copy.stderr
    gone = run_cli("models", "rm", "smollm2-135m:Q4_1", env=env)
    assert gone.returncode == 0 and "nothing was deleted" in gone.stdout
    missing = run_cli("models", "import", "--from", "lmstudio", "nope", env=env)
    assert missing.returncode == 1 and "no model 'nope' in LM Studio's" in missing.stderr


@pytest.mark.subprocess  # importing asks llama.cpp in a child whether the file loads
async def test_the_picker_offers_them_on_this_machine_and_loads_one(home, starter_path):
    import time

    from support.devices import simulated_device

    from edgechat.tui.app import EdgechatApp, LaunchOptions
    from edgechat.tui.wizard import ON_THIS_MACHINE, RANKED, WizardScreen

    laptop = simulated_device(overrides=("memory=16.0 GiB",))  # no bandwidth to measure
    app = EdgechatApp(LaunchOptions(start="auto"), device=laptop)
    async with app.run_test(size=(100, 30)) as pilot:
        deadline = time.monotonic() + 60
        while not isinstance(app.screen, WizardScreen):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        wizard = app.screen
        heading, ranked = wizard.rows.index(ON_THIS_MACHINE), wizard.rows.index(RANKED)
        assert heading == 0  # what works offline at once comes first
        assert "ollama:smollm2:135m" in wizard.rows[heading:ranked]
        assert "smollm2-135m-instruct:Q4_1" in wizard.rows[ranked:]  # installed, in the ranking
        assert "lmstudio:lmstudio-community/SmolLM2-GGUF/SmolLM2-135M-Q4_1.gguf" in wizard.rows
        table = wizard.query_one("#choices")
        for row in (heading, ranked):
            table.move_cursor(row=row)
            await pilot.press("enter")  # a heading is not a model: nothing happens
            assert isinstance(app.screen, WizardScreen)
        table.move_cursor(row=wizard.rows.index("ollama:smollm2:135m"))
        await pilot.press("enter")
        while app.model_id != "smollm2-135m:Q4_1" or app.engine is None:
            assert time.monotonic() < deadline + 60, "the import and load never finished"
            await pilot.pause(0.05)
    record = registry.records()["smollm2-135m:Q4_1"]
    assert record["source"] == "ollama" and record["store_name"] == "smollm2:135m"
