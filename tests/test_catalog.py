"""The model catalog: every entry valid, the range the issue asks for, user overrides."""

from __future__ import annotations

import pytest

from edgechat.errors import ConfigError
from edgechat.planning import catalog


def test_every_shipped_entry_is_valid():
    raw = catalog._read(catalog._builtin_file())
    problems = [p for model_id, entry in raw.items() for p in catalog.validate(model_id, entry)]
    assert problems == []


def test_catalog_covers_small_to_70b_with_specialists():
    models = catalog.load()
    assert len(models) >= 20
    sizes = [m.params_b for m in models.values()]
    assert min(sizes) <= 0.15 and max(sizes) >= 70
    assert sum("code" in m.tasks and "chat" not in m.tasks for m in models.values()) >= 2
    assert sum("math" in m.tasks and "chat" not in m.tasks for m in models.values()) >= 2
    assert sum(m.params_b <= 1.8 and "chat" in m.tasks for m in models.values()) >= 5  # Pi-fit
    assert any(m.gated for m in models.values())
    for m in models.values():
        assert "Q4_K_M" in m.quants or m.params_b < 2 or m.gated or m.quants == ("Q8_0",)
        assert m.context >= 2048 and m.repo.count("/") == 1


def test_validate_names_each_problem():
    entry = {"name": "x", "repo": "nope", "license": "mit", "gated": "no", "params_b": 1}
    problems = catalog.validate("Bad:Id", entry)
    assert {p.split(":")[0] for p in problems} >= {"gated", "id"}
    assert any("missing 'context', 'tasks', 'quants', 'arch'" in p for p in problems)
    good = catalog._read(catalog._builtin_file())["qwen2.5-1.5b-instruct"]
    bad = {**good, "quants": ["Q4_K_M", "Q9_X"], "tasks": ["poetry"], "repo": "x"}
    problems = catalog.validate("qwen", bad)
    assert [p.split(":")[0] for p in problems] == ["repo", "tasks", "quants"]


def test_user_file_adds_and_overrides(edgechat_home):
    user = edgechat_home / "config" / "models.toml"
    user.parent.mkdir(parents=True)
    user.write_text(
        '[models."qwen2.5-1.5b-instruct"]\n'
        'repo = "my-mirror/Qwen2.5-1.5B-Instruct-GGUF"\n'
        "arch = { layers = 28 }\n\n"
        '[models."my-model"]\n'
        'name = "Mine"\nrepo = "me/mine-GGUF"\nlicense = "mit"\ngated = false\n'
        'params_b = 0.5\ncontext = 4096\ntasks = ["chat"]\nquants = ["q4_k_m"]\n'
        "arch = { layers = 24, embd = 896, ff = 4864, vocab = 151936, heads = 14, "
        "kv_heads = 2, head_dim = 64, tied = true }\n"
    )
    models = catalog.load()
    assert models["qwen2.5-1.5b-instruct"].repo == "my-mirror/Qwen2.5-1.5B-Instruct-GGUF"
    assert models["qwen2.5-1.5b-instruct"].arch["embd"] == 1536  # the rest kept
    assert models["my-model"].quants == ("Q4_K_M",)
    model, quant = catalog.find("my-model")
    assert (model.id, quant) == ("my-model", "Q4_K_M")


def test_broken_user_file_is_a_clear_error(edgechat_home):
    user = edgechat_home / "config" / "models.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[models."x"]\nname = "x"\n')
    said: list[str] = []
    assert "x" not in catalog.load(warn=said.append)  # one bad entry: left out, said once
    assert len(said) == 1 and "missing 'repo'" in said[0]
    with pytest.raises(catalog.LeftOut, match="missing 'repo'"):
        catalog.find("x")
    user.write_text("[models\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        catalog.load()


def test_find_by_id_and_quant():
    model, quant = catalog.find("Qwen2.5-7B-Instruct:q8_0")
    assert (model.id, quant) == ("qwen2.5-7b-instruct", "Q8_0")
    assert catalog.find("qwen2.5-7b-instruct")[1] == "Q4_K_M"
    with pytest.raises(ConfigError, match="offers Q2_K"):
        catalog.find("qwen2.5-7b-instruct:IQ1_S")
    with pytest.raises(ConfigError, match="Did you mean"):
        catalog.find("qwen9")


def test_quant_lists_match_the_repos_real_files():
    """What the hub repos really hold (checked against their file lists, 2025)."""
    models = catalog.load()
    assert models["smollm2-135m-instruct"].quants == ("Q4_K_M", "Q8_0")
    for gemma in ("gemma-3-1b-it", "gemma-3-4b-it"):
        assert "BF16" in models[gemma].quants and "F16" not in models[gemma].quants
    assert "F32" in models["phi-3.5-mini-instruct"].quants
    assert "F16" not in models["phi-3.5-mini-instruct"].quants
    for llama in ("llama-3.2-1b-instruct", "llama-3.2-3b-instruct"):
        assert "Q3_K_M" not in models[llama].quants
        assert {"IQ3_M", "Q3_K_L", "Q3_K_XL"} <= set(models[llama].quants)
        assert (
            models[llama].shape("Q3_K_XL").weight_bytes > models[llama].shape("Q3_K_L").weight_bytes
        )
    qat = models["gemma-3-4b-it-qat"]
    assert qat.shape("Q4_0").embd[0] == "F16"  # the QAT file keeps full-precision embeddings
    assert 3.1e9 < qat.shape("Q4_0").weight_bytes < 3.25e9  # the real file: 3.16 GB


def test_full_precision_spellings_match():
    from edgechat.models.hub import RemoteFile, pick_files, quant_of

    assert quant_of("qwen2.5-1.5b-instruct-fp16.gguf") == "F16"
    assert quant_of("gemma-3-4b-it-BF16.gguf") == "BF16"
    assert quant_of("Phi-3.5-mini-instruct-f32.gguf") == "F32"
    assert quant_of("Llama-3.2-1B-Instruct-Q3_K_XL.gguf") == "Q3_K_XL"
    files = [RemoteFile("qwen2.5-1.5b-instruct-fp16.gguf", 3_000_000_000, "a" * 64)]
    files.append(RemoteFile("qwen2.5-1.5b-instruct-q4_k_m.gguf", 986_000_000, "b" * 64))
    assert [f.name for f in pick_files(files, "F16", "Qwen/x")] == [files[0].name]
    assert catalog.find("qwen2.5-1.5b-instruct:fp16")[1] == "F16"
