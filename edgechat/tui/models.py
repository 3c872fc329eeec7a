"""The app's part that chooses and loads models: the picker's rankings (the CPU measured
off the UI thread), loading through ``service`` on the llama thread, a remote server,
the KV cache type, and closing what is replaced on the llama thread."""

from __future__ import annotations

from pathlib import Path

from textual import work

from edgechat.errors import EdgechatError


class ModelChoice:
    """Mixed into ``EdgechatApp``: it holds ``engine``, ``llama``, ``device``, ``settings``."""

    def installed_models(self) -> dict[str, Path]:
        from edgechat.models import registry

        return registry.installed()

    def recommendations(self, task: str) -> list | None:
        """The ranked choices for ``task``; None while the CPU's bandwidth is being
        measured (in a worker, never on the UI thread: the wizard refills when it is)."""
        from edgechat.planning.speed import known_cpu_bandwidth

        if self._cpu_gb_s is None:
            self._cpu_gb_s = known_cpu_bandwidth(self.device)
        if self._cpu_gb_s is None:
            self._measure_bandwidth()
            return None
        if task not in self._recommended:
            from edgechat.service import recommendations

            self._recommended[task] = recommendations(  # the ranking `recommend` prints
                self.device, task, self.request.ctx, self.request.type_k, self._cpu_gb_s
            )[:15]
        return self._recommended[task]

    @work(thread=True, exclusive=True, group="bandwidth")
    def _measure_bandwidth(self) -> None:
        from edgechat.planning.speed import cpu_bandwidth

        self.call_from_thread(self._bandwidth_known, cpu_bandwidth(self.device))

    def _bandwidth_known(self, gb_s: float) -> None:
        from edgechat.tui.wizard import WizardScreen

        self._cpu_gb_s = gb_s
        for screen in self.screen_stack:
            if isinstance(screen, WizardScreen):
                screen.show_task(screen.chosen_task)

    def open_wizard(self) -> None:
        from edgechat.tui.wizard import WizardScreen

        self.push_screen(WizardScreen())

    def use_model(self, model: str | None, remember: bool = False) -> None:
        """Check the model fits, then load it in a worker; the chat opens meanwhile.
        ``remember``: picked by the user, so the next launch opens it without asking."""
        from edgechat.tui.chat import ChatScreen
        from edgechat.tui.wizard import WizardScreen

        while isinstance(self.screen, WizardScreen):
            self.pop_screen()
        self.loading_model, self._remember_model = True, remember
        if isinstance(self.screen, ChatScreen):
            for box in self.screen.query("#input"):  # not there before the screen mounts
                box.loading = True
            for note in self.screen.query(".note"):
                note.update(self.greeting())
        self._load(model)

    def picker_closed(self) -> None:
        """Esc in the picker: back to the chat, which must be usable. With no model
        loaded or loading, load the last one used (or the starter) when there is one."""
        from edgechat.tui.wizard import WizardScreen

        if self.engine is None and not self.loading_model and self.load_error is None:
            if self.installed_models():
                self.use_model(None)
                return
            self.notify(
                "no model on this machine yet: choose one to download (Ctrl+Q quits)",
                severity="warning",
            )
            return
        while isinstance(self.screen, WizardScreen):
            self.pop_screen()
        self._refresh_chat()

    @work(thread=True, exclusive=True, group="load")
    def _load(self, model: str | None, remote: str | None = None) -> None:
        """Load ``model`` on the llama thread, or connect to the server ``remote``."""
        from dataclasses import replace

        from edgechat.llama import backend
        from edgechat.service import open_model

        request = self.request.for_model(model) if model else self.request
        # A server only when asked now: a model picked after --remote is a local one.
        request = replace(request, remote=remote, remote_model=model if remote else None)
        warnings: list[str] = []
        try:
            if not remote:
                self.llama.submit(backend.load).result()  # before gguf/numpy: llama/backend.py
            loaded = open_model(
                request,
                say=warnings.append,
                device=self.device,
                run=lambda fn, *a: self.llama.submit(fn, *a).result(),
            )
        except EdgechatError as e:
            self.call_from_thread(self._load_failed, str(e))
            return
        if loaded.engine.is_local:  # a server's notice is the greeting's to give
            for line in warnings:
                self.call_from_thread(self.notify, line, severity="warning", timeout=10)
        self.call_from_thread(self._loaded, loaded.engine, loaded.label)

    def ask_remote(self) -> None:
        from edgechat.tui.dialogs import Ask

        def chosen(url: str | None) -> None:
            if url and url.strip():
                self.use_remote(url.strip())

        self.push_screen(Ask("OpenAI-compatible server (like http://HOST:8080/v1)"), chosen)

    def use_remote(self, url: str, model: str | None = None) -> None:
        """Chat through a server: what is typed goes there (the greeting says so)."""
        from edgechat.tui.wizard import WizardScreen

        while isinstance(self.screen, WizardScreen):
            self.pop_screen()
        self._load(model, remote=url)

    def _loaded(self, engine, label: str) -> None:
        from edgechat.service import chat_check

        old, self.engine, self.model_id = self.engine, engine, label
        self._close(old)
        self.loading_model, self.load_error, self._kv_conversation = False, None, None
        from rich.markup import escape

        from edgechat.text import clean

        shown = escape(clean(label))  # an id or file name is someone's text, not markup
        self.title = f"edgechat · {clean(label)}"
        self.notify(f"loaded {shown} in {engine.load_s:.1f} s")
        check = chat_check(engine, self.options.ctx or self.settings.ctx)
        self.base_model_reason = check.refusal
        if check.refusal:
            self.base_model_reason += " (Ctrl+P → Choose a model)"
            self.notify(self.base_model_reason, severity="warning", timeout=20)
        for line in check.warnings:
            self.notify(line, severity="warning", timeout=10)
        if self._remember_model and label != self.settings.default_model:
            self._remember(label)
        self._refresh_chat()

    def _close(self, engine) -> None:
        """Free an engine on the llama thread, after whatever it is running there."""
        if engine is not None and engine is not self._given_engine:
            engine.cancel()
            self.llama.submit(engine.close)

    def choose_kv_cache(self) -> None:
        """Pick the KV cache type (saved as the kv_cache setting) and reload the model."""
        from edgechat import config, limits
        from edgechat.tui.dialogs import Pick

        kinds = list(limits.choices("kv_cache"))
        labels = [
            "f16: full precision (the default)",
            "q8_0: half the memory, near-identical replies",
            "q4_0: a quarter of the memory, for long contexts",
        ]

        if self.engine is not None and not self.engine.is_local:
            self.notify("the server decides its own KV cache", severity="warning")
            return

        def chosen(i: int | None) -> None:
            if i is None:
                return
            self.settings = config.set_value("kv_cache", kinds[i])
            self.options.kv_cache = None
            self.notify(f"KV cache {kinds[i]}: reloading the model")
            self.use_model(self.options.model or self.model_id)

        self.push_screen(Pick(f"KV cache type (now {self.settings.kv_cache})", labels), chosen)

    def _remember(self, label: str) -> None:
        """The model picked in the picker is the one the next launch opens."""
        from edgechat import config

        try:
            self.settings = config.set_value("default_model", label)
        except EdgechatError as e:
            self.notify(f"could not save it as the default: {e}", severity="warning")
            return
        self.notify(f"{label} is now the default model (`edgechat config` changes it)")

    def _load_failed(self, why: str) -> None:
        from rich.markup import escape

        from edgechat.text import clean

        self.loading_model, self.load_error = False, why
        why = escape(clean(why))
        self.notify(why, title="cannot load this model", severity="error", timeout=15)
        self._refresh_chat()
        self.open_wizard()
