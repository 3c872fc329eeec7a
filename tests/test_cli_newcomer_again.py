"""What a newcomer found at the command line this time (issue 31 items 9 and 14): a base
model refused as the default where `chat` would refuse it, `history --json`, the same
default_model before and after `config unset`, one clear line for an unknown --model,
replies set apart on a pipe, and "1 CPU" where there is one."""

from __future__ import annotations

import io
import json

import pytest
from support.cli import run_main
from support.fake_engine import FakeEngine
from support.tiny_llama import write_tiny_llama

from edgechat.models.registry import STARTER_ID, starter_model_path
from edgechat.planning.plan import Sampling

# -- 9. a base model as the default --------------------------------------------------------


def test_a_base_model_cannot_be_the_default(tmp_path, edgechat_home):
    """A model with no chat template whose names say nothing of tuning (as Gemma 3 270M
    base): every `chat` would refuse it, so `config set` does, saying what to pick."""
    base = write_tiny_llama(tmp_path / "tiny-base.gguf")
    result = run_main("config", "set", "default_model", str(base))
    assert result.returncode == 1
    err = result.stderr.strip()
    assert "\n" not in err and "is a base model" in err and "cannot be the default" in err
    assert f"{STARTER_ID} (installed)" in err and "edgechat recommend" in err
    assert not (edgechat_home / "config" / "config.toml").exists()  # nothing written
    assert run_main("config", "set", "default_model", str(starter_model_path())).returncode == 0
    assert run_main("config", "set", "default_model", STARTER_ID).returncode == 0


def test_config_and_chat_agree_on_the_issues_model(gemma_path):
    """`config set default_model gemma-3-270m:Q4_K_M` was accepted, then every chat failed."""
    refused = run_main("config", "set", "default_model", str(gemma_path))
    assert refused.returncode == 1 and "is a base model" in refused.stderr
    chat = run_main("chat", "--model", str(gemma_path), "Hello")
    assert chat.returncode == 1 and "is a base model" in chat.stderr
    assert json.loads(run_main("config", "--json").stdout)["settings"]["default_model"] == ""


# -- 14. the rough edges -------------------------------------------------------------------


def test_history_json_works_as_history_list_json():
    from edgechat.tasks.conversations import Store

    store = Store()
    trip = store.create("Trip")
    store.add_message(trip.id, "user", "Where should I go in May?")
    store.close()
    for argv in (
        ("history", "--json"),
        ("history", "list", "--json"),
        ("history", "--json", "list"),
    ):
        result = run_main(*argv)
        assert result.returncode == 0, (argv, result.stderr)
        rows = json.loads(result.stdout)
        assert [(r["title"], r["messages"]) for r in rows] == [("Trip", 1)], argv
    assert run_main("history").stdout.startswith(f"#{trip.id} ")


def test_config_shows_default_model_the_same_before_and_after_unset():
    def shown() -> str:
        out = run_main("config").stdout
        return next(line for line in out.splitlines() if line.strip().startswith("default_model"))

    fresh = shown()
    assert STARTER_ID in fresh  # what an unset default opens, named
    assert run_main("config", "set", "default_model", STARTER_ID).returncode == 0
    assert STARTER_ID in shown()
    assert run_main("config", "unset", "default_model").returncode == 0
    assert shown() == fresh


def test_an_unknown_model_says_what_is_installed_once():
    result = run_main("chat", "--model", "nosuch", "Hello")
    assert result.returncode == 1
    err = result.stderr.strip()
    assert "\n" not in err and f"installed: {STARTER_ID}" in err
    assert "pip install" not in err  # the starter is installed: never offered again
    assert err.count("GGUF") == 1 and err.count("edgechat models pull") == 1
    near = run_main("chat", "--model", "smollm2", "Hello").stderr
    assert f"did you mean {STARTER_ID}?" in near


def test_piped_plain_chat_sets_replies_apart():
    """Replies on a pipe were written back to back ("...paragraph.\\nTwo."): a blank
    line now stands between them, and each reply ends its line once."""
    from edgechat.cli.plain import PlainChat

    answers = {"one": "First.\n\nSecond paragraph.", "two": "Two.\n", "three": "Three."}
    engine = FakeEngine(lambda messages: answers[messages[-1]["content"]])
    out = io.StringIO()
    chat = PlainChat(engine, Sampling(), "", out=out, err=io.StringIO())
    lines = iter(["one", "two", "/stats", "three"])

    def read_line() -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert chat.run(read_line, interactive=False) == 0
    assert out.getvalue() == "First.\n\nSecond paragraph.\n\nTwo.\n\nThree.\n"
    one = io.StringIO()  # one message on a pipe: its reply alone, as before
    PlainChat(engine, Sampling(), "", out=one, err=io.StringIO()).ask("three")
    assert one.getvalue() == "Three.\n"


@pytest.mark.parametrize(
    "limits, words",
    [
        (dict(cpu_quota=1.0, cpu_group="/sys/fs/cgroup/cpu.max"), "1 CPU: /sys/fs/cgroup/cpu.max"),
        (dict(cpu_quota=2.5, cpu_group="/sys/fs/cgroup/cpu.max"), "2.5 CPUs: "),
        (dict(cpus_allowed=1), "affinity: 1 CPU"),
    ],
)
def test_counts_of_one_are_singular(limits, words):
    from edgechat.cli.facts import _cpu_rows
    from edgechat.facts.cgroup import Limits
    from edgechat.facts.device import Device

    d = Device(
        ram_total=1,
        ram_available=1,
        swap_total=0,
        swap_free=0,
        cpu_model="simulated",
        cores_physical=4,
        cores_logical=8,
        simd=(),
        arch="x86_64",
        os="Linux",
        board=None,
        models_dir="/models",
        disk_free=1,
        limits=Limits(**limits),
    )
    text = "\n".join(value for _, value in _cpu_rows(d))
    assert words in text and "1 CPUs" not in text
    one = d.limits.usable_cores(4) == 1
    assert ("this process may use 1 core" in text) == one and "1 cores" not in text
