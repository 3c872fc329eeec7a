"""Other tools' stores and edgechat's own home are untrusted input (issue 30, items 12
and 13; issue 31, item 7): damaged Ollama manifests, pipes and devices where files
should be, LLAMA_CACHE=/proc, odd EDGECHAT_HOME values. Each is one line (a store's bad
entry is skipped with its reason while the rest are listed), never a traceback, a hang
or a walk out of the store; and the name a model was imported by works."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from support.cli import run_main
from support.ggufs import tiny_gguf

from edgechat.models import registry, stores

LIST = "application/vnd.ollama.manifest.list.v2+json"


class Ollama:
    """An Ollama store under ``root`` (OLLAMA_MODELS), written as `ollama pull` does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)

    def blob(self, data: bytes | Path) -> str:
        content = data.read_bytes() if isinstance(data, Path) else data
        digest = hashlib.sha256(content).hexdigest()
        target = self.root / "blobs" / f"sha256-{digest}"
        if isinstance(data, Path):
            os.link(data, target) if not target.exists() else None
        else:
            target.write_bytes(content)
        return f"sha256:{digest}"

    def manifest(self, name: str, body) -> Path:
        path = self.root / "manifests" / "registry.ollama.ai" / "library" / name.replace(":", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body if isinstance(body, str) else json.dumps(body))
        return path

    def model(self, name: str, file: Path) -> Path:
        layer = {"mediaType": "application/vnd.ollama.image.model", "digest": self.blob(file)}
        return self.manifest(name, {"schemaVersion": 2, "layers": [layer | {"size": 1}]})


@pytest.fixture
def ollama(tmp_path, monkeypatch):
    store = Ollama(tmp_path / "ollama")
    monkeypatch.setenv("OLLAMA_MODELS", str(store.root))
    store.model("good:latest", tiny_gguf(tmp_path / "good.gguf"))
    return store


def no_traceback(ran) -> None:
    assert "Traceback" not in ran.stderr + ran.stdout


def weights(store: Ollama, **layer) -> dict:
    base = {"mediaType": "application/vnd.ollama.image.model"}
    return {"schemaVersion": 2, "layers": [base | layer]}


# -- 12: Ollama manifests of the wrong shapes ---------------------------------------------

