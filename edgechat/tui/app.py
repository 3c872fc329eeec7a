"""The edgechat app: the conversation store, the device, the picker's choices and the
model session (``tui/session.py``, which holds the engine and the llama thread); screens
render, workers pull models and generate, so the UI always answers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

from textual import work
from textual.app import App, SystemCommand
from textual.reactive import reactive
from textual.screen import Screen

from edgechat.tasks.conversations import Store
from edgechat.tui.models import ModelChoices
from edgechat.tui.session import (
    ModelFailed,
    ModelLoaded,
    ModelLoading,
    ModelSession,
    ModelState,
    ModelWarning,
    Opener,
)


@dataclass
class LaunchOptions:
    """What the command line asked for; the TUI honours it as the plain chat does."""

    model: str | None = None
    ctx: int | None = None
    threads: int | None = None
    gpu_layers: int | None = None
    memory: str | None = None
    vram: str | None = None
    force: bool = False
    verbose: bool = False
    start: str = "auto"  # auto: the picker on first run; chat: straight to the chat
    remote: str | None = None  # an OpenAI-compatible server's URL: chat there instead
    remote_model: str | None = None
    api_key: str | None = None
    kv_cache: str | None = None  # f16 | q8_0 | q4_0; None: the setting

    @classmethod
    def from_args(cls, args, start: str) -> LaunchOptions:
        names = [f.name for f in fields(cls) if f.name != "start"]
        return cls(**{n: getattr(args, n, None) for n in names}, start=start)


class EdgechatApp(App):
    """The app: the launch options, the settings, the conversation store, the device,
    the picker's choices and the model session (``tui/session.py``). It turns what the
    session says into notifications and ``model_state``, which the screens watch."""

    CSS_PATH = "app.tcss"
    TITLE = "edgechat"
    model_state: reactive[ModelState] = reactive(ModelState, init=False)

    def __init__(
        self,
        options: LaunchOptions | None = None,
        store: Store | None = None,
        sample_readouts: Callable | None = None,
        device=None,
        engine=None,
        llama_thread: ThreadPoolExecutor | None = None,
        opener: Opener | None = None,
    ) -> None:
        super().__init__()
        from edgechat import config
        from edgechat.facts.device import detect
        from edgechat.llama.state import Snapshots
        from edgechat.service import sampling

        self.options = options or LaunchOptions()
        self.settings = config.load()
        self.store = store or Store()
        self.device = device or detect(self.options.memory, self.options.vram)
        self.sampling = sampling(self.settings)
        self.choices = ModelChoices(
            self.device,
            lambda: self.request,
            warn=lambda line: self.notify(line, severity="warning", timeout=20, markup=False),
        )
        cap = self.settings.snapshot_cap_mb * 2**20
        self.session = ModelSession(
            self.device,
            Snapshots(self.store.path.parent / "kv", cap),
            post=self.post_message,
            soon=self.call_later,
            llama=llama_thread,
            opener=opener,
            sample_readouts=sample_readouts,
        )
        self._given_engine = engine  # already loaded (benchmarks, embedding)

    @property
    def request(self):
        """What to load, from the launch options and the settings as they are now."""
        from edgechat.service import ModelRequest

        return ModelRequest.from_args(self.options, self.settings)

    # The model as the screens show it (``model_state``: set as they are told), for tests
    # and benchmarks; the session holds the engine and hands it over first.
    @property
    def engine(self):
        return self.model_state.engine

    @property
    def model_id(self) -> str | None:
        return self.model_state.label

    @property
    def snapshots(self):
        return self.session.snapshots

    @property
    def last_restore(self):
        return self.session.last_restore

    # -- start ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        from edgechat.tui.chat import ChatScreen

        self.push_screen(ChatScreen())
        if self.store.notice:  # the damaged database was moved aside: say where
            self.notify(self.store.notice, severity="warning", timeout=20, markup=False)
        if self._given_engine is not None:
            engine = self._given_engine
            self.session.adopt(engine, engine.plan.model_path.name, self.request.ctx)
            return
        if self.options.remote:
            self.use_remote(self.options.remote, self.options.remote_model)
            return
        # First run: no model named or saved, and nothing said yet (Esc in the picker
        # chats with the starter; the next launch goes straight back to that chat).
        first_run = not (
            self.options.model or self.settings.default_model or self.store.has_messages()
        )
        if self.options.start == "auto" and first_run:
            self.open_wizard()
        else:
            self.use_model(self.options.model)

    # -- choosing and loading a model -----------------------------------------------------

    def open_wizard(self) -> None:
        from edgechat.tui.wizard import WizardScreen

        self.push_screen(WizardScreen())

    def _close_wizard(self) -> None:
        from edgechat.tui.wizard import WizardScreen

        while isinstance(self.screen, WizardScreen):
            self.pop_screen()

    def use_model(self, model: str | None, remember: bool = False) -> None:
        """Load ``model`` (None: the default); the chat opens meanwhile. ``remember``:
        picked by the user, so the next launch opens it without asking."""
        from dataclasses import replace

        self._close_wizard()
        request = self.request.for_model(model) if model else self.request
        # A server only when asked now: a model picked after --remote is a local one.
        self.session.load(replace(request, remote=None, remote_model=None), remember=remember)

    def use_remote(self, url: str, model: str | None = None) -> None:
        """Chat through a server: what is typed goes there (the greeting says so)."""
        from dataclasses import replace

        self._close_wizard()
        self.session.load(replace(self.request, remote=url, remote_model=model))

    def picker_closed(self) -> None:
        """Esc in the picker: back to the chat, which must be usable. With no model
        loaded or loading, load the last one used (or the starter) when there is one."""
        state = self.session.state
        if state.engine is None and not state.loading and state.error is None:
            if self.choices.installed():
                self.use_model(None)
                return
            self.notify(
                "no model on this machine yet: choose one to download (Ctrl+Q quits)",
                severity="warning",
            )
            return
        self._close_wizard()

    def ask_remote(self) -> None:
        from edgechat.tui.dialogs import Ask

        def chosen(url: str | None) -> None:
            if url and url.strip():
                self.use_remote(url.strip())

        # Shown at once, not awaited in a worker: the dialog is there when this returns.
        self.push_screen(Ask("OpenAI-compatible server (like http://HOST:8080/v1)"), chosen)

    @work
    async def choose_kv_cache(self) -> None:
        """Pick the KV cache type (saved as the kv_cache setting) and reload the model."""
        from edgechat import config, limits
        from edgechat.tui.dialogs import Pick

        if self.engine is not None and not self.engine.is_local:
            self.notify("the server decides its own KV cache", severity="warning")
            return
        kinds = list(limits.choices("kv_cache"))
        labels = [
            "f16: full precision (the default)",
            "q8_0: half the memory, near-identical replies",
            "q4_0: a quarter of the memory, for long contexts",
        ]
        question = f"KV cache type (now {self.settings.kv_cache})"
        i = await self.push_screen_wait(Pick(question, labels))
        if i is None:
            return
        self.settings = config.set_value("kv_cache", kinds[i])
        self.options.kv_cache = None
        self.notify(f"KV cache {kinds[i]}: reloading the model")
        self.use_model(self.options.model or self.model_id)

    # -- what the session says ------------------------------------------------------------

    def _show(self, state: ModelState) -> None:
        """The screens see ``state`` after what the user is told about it, which is
        queued first (a test that waits for the model finds its notifications there)."""

        def show() -> None:
            self.model_state = state

        self.call_later(show)

    def on_model_loading(self, message: ModelLoading) -> None:
        self._show(message.state)

    def on_model_loaded(self, message: ModelLoaded) -> None:
        from rich.markup import escape

        from edgechat.text import clean

        state = message.state
        shown = escape(clean(state.label))  # an id or file name is someone's text, not markup
        self.title = f"edgechat · {clean(state.label)}"
        self.notify(f"loaded {shown} in {state.engine.load_s:.1f} s")
        if state.refusal:
            self.notify(state.refusal, severity="warning", timeout=20)
        for line in message.warnings:
            self.notify(line, severity="warning", timeout=10)
        if message.remember and state.label != self.settings.default_model:
            self._remember(state.label)
        self._show(state)

    def on_model_failed(self, message: ModelFailed) -> None:
        from rich.markup import escape

        from edgechat.text import clean

        why = escape(clean(message.why))
        if message.remote:  # the chat stays as it was: no picker for a stray Enter to pick in
            self.notify(why, title="cannot use this server", severity="error", timeout=15)
            self._show(message.state)
            return
        self.notify(why, title="cannot load this model", severity="error", timeout=15)
        self._show(message.state)
        self.call_later(self.open_wizard)  # after the notification, as ``_show``

    def on_model_warning(self, message: ModelWarning) -> None:
        self.notify(message.text, severity="warning")

    def _remember(self, label: str) -> None:
        """The model picked in the picker is the one the next launch opens."""
        from edgechat import config
        from edgechat.errors import EdgechatError

        try:
            self.settings = config.set_value("default_model", label)
        except EdgechatError as e:
            self.notify(f"could not save it as the default: {e}", severity="warning")
            return
        self.notify(f"{label} is now the default model (`edgechat config` changes it)")

    # -- commands -------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        from edgechat.tui.chat import ChatScreen

        yield SystemCommand("Choose a model", "Device, recommendations, pull", self.open_wizard)
        yield SystemCommand(
            "KV cache type", "f16, q8_0 or q4_0: less memory for long chats", self.choose_kv_cache
        )
        yield SystemCommand(
            "Use a remote server", "Chat on an OpenAI-compatible server", self.ask_remote
        )
        if isinstance(screen, ChatScreen):
            for title, help_text, action in [
                ("New chat", "Start a new conversation (Ctrl+N)", screen.action_new_conversation),
                ("Search chats", "Find words in every conversation (Ctrl+F)", screen.action_search),
                (
                    "Regenerate reply",
                    "Write the last reply again (Ctrl+R)",
                    screen.action_regenerate,
                ),
                ("Edit last message", "Change it and send it again (F3)", screen.action_edit_last),
                (
                    "Continue reply",
                    "Write more of a cut reply (Ctrl+G)",
                    screen.action_continue_reply,
                ),
                ("Rename chat", "Give this conversation a title (F2)", screen.action_rename),
                (
                    "Delete chat",
                    "Delete this conversation, after asking (F8)",
                    screen.action_delete,
                ),
                (
                    "Export chat",
                    "Save it as Markdown, where you say (Ctrl+S)",
                    screen.action_export,
                ),
                (
                    "Summarise a file",
                    "Text, Markdown, HTML, PDF or DOCX, any length",
                    screen.action_summarise_file,
                ),
                ("Chat settings", "System prompt and sampling (Ctrl+O)", screen.action_settings),
                ("Copy last reply", "To the clipboard (Ctrl+T)", screen.action_copy_reply),
                ("Copy a code block", "From the last reply (F4)", screen.action_copy_code),
                ("Stop reply", "Stop the reply being written (Esc)", screen.action_stop),
                (
                    "Toggle chats sidebar",
                    "Show or hide the list (Ctrl+B)",
                    screen.action_toggle_sidebar,
                ),
            ]:
                yield SystemCommand(title, help_text, action)

    def deliver_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str | None:
        """Ctrl+P → Screenshot: Textual saves only to ~/Downloads and fails where there is
        none (a fresh home, a Pi over SSH). Save in the first folder that takes it (the
        one asked for, Downloads, the current folder, the data dir) and say where."""
        from pathlib import Path

        import platformdirs
        from textual._files import generate_datetime_filename

        from edgechat.errors import EdgechatError
        from edgechat.paths import ensure_private_dir, paths, write_atomic

        name = filename or generate_datetime_filename("edgechat", ".svg", time_format)
        svg = self.export_screenshot()
        folders = [Path(platformdirs.user_downloads_dir()), Path.cwd()]
        why = ""
        asked = [Path(path).expanduser()] if path else []
        for folder in asked + folders + [paths().data_dir]:
            try:
                if folder == paths().data_dir:
                    ensure_private_dir(folder)  # the last resort is edgechat's own folder
                if folder.is_dir():
                    write_atomic(folder / name, svg)
                    self.notify(f"screenshot saved to {folder / name}", markup=False)
                    return str(folder / name)
            except (OSError, EdgechatError) as e:
                why = str(e)
        self.notify(f"the screenshot was not saved: {why}", severity="error", markup=False)
        return None

    def action_command_palette(self) -> None:
        """The palette, with Enter waiting for the typed search (see tui/palette.py)."""
        from textual.command import CommandPalette

        from edgechat.tui.palette import Palette

        if self.use_command_palette and not CommandPalette.is_open(self):
            self.push_screen(Palette(id="--command-palette"))

    def on_unmount(self) -> None:
        self.session.close()
        self.store.close()


def run(options: LaunchOptions) -> int:
    EdgechatApp(options).run()
    return 0
