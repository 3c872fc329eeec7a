"""What the picker offers: the models on this machine and the ranked recommendations for
each task, kept for the app's life. Ranking needs the CPU's memory bandwidth; where it is
not known, the picker measures it once in a worker, never on the UI thread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgechat.errors import EdgechatError

if TYPE_CHECKING:
    from edgechat.service import ModelRequest


class ModelChoices:
    """``request()``: what the app would load now (its options and settings, which can
    change meanwhile); ``warn``: where a line about the catalog goes."""

    def __init__(
        self, device, request: Callable[[], ModelRequest], warn: Callable[[str], None]
    ) -> None:
        self.device = device
        self._request = request
        self._warn = warn
        self._recommended: dict[str, list] = {}
        self._cpu_gb_s: float | None = None
        self._found: list | None = None  # models other tools keep here
        self._found_fits: dict[str, list] = {}  # task -> (Found, Choice or None) each
        self._measured: dict | None = None  # quality receipts of installed models

    @property
    def request(self) -> ModelRequest:
        return self._request()

    def installed(self) -> dict[str, Path]:
        from edgechat.models import registry

        return registry.installed()

    def machine_models(self) -> list:
        """Models Ollama, LM Studio, llama.cpp and the HF cache keep here that edgechat
        can run (models/stores.py), looked for once per launch and after an import."""
        if self._found is None:
            from edgechat.models import stores

            try:
                self._found = [f for f in stores.discover() if f.usable]
            except EdgechatError:  # a damaged models.json: the chat says so elsewhere
                self._found = []
        return self._found

    def adopt_model(self, store: str, name: str) -> str:
        """Import a model another tool keeps, where it lies; returns its id (call it off
        the UI thread: llama.cpp is asked whether it loads)."""
        from edgechat.models import stores

        record = stores.adopt(store, name)
        self._found, self._found_fits = None, {}
        return record["id"]

    def machine_fits(self, task: str) -> list[tuple]:
        """Each model other tools keep here with what it needs and how it fits for
        ``task``, planned from its own header as an installed model is (a Choice; None
        where it does not suit the task or the CPU's bandwidth is not known yet)."""
        from edgechat.planning.recommend import choose_file

        if self._bandwidth() is None:
            return [(found, None) for found in self.machine_models()]
        if task not in self._found_fits:
            request = self.request
            self._found_fits[task] = [
                (
                    f,
                    choose_file(
                        f.name,
                        f.path,
                        task,
                        request.ctx,
                        self.device,
                        self._cpu_gb_s,
                        request.type_k,
                    ),
                )
                for f in self.machine_models()
            ]
        return self._found_fits[task]

    def measured(self) -> dict:
        """Installed models' newest quality receipts (models/receipts.py), by id and by
        catalog ``ID:QUANT``: read once a picker session."""
        if self._measured is None:
            from edgechat.models import receipts

            self._measured = receipts.installed()
        return self._measured

    def recommendations(self, task: str) -> list | None:
        """The ranked choices for ``task``; None while the CPU's bandwidth is unknown
        (``measure_bandwidth`` in a worker, then ask again)."""
        if self._bandwidth() is None:
            return None
        if task not in self._recommended:
            from edgechat.planning import catalog
            from edgechat.service import recommendations

            # The first ranking tells of catalog entries left out; a catalog file that
            # cannot be read leaves the installed models to pick from.
            say = (lambda line: None) if self._recommended else self._catalog_warning
            try:
                models = catalog.load(warn=say)
            except EdgechatError as e:
                models = {}
                say(str(e))
            ranked = recommendations(  # the ranking `recommend` prints
                self.device,
                task,
                self.request.ctx,
                self.request.type_k,
                self._cpu_gb_s,
                catalog_models=models,
            )
            # The best 15, and the installed models in their places below (ranked on their
            # merits, not moved up: they keep their figures and reasons).
            self._recommended[task] = [c for i, c in enumerate(ranked) if i < 15 or c.installed]
        return self._recommended[task]

    def _bandwidth(self) -> float | None:
        """The CPU's read bandwidth when known (measured before, or simulated)."""
        from edgechat.planning.speed import known_cpu_bandwidth

        if self._cpu_gb_s is None:
            self._cpu_gb_s = known_cpu_bandwidth(self.device)
        return self._cpu_gb_s

    def _catalog_warning(self, line: str) -> None:
        self._warn(line)

    def measure_bandwidth(self) -> None:
        """Measure the CPU's read bandwidth (about a second: keep it off the UI thread)."""
        from edgechat.planning.speed import cpu_bandwidth

        self._cpu_gb_s = cpu_bandwidth(self.device)