BAD_MANIFESTS = {
    "layers 5": {"schemaVersion": 2, "layers": 5},
    "layers a string": {"layers": "model"},
    "manifests 5": {"mediaType": LIST, "manifests": 5},
    "manifests of strings": {"mediaType": LIST, "manifests": ["x", 5]},
    "a list": [1, 2, 3],
    "deep": "[" * 200_000 + "]" * 200_000,
    "not JSON": "{manifest",
    "digest a path": {"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                  "digest": "../../../../etc/passwd"}]},
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_a_bad_manifest_is_one_line_and_the_rest_are_listed(case, ollama, tmp_path):
    ollama.manifest("bad:latest", BAD_MANIFESTS[case])
    found = {f.name: f for f in stores.discover(["ollama"])}
    assert found["good:latest"].usable
    assert not found["bad:latest"].usable and found["bad:latest"].problem
    listed = run_main("models", "list", "--all")
    no_traceback(listed)
    assert listed.returncode == 0 and "good:latest" in listed.stdout
    assert "not usable: ollama bad:latest" in listed.stdout
    imported = run_main("models", "import", "--from", "ollama", "bad")
    no_traceback(imported)
    assert imported.returncode == 1 and imported.stderr.count("\n") == 1


@pytest.mark.parametrize("size", ['"abc"', "1e400", "-1", "true", "[1]", "null"])
def test_a_size_that_is_not_one_is_not_believed(size, ollama, tmp_path):
    """A missing blob's size is the manifest's: never a traceback, whatever it holds."""
    text = json.dumps(weights(ollama, digest="sha256:" + "4" * 64, size=0))
    ollama.manifest("gone:latest", text.replace('"size": 0', f'"size": {size}'))
    missing = {f.name: f for f in stores.discover(["ollama"])}["gone:latest"]
    assert missing.size == 0 and "not in the store" in missing.problem
    listed = run_main("models", "list", "--all")
    no_traceback(listed)
    assert listed.returncode == 0 and "good:latest" in listed.stdout


@pytest.mark.timeout(60)
def test_pipes_and_devices_in_the_store_are_never_waited_on_or_read(ollama, tmp_path):
    fifo_manifest = ollama.root / "manifests" / "registry.ollama.ai" / "library" / "fifo" / "latest"
    fifo_manifest.parent.mkdir(parents=True)
    os.mkfifo(fifo_manifest)
    ollama.manifest("pipeblob:latest", weights(ollama, digest="sha256:" + "1" * 64))
    os.mkfifo(ollama.root / "blobs" / ("sha256-" + "1" * 64))
    ollama.manifest("zeroblob:latest", weights(ollama, digest="sha256:" + "2" * 64))
    os.symlink("/dev/zero", ollama.root / "blobs" / ("sha256-" + "2" * 64))
    child = {"format": "gguf", "digest": "sha256:" + "3" * 64}  # a list's child: /dev/zero
    ollama.manifest("zerolist:latest", {"mediaType": LIST, "manifests": [child]})
    os.symlink("/dev/zero", ollama.root / "blobs" / ("sha256-" + "3" * 64))
    found = {f.name: f for f in stores.discover(["ollama"])}
    assert found["good:latest"].usable
    for name in ("fifo:latest", "pipeblob:latest", "zeroblob:latest", "zerolist:latest"):
        assert not found[name].usable, name
    assert "a pipe" in found["pipeblob:latest"].problem
    assert "a device" in found["zeroblob:latest"].problem
    ran = run_main("models", "import", "--from", "ollama", "zeroblob")
    no_traceback(ran)
    assert ran.returncode == 1 and "a device" in ran.stderr


@pytest.mark.parametrize("name", ["", "   ", "/", ":latest"])
def test_an_import_with_no_name_is_one_line(name, ollama):
    ran = run_main("models", "import", "--from", "ollama", name)
    no_traceback(ran)
    assert ran.returncode == 1 and ran.stderr.count("\n") == 1


@pytest.mark.timeout(60)
def test_llama_cache_in_proc_is_no_store(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMA_CACHE", "/proc")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert stores.llamacpp() == []
    ran = run_main("models", "list", "--all")
    no_traceback(ran)
    assert ran.returncode == 0


def test_a_walk_never_follows_a_link_out_of_the_store(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    tiny_gguf(cache / "mine.gguf")
    outside = tmp_path / "elsewhere" / "deep"
    tiny_gguf(outside / "theirs.gguf")
    (cache / "out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (cache / "inner").symlink_to(cache, target_is_directory=True)  # a loop inside
    monkeypatch.setenv("LLAMA_CACHE", str(cache))
    names = [f.path.name for f in stores.llamacpp()]
    assert names == ["mine.gguf"]


def test_lm_studio_settings_that_are_a_pipe_do_not_hang(tmp_path, monkeypatch):
    from edgechat.models.storepaths import lmstudio_roots

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".lmstudio").mkdir()
    os.mkfifo(tmp_path / ".lmstudio" / "settings.json")
    os.mkfifo(tmp_path / ".lmstudio-home-pointer")
    assert lmstudio_roots()[0] == tmp_path / ".lmstudio" / "models"


# -- issue 31, 7: the name a model was imported by works ------------------------------------


@pytest.mark.subprocess  # importing checks that llama.cpp loads it, in a child
def test_the_name_an_ollama_model_was_imported_by_works(ollama, starter_path):
    ollama.model("smol:latest", starter_path)
    ran = run_main("models", "import", "--from", "ollama", "smol")
    assert ran.returncode == 0, ran.stderr
    model_id = ran.stdout.split()[1].rstrip(":")
    assert model_id == "smol:Q4_1"
    for name in ("smol", "smol:latest", "SMOL", "registry.ollama.ai/library/smol:latest"):
        assert os.path.samefile(registry.resolve(name), starter_path), name  # its blob
    info = run_main("models", "info", "smol")
    assert info.returncode == 0, info.stderr


def test_an_id_without_its_quant_names_the_one_installed(tmp_path):
    a = tiny_gguf(tmp_path / "a.gguf")
    registry.register("mine:F32", {"path": str(a), "files": [str(a)], "source": "import"})
    assert registry.resolve("mine") == a
    b = tiny_gguf(tmp_path / "b.gguf")
    registry.register("mine:Q8_0", {"path": str(b), "files": [str(b)], "source": "import"})
    with pytest.raises(Exception, match="names mine:F32, mine:Q8_0"):
        registry.resolve("mine")


@pytest.mark.model
@pytest.mark.subprocess
def test_chat_with_the_name_it_was_imported_by(ollama, starter_path):
    ollama.model("smol:latest", starter_path)
    assert run_main("models", "import", "--from", "ollama", "smol").returncode == 0
    for name in ("smol", "smol:latest"):
        ran = run_main("chat", "--model", name, "--max-tokens", "2", "Hi")
        assert ran.returncode == 0, ran.stderr


# -- 13: EDGECHAT_HOME that cannot be used ------------------------------------------------

COMMANDS = [
    ("history", "list"),
    ("history", "search", "x"),
    ("history", "list", "--json"),
    ("models", "list"),
    ("config", "show"),
    ("config", "set", "ctx", "4096"),
    ("recommend",),
]


def homes(tmp_path: Path) -> dict[str, str]:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    return {
        "/proc": "/proc",
        "/proc/self": "/proc/self",
        "5000 characters": "/tmp/" + "a" * 5000,
        "a symlink loop": str(loop),
        "a file": str(tiny_gguf(tmp_path / "file.gguf")),
    }


@pytest.mark.parametrize("which", ["/proc", "/proc/self", "5000 characters", "a symlink loop",
                                   "a file"])  # fmt: skip
def test_a_home_that_cannot_be_used_is_one_line_for_every_command(which, tmp_path):
    home = homes(tmp_path)[which]
    for command in COMMANDS:
        ran = run_main(*command, env={"EDGECHAT_HOME": home})
        no_traceback(ran)
        if ran.returncode:
            assert ran.stderr.count("\n") == 1, (command, ran.stderr)
            assert len(ran.stderr) < 600, (command, ran.stderr)  # a long path is cut short
            assert "EDGECHAT_HOME" in ran.stderr, (command, ran.stderr)


def test_a_relative_home_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in COMMANDS:
        ran = run_main(*command, env={"EDGECHAT_HOME": "rel/home"})
        no_traceback(ran)
        assert ran.returncode == 1 and "EDGECHAT_HOME is a relative path" in ran.stderr
    assert not (tmp_path / "rel").exists()  # nothing was written under this folder


@pytest.mark.model
def test_a_chat_goes_on_where_the_home_takes_nothing(starter_path):
    """Noting when the model was last used is worth no lost chat (nor a model left open)."""
    ran = run_main("chat", "--plain", "--cpu-kernels", "plain", "--max-tokens", "2", "Hi",
                   env={"EDGECHAT_HOME": "/proc"})  # fmt: skip
    no_traceback(ran)
    assert ran.returncode == 0 and "not noted as used" in ran.stderr
