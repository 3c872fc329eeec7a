"""A user's models.toml is checked value by value against limits.py's catalog schema: a
bad value leaves out that one entry with one line naming the file, the model and the key,
through the reader, `recommend`, `estimate`, `models info` and the picker's ranking."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
from conftest import simulated_device

from edgechat import limits
from edgechat.cli import main
from edgechat.paths import paths
from edgechat.planning import catalog
from edgechat.planning.memory import QUANT_BITS
from edgechat.planning.recommend import recommend

SUBJECT = "gemma-3-4b-it-qat"  # its shipped entry has every key of the schema
LAPTOP = simulated_device(overrides=("memory=16.0 GiB",))
SHIPPED = catalog._read(catalog._builtin_file())


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"


def _bad_values(rule: str):
    """(case, value) pairs that ``rule`` must refuse, derived from its row in limits."""
    if rule == "table":
        yield from [("wrong type", 3), ("wrong type", "arch")]
    elif rule == "flag":
        yield from [("wrong type", "yes"), ("wrong type", 1)]
    elif rule in limits.RANGES:
        kind, low, high, low_in, _ = limits.RANGES[rule]
        yield from [("wrong type", "12"), ("wrong type", True), ("nan", math.nan)]
        yield from [("inf", math.inf), ("-inf", -math.inf), ("too long", "9" * 5000)]
        assert low is not None and (low > 0 or not low_in), rule  # catalog numbers are positive
        yield from [("zero", 0), ("negative", -1), ("above", high * 2)]
        if kind == "int":
            yield ("fraction", low + 0.5)
    elif rule in limits.TEXTS:
        longest = limits.TEXTS[rule][0]
        yield from [("wrong type", 5), ("too long", "a" * (longest + 1)), ("empty", "")]
        yield from [("control character", "a\x1b]0;b\x07"), ("wrong type", ["a"])]
    elif rule.startswith("["):
        yield from [("not a list", limits.choices(rule.strip("[]"))[0]), ("empty", [])]
        yield from [("too long", ["x" * 5000]), ("wrong type", [4]), ("nan", [math.nan])]
    else:  # one choice
        yield from [("wrong type", 5), ("too long", "Q" * 5000), ("unknown", "Q9_X")]


def _cases():
    for prefix, schema in (("", limits.CATALOG), ("arch.", limits.ARCH)):
        for key, (_, rule) in schema.items():
            for case, value in _bad_values(rule):
                yield pytest.param(prefix + key, value, id=f"{prefix}{key}-{case}")


def _write(text: str):
    file = paths().user_catalog
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return file


def _override(key: str, value, model_id: str = SUBJECT):
    table, _, name = key.rpartition(".")
    suffix = f".{table}" if table else ""
    return _write(f'[models."{model_id}"{suffix}]\n{name} = {_toml(value)}\n')


def _plain(line: str) -> bool:
    return "\n" not in line and not re.search(r"[\x00-\x1f\x7f-\x9f]", line)


def test_the_shipped_catalog_passes_the_same_checks():
    checked = catalog.read()
    assert checked.lines == () and len(checked.models) >= 20
    assert all(catalog.unknown_keys(entry) == [] for entry in SHIPPED.values())
    assert set(limits.choices("quant")) == set(QUANT_BITS)  # the schema knows every quant
    assert set(limits.ARCH) == set(SHIPPED[SUBJECT]["arch"])  # the subject has every arch key


@pytest.mark.parametrize(("key", "value"), list(_cases()))
def test_each_bad_value_leaves_out_its_entry_and_names_the_key(key, value):
    file = _override(key, value)
    said: list[str] = []
    models = catalog.load(warn=said.append)
    assert SUBJECT not in models and len(models) == len(SHIPPED) - 1
    assert len(said) == 1 and _plain(said[0]), said
    line = said[0]
    assert line.startswith(f"{file}: model '{SUBJECT}' is left out") and f"{key}: " in line
    assert "got " in line and len(line) < 600
    with pytest.raises(catalog.LeftOut, match=re.escape(f"{key}: ")):
        catalog.find(SUBJECT)


@pytest.mark.parametrize(
    "key",
    [k for k, (required, _) in limits.CATALOG.items() if required]
    + [f"arch.{k}" for k, (required, _) in limits.ARCH.items() if required],
)
def test_a_new_model_without_a_required_key_is_left_out(key):
    entry = copy.deepcopy(SHIPPED[SUBJECT])
    table, _, name = key.rpartition(".")
    (entry[table] if table else entry).pop(name)
    arch = entry.pop("arch", None)
    text = "[models.mine]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in entry.items())
    file = _write(text + (f"arch = {_toml(arch)}\n" if arch is not None else ""))
    said: list[str] = []
    assert "mine" not in catalog.load(warn=said.append)
    assert said == [f"{file}: model 'mine' is left out until it is fixed: missing '{key}'"]


def test_unknown_keys_are_named_and_the_entry_kept():
    file = _write(
        f'[models."{SUBJECT}"]\ncontxt = 4096\narch = {{ layrs = 20 }}\n\n'
        "[models.qwen2.5-1.5b-instruct]\nrepo = 'me/mirror'\n"
    )
    said: list[str] = []
    models = catalog.load(warn=said.append)
    assert SUBJECT in models and models[SUBJECT].arch["layers"] == 34
    assert f"{file}: model '{SUBJECT}': unknown keys 'contxt' (did you mean 'context'?)" in said[1]
    assert "'arch.layrs' (did you mean 'arch.layers'?) ignored" in said[1]
    # Unquoted, the id splits at its dots: the line says how to write it.
    assert "'qwen2' is left out" in said[0]
    assert '[models."qwen2.5-1.5b-instruct"]' in said[0]
    assert models["qwen2.5-1.5b-instruct"].repo != "me/mirror"


def test_a_bad_override_leaves_the_entry_out_rather_than_reverting_it():
    """A mirror repo must not quietly turn back into the original repo."""
    _write(f'[models."{SUBJECT}"]\nrepo = "me/mirror"\ncontext = 0\n')
    assert SUBJECT not in catalog.load()


def test_values_at_the_ends_of_every_range_run_through_the_estimate():
    entry = copy.deepcopy(SHIPPED[SUBJECT])
    ends = {}
    for end in ("low", "high"):
        e = copy.deepcopy(entry)
        for schema, table in ((limits.CATALOG, e), (limits.ARCH, e["arch"])):
            for key, (_, rule) in schema.items():
                if rule in limits.RANGES:
                    _, low, high, low_in, _ = limits.RANGES[rule]
                    table[key] = high if end == "high" else (low if low_in else low + 1e-6)
        assert catalog.validate(end, e) == []
        ends[end] = catalog._model(end, catalog._checked(end, e)[0])
    choices = recommend(ends, LAPTOP, "chat", 4096, 25.0)
    assert {c.model.id for c in choices} == {"low", "high"}
    assert all(c.estimate.ram_needed > 0 for c in choices)


# Through the commands: one case of each kind of rule, and the held-out report.
THROUGH = {
    "held-out": (
        '[models."{id}".arch]\nswa_every = "six"\nsliding_window = 0\n',
        ("arch.swa_every", "arch.sliding_window"),
    ),
    "number nan": ('[models."{id}"]\nparams_b = nan\n', ("params_b",)),
    "number negative": ('[models."{id}"]\ncontext = -4096\n', ("context",)),
    "text too long": ('[models."{id}"]\nname = "' + "n" * 500 + '"\n', ("name",)),
    "choice list": ('[models."{id}"]\nquants = ["Q4_0", "' + "Q" * 500 + '"]\n', ("quants",)),
    "flag": ('[models."{id}"]\ngated = "no"\n', ("gated",)),
    "table": ('[models."{id}"]\narch = "gemma3"\n', ("arch",)),
}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.mark.parametrize("case", list(THROUGH))
def test_the_commands_go_on_without_the_bad_entry(case, capsys):
    text, keys = THROUGH[case]
    model_id = "gemma-3-1b-it" if case == "held-out" else SUBJECT
    file = _write(text.format(id=model_id))
    rc, out, err = _run(capsys, "recommend", "--memory", "16G", "--all", "--json")
    assert rc == 0 and model_id not in {c["model"] for c in json.loads(out)["choices"]}
    assert len(err.splitlines()) == 1 and str(file) in err
    assert all(f"{key}: " in err for key in keys)
    for command in (["estimate", model_id, "--memory", "16G"], ["models", "info", model_id]):
        rc, out, err = _run(capsys, *command)
        assert rc == 1 and out == "" and len(err.splitlines()) == 1
        assert all(f"{key}: " in err for key in keys) and str(file) in err


def test_the_other_models_hear_of_the_left_out_entry_once(capsys):
    _write(THROUGH["held-out"][0].format(id="gemma-3-1b-it"))
    for command in (
        ["estimate", "qwen3-0.6b", "--memory", "16G"],
        ["models", "info", "qwen3-0.6b"],
    ):
        rc, out, err = _run(capsys, *command)
        assert rc == 0 and "qwen3-0.6b" in out
        assert len(err.splitlines()) == 1 and "'gemma-3-1b-it' is left out" in err


def test_a_file_that_cannot_be_read_still_stops_the_command(capsys):
    file = _write("models = 3\n")
    rc, out, err = _run(capsys, "recommend", "--memory", "16G")
    assert rc == 1 and str(file) in err and out == ""


async def test_the_pickers_ranking_goes_on_without_the_bad_entry():
    from test_tui import make_app, until

    from edgechat.tui.wizard import WizardScreen

    top = recommend(catalog.load(), LAPTOP, "chat", 4096, 25.0)[0].model.id
    file = _write(f'[models."{top}".arch]\nswa_every = "six"\nsliding_window = 0\n')
    app = make_app(start="auto", device=LAPTOP)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen) and app.screen.rows)
        assert app.screen.rows and not any(r.startswith(f"{top}:") for r in app.screen.rows)
        assert all(c.model.id != top for c in app.recommendations("code"))
        said = [str(n.message) for n in app._notifications]
        assert len(said) == 1 and str(file) in said[0] and "arch.swa_every: " in said[0]
        _write("models = 3\n")  # a file that cannot be read: the installed models remain
        assert app.recommendations("math") == []
