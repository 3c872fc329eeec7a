"""The edgechat app: holds the engine, the conversation store and the device; screens
render, workers load models, pull them and generate, so the UI always answers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

from textual.app import App, SystemCommand
from textual.screen import Screen

from edgechat.tasks.conversations import Store
from edgechat.tui.models import ModelChoice


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


class EdgechatApp(ModelChoice, App):
    CSS_PATH = "app.tcss"
    TITLE = "edgechat"

    def __init__(
        self,
        options: LaunchOptions | None = None,
        store: Store | None = None,
        sample_readouts: Callable | None = None,
        device=None,
        engine=None,
        llama_thread: ThreadPoolExecutor | None = None,
    ) -> None:
        super().__init__()
        from edgechat import config
        from edgechat.facts.device import detect
        from edgechat.service import sampling

        self.options = options or LaunchOptions()
        self.settings = config.load()
        self.store = store or Store()
        self.device = device or detect(self.options.memory, self.options.vram)
        self.engine = None
        self._given_engine = engine  # already loaded (benchmarks, embedding)
        # Every llama.cpp call runs on this one thread: its OpenMP thread team belongs to
        # the calling thread, and a second team (from a load or reply on another
        # thread) competes for the cores and slows generation by a third on two cores.
        self._own_llama = llama_thread is None
        self.llama = llama_thread or ThreadPoolExecutor(1, thread_name_prefix="llama")
        self.model_id: str | None = None
        if sample_readouts is None:
            from edgechat.facts.readouts import Sampler

            sample_readouts = Sampler()
        self.sample_readouts = sample_readouts
        self.sampling = sampling(self.settings)
        self._recommended: dict[str, list] = {}
        self._cpu_gb_s: float | None = None
        self.loading_model = False  # a load is under way
        self.load_error: str | None = None  # why the last load failed
        self.base_model_reason: str | None = None  # set when the model cannot chat
        self._remember_model = False  # picked in the picker: becomes default_model
        from edgechat.llama.state import Snapshots

        cap = self.settings.snapshot_cap_mb * 2**20
        self.snapshots = Snapshots(self.store.path.parent / "kv", cap)
        self._kv_conversation: int | None = None  # whose tokens the context holds
        self.last_restore = None  # what the last reopen found (tests, the benchmark)

    @property
    def request(self):
        """What to load, from the launch options and the settings as they are now."""
        from edgechat.service import ModelRequest

        return ModelRequest.from_args(self.options, self.settings)

    # -- start ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        from edgechat.tui.chat import ChatScreen

        self.push_screen(ChatScreen())
        if self.store.notice:  # the damaged database was moved aside: say where
            self.notify(self.store.notice, severity="warning", timeout=20, markup=False)
        if self._given_engine is not None:
            self.call_later(
                self._loaded, self._given_engine, self._given_engine.plan.model_path.name
            )
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

    def greeting(self) -> str:
        if self.loading_model:
            return "Loading the model ..."
        if self.engine is None:
            why = f" ({self.load_error})" if self.load_error else ""
            return f"No model is loaded{why}. Ctrl+P, then Choose a model."
        if self.base_model_reason:
            return self.base_model_reason
        if not self.engine.is_local:
            return (
                f"{self.model_id} runs on {self.engine.where}: what you type is sent there and "
                "answered there, not on this machine. Enter sends, Esc stops a reply."
            )
        return (
            f"{self.model_id} is ready. Enter sends, Ctrl+J adds a line, Esc stops a "
            "reply, Ctrl+R writes it again, F3 edits your last message, Ctrl+P lists "
            "every command."
        )

    # -- KV snapshots: reopening a long chat without reading it again ---------------------

    def conversation_opened(self, conversation_id: int) -> None:
        """Bring back the conversation's KV cache, on the llama thread, before the next
        reply needs it (a reply queued meanwhile waits for it there)."""
        if (
            self.engine is None
            or not self.engine.is_local
            or self._kv_conversation == conversation_id
        ):
            return
        self._kv_conversation = conversation_id
        engine = self.engine
        self.llama.submit(self._restore, engine, conversation_id)

    def _restore(self, engine, conversation_id: int) -> None:
        if engine is self.engine and self._kv_conversation == conversation_id:
            self.last_restore = self.snapshots.restore(engine, conversation_id)

    def save_snapshot(self, conversation_id: int) -> None:
        """On the llama thread, after a reply: keep the context for a later reopen."""
        self._kv_conversation = conversation_id
        if not self.engine.is_local:
            return
        try:
            self.snapshots.save(self.engine, conversation_id)
        except OSError as e:  # a full disk costs the fast reopen, nothing else
            self.call_from_thread(self.notify, f"KV snapshot not saved: {e}", severity="warning")

    def context_replaced(self) -> None:
        """The context holds something else now (a summary): reopening restores again."""
        self._kv_conversation = None

    def drop_snapshot(self, conversation_id: int) -> None:
        self.snapshots.drop(conversation_id)

    def _refresh_chat(self) -> None:
        from edgechat.tui.chat import ChatScreen

        for screen in self.screen_stack:
            if isinstance(screen, ChatScreen):
                box = screen.query_one("#input")
                box.loading = self.loading_model
                if screen is self.screen:
                    box.focus()
                screen._ctx_used = None
                screen.refresh_readouts()
                for note in screen.query(".note"):
                    note.update(self.greeting())
                if screen.conversation is not None:
                    self.conversation_opened(screen.conversation.id)

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
        self._close(self.engine)
        self.engine = None
        if self._own_llama:
            self.llama.shutdown(wait=False)
        self.store.close()


def run(options: LaunchOptions) -> int:
    EdgechatApp(options).run()
    return 0
