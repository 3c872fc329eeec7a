"""The stages of `shrink`'s run (lab/shrink.py): the source on the held-out text, the
importance matrix, then for each candidate quantising, scoring and timing, with an ETA
over them all; the work folder's manifest of finished candidates (lab/workfolder.py)
lets the same command carry on after Ctrl-C instead of starting again."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.lab.clock import Clock, Stage
from edgechat.lab.verdict import Candidate
from edgechat.planning.budget import Figures

RECIPE = "mixed"


@dataclass(frozen=True)
class Step:
    """Progress: stage ``number`` of ``steps`` (``label``), ``done`` of ``total`` in it."""

    number: int
    steps: int
    label: str
    done: int
    total: int
    eta_s: float


class Run:
    def __init__(self, req, src, facts, budget, ids, stem, work, manifest, device, progress, say):
        self.req, self.src, self.facts, self.budget = req, src, facts, budget
        self.ids, self.stem, self.work, self.manifest = ids, stem, work, manifest
        self.inputs = [src, *req.inputs]  # never written over (paths.refuse_inputs)
        self.device, self.progress, self.say = device, progress, say
        self.candidates: list[Candidate] = []
        self.reused: list[str] = []
        self.failed: dict[str, str] = {}
        self.text_facts: dict = {}
        self.text_name = ""
        self.clock: Clock | None = None
        self.planned = None  # the source's checked plan
        self.number = 0

    # -- progress ---------------------------------------------------------------
    def _begin(self, index: int) -> None:
        self.number = index + 1
        self.clock.start(index)
        self._tick(0, 1)

    def _tick(self, done: int, total: int) -> None:
        clock = self.clock
        clock.advance(done, total)
        if self.progress:
            stage = clock.stage
            self.progress(
                Step(self.number, len(clock.stages), stage.label, done, total, clock.eta())
            )

    def _stages(self, held: int, calib: int, todo: list) -> list[Stage]:
        stages = [Stage("the source on the held-out text", "source", held)]
        if self._matrix_wanted(todo) and not self._matrix_file():
            stages.append(Stage("calibrating on the rest", "source", calib))
        for cid, _, _ in todo:
            if not self.manifest.made(cid):
                stages.append(Stage(f"{cid}: quantising", "quantize", 1))
            stages += [Stage(f"{cid}: scoring", "score", held), Stage(f"{cid}: timing", "speed", 1)]
        return stages

    def _matrix_wanted(self, todo: list) -> bool:
        return any(im and not self.manifest.made(cid) for cid, _, im in todo)

    def _matrix_file(self) -> Path | None:
        return self.manifest.matrix_file()

    # -- the run ----------------------------------------------------------------
    def go(self, text: str, name: str) -> None:
        from edgechat.lab.quality import chunks_of, reference
        from edgechat.lab.split import split
        from edgechat.models import receipts
        from edgechat.service import load, plan_model

        req = self.req
        n_ctx = req.source.ctx
        self.text_name = name
        planned = self.planned = plan_model(req.source, self.device, say=self.say, what="SOURCE")
        todo = [i for i in self.ids if not self.manifest.finished(i[0])]
        self.reused = [cid for cid, _, _ in self.ids if self.manifest.finished(cid)]
        engine = load(planned, req.source.verbose).engine
        try:
            parts = split(text, lambda t: len(engine.tokenize(t, add_special=True)), n_ctx, name)
            held_chunks = chunks_of(engine, parts.held_out, n_ctx)[: req.chunks or None]
            calib_chunks = len(engine.tokenize(parts.calibration)) // n_ctx
            calib_chunks = min(calib_chunks, req.chunks or calib_chunks)
            self.text_facts = {
                **asdict(receipts.text_ref(name, text)),
                "tokens": parts.tokens,
                "calibration": {"chunks": calib_chunks, "stretches": parts.stretches},
                "held_out": {"chunks": len(held_chunks), "stretches": len(parts.held)},
            }
            per_chunk = 2 * self.facts.n_params * n_ctx / 20e9  # guesses until measured
            guesses = {"source": per_chunk, "score": per_chunk}
            guesses |= {"quantize": 5 + self.facts.n_params / 2e7}
            guesses |= {"speed": 3 + req.speed_tokens / 20}
            stages = self._stages(len(held_chunks), calib_chunks, todo)
            self.clock = Clock(stages, guesses)
            ref = None
            if todo:
                self._begin(0)
                ref = reference(engine, held_chunks, self.work / "reference.npy", self._tick)
                self.clock.finish()
        finally:
            engine.close()
        matrix = self._calibrate(planned.plan, parts.calibration, todo)
        held_text = parts.held_out
        waiting = {cid for cid, _, _ in todo}
        for cid, qtype, with_matrix in self.ids:
            if cid not in waiting:
                self.candidates.append(self._carried(cid))
                continue
            self._candidate(cid, qtype, matrix if with_matrix else None, ref, held_text, name)

    def _calibrate(self, plan, calibration: str, todo: list):
        if not self._matrix_wanted(todo):
            return None
        from edgechat.lab import imatrix
        from edgechat.lab.calibrate import calibrate

        kept = self._matrix_file()
        if kept:
            try:
                return imatrix.load(kept)
            except EdgechatError as e:  # damaged since: made again, not refused forever
                self.say(f"{kept.name}: {e}; made again")
                self.manifest.forget_matrix()
        self._begin(1)
        matrix = calibrate(
            plan,
            [calibration],
            ctx=self.req.source.ctx,
            chunks=self.req.chunks,
            progress=lambda done, total, _eta=None: self._tick(done, total),
            datasets=[f"{self.text_name}, calibration part"],
        )
        imatrix.save(matrix, self.work / "imatrix.gguf")
        self.manifest.record_matrix("imatrix.gguf")
        self.clock.finish()
        return matrix

    def _carried(self, cid: str) -> Candidate:
        entry = self.manifest.done[cid]
        file = self.work / entry["file"]
        figures = Figures(**entry["figures"]) if entry.get("figures") else None
        return self._judged(cid, entry["type"], entry["imatrix"], file, figures, entry["tps"])

    def _judged(self, cid, qtype, with_matrix, file: Path, figures, tps) -> Candidate:
        """The candidate with what it needs here, estimated now (memory changes)."""
        from edgechat.facts.gguf import inspect_file
        from edgechat.planning.fit import plan_for
        from edgechat.planning.memory import Shape
        from edgechat.planning.plan import RunPlan

        facts = inspect_file(file)
        src = self.req.source
        plan = RunPlan(
            file,
            n_ctx=self.req.run_ctx,
            n_threads=src.threads,
            n_gpu_layers=max(0, src.gpu_layers),
            type_k=src.type_k,
            type_v=src.type_v,
        )
        est, fit = plan_for(plan, Shape.from_facts(facts), self.device, src.gpu_layers < 0)
        return Candidate(
            id=cid,
            type=qtype,
            imatrix=with_matrix,
            size=file.stat().st_size,
            bits_per_weight=facts.bits_per_weight,
            figures=figures,
            fits=fit.fits,
            fit_label=fit.label,
            fit_why=fit.why,
            ram_needed=est.ram_needed,
            vram=est.vram,
            tokens_per_s=tps,
            path=str(file),
        )

    def _candidate(self, cid, qtype, matrix, ref, held_text: str, name: str) -> None:
        from edgechat.lab.measure import measure
        from edgechat.lab.quality import judge, keep_receipt
        from edgechat.lab.quantize import quantize
        from edgechat.service import load

        with_matrix = cid.endswith("+imatrix")
        file = self.work / f"{self.stem}-{qtype}{'-imatrix' * with_matrix}.gguf"
        labels = [s.label for s in self.clock.stages]
        if not self.manifest.made(cid):
            self._begin(labels.index(f"{cid}: quantising"))
            try:  # Ctrl-C stops it at once, its partial file removed (lab/quantize.py)
                quantize(
                    self.src,
                    file,
                    qtype,
                    RECIPE,
                    allow_requantize=self.facts.file_type not in ("F32", "F16", "BF16"),
                    threads=self.req.source.threads,
                    progress=self._tick,
                    imatrix=matrix,
                    force=True,
                    inputs=self.inputs,
                )
                entry = {"file": file.name, "type": qtype, "imatrix": with_matrix}
                self.manifest.record(cid, entry)
            except EdgechatError as e:
                self.failed[cid] = str(e)
                self.say(f"{cid}: {e}")
                return
            self.clock.finish()
        self._begin(labels.index(f"{cid}: scoring"))
        # The source's plan (it fits: every candidate is smaller) with the candidate's file.
        planned = replace(self.planned, plan=replace(self.planned.plan, model_path=file))
        engine = load(planned).engine
        try:
            q = judge(engine, ref, self._tick)
        finally:
            engine.close()
        self.clock.finish()
        made = {
            "type": qtype,
            "imatrix": with_matrix,
            "recipe": RECIPE,
            "task": self.req.task,
            "source": str(self.src),
        }
        quants = (qtype, self.facts.file_type)
        keep_receipt(q, f"{name}, held-out part", held_text, "shrink", made, quants)
        self._begin(labels.index(f"{cid}: timing"))
        tps = None
        # Room for the prompt and the reply, whatever the chunk size.
        plan = replace(planned.plan, n_ctx=max(512, planned.plan.n_ctx))
        try:
            tps = measure(plan, fill=0.25, gen_tokens=self.req.speed_tokens)["gen_tokens_per_s"]
        except EdgechatError as e:
            self.say(f"{cid}: not timed: {e}")
        self.clock.finish()
        figures = q.figures()
        self.manifest.done[cid].update(figures=figures.as_dict(), tps=tps)
        self.manifest.save()
        self.candidates.append(self._judged(cid, qtype, with_matrix, file, figures, tps))
