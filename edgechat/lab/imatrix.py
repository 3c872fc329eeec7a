"""The importance matrix: how strongly each input column of each weight is used, on
the user's own text, so quantisation spends its precision where the activations are.

Files are llama.cpp's. ``save`` writes what llama-imatrix writes (GGUF, ``general.type
= imatrix``; per weight ``<name>.in_sum2``, F32 ``[n_cols, n_expert]``, and
``<name>.counts``, F32 ``[1, n_expert]``; ggml drops trailing dimensions of 1, so a dense
weight's are 1-D), so ``llama-quantize --imatrix`` reads edgechat's files. ``load``
reads that and the legacy ``.dat`` (per weight the mean of squares times the call
count, then the chunk count and the dataset name), as llama.cpp's own loader does.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgechat.errors import EdgechatError, InputError

if TYPE_CHECKING:
    import numpy as np

KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
_REMAKE = "make it again with `edgechat calibrate`"


@dataclass(frozen=True, eq=False)
class ImportanceMatrix:
    """Per weight tensor name: ``in_sum2``, the sum over the rows seen of each input
    column's squared activation (float32, n_expert * n_cols, experts one after another;
    one expert for a dense weight), and ``counts``, the rows each expert saw (int64)."""

    in_sum2: Mapping[str, np.ndarray]
    counts: Mapping[str, np.ndarray]
    datasets: tuple[str, ...] = ()
    chunk_count: int = 0
    chunk_size: int = 0
    path: str | None = None  # the file it was read from, if any (quantised models name it)
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if set(self.in_sum2) != set(self.counts):
            raise EdgechatError("an importance matrix needs both sums and counts for each weight")
        for name, sums in self.in_sum2.items():
            n = len(self.counts[name])
            if n < 1 or sums.size % n:
                raise EdgechatError(f"the importance data of {name} does not split into experts")
        object.__setattr__(self, "names", tuple(sorted(self.in_sum2)))

    def __len__(self) -> int:
        return len(self.names)

    def n_cols(self, name: str) -> int:
        return self.in_sum2[name].size // len(self.counts[name])

    def mean_squares(self) -> dict[str, np.ndarray]:
        """What llama.cpp's quantisation weighs each column by: in_sum2 / counts per
        expert, in float32 (llama-quantize's own arithmetic); 1 for an expert no token
        reached."""
        import numpy as np

        out = {}
        for name in self.names:
            counts = self.counts[name].astype(np.float32)
            sums = self.in_sum2[name].astype(np.float32).reshape(len(counts), -1)
            safe = np.where(counts > 0, counts, np.float32(1))[:, None]
            mean = np.where(counts[:, None] > 0, sums / safe, np.float32(1))
            out[name] = np.ascontiguousarray(mean, dtype=np.float32).reshape(-1)
        return out

    def check_model(self, shapes: Mapping[str, tuple[int, ...]], model: str) -> None:
        """Refuse a matrix made for another model: ``shapes`` are the model's tensors
        (ggml order, ne0 first). As llama-quantize: a weight's matrix holds ne0 * ne2
        values (columns times experts); names the model lacks are ignored, but not all."""
        known = [n for n in self.names if n in shapes]
        if not known:
            raise InputError(
                f"the importance matrix names none of {model}'s tensors: it was made for "
                f"another model; {_REMAKE} on this one"
            )
        for name in known:
            ne = tuple(shapes[name]) + (1, 1, 1)
            if self.in_sum2[name].size != ne[0] * ne[2] and name != "token_embd.weight":
                raise InputError(
                    f"the importance matrix has {self.in_sum2[name].size} values for {name}, "
                    f"which has {ne[0] * ne[2]} columns in {model}: it was made for another "
                    f"model; {_REMAKE} on this one"
                )


def default_path(model_path: Path, named_file: bool, label: str) -> Path:
    """Where ``calibrate`` writes when not told: beside a model file the user named
    (``model.gguf`` -> ``model.imatrix.gguf``, as llama.cpp users keep them), else (an
    installed model, in the shared hub cache) in edgechat's data dir, ``imatrix/``."""
    if named_file and os.access(model_path.parent, os.W_OK):
        return model_path.with_name(f"{model_path.stem}.imatrix.gguf")
    from edgechat.paths import paths

    folder = paths().data_dir / "imatrix"
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^\w.+-]+", "-", label).strip("-.") or "model"
    return folder / f"{safe}.imatrix.gguf"


def check_out(path: Path, force: bool, inputs=()) -> None:
    """Before the work: the folder exists, it is none of the ``inputs`` (the model, the
    texts), and an existing file is replaced only when asked (``--force``): the same
    rule as every output a user names (paths.py)."""
    from edgechat.paths import output_path

    output_path(path, force, "pass --force to replace it, or give another --out", inputs)


def save(matrix: ImportanceMatrix, path: str | Path) -> Path:
    """Write ``matrix`` as llama-imatrix does, to a temporary name beside ``path`` that is
    renamed when complete. The folder must exist."""
    from edgechat.llama import backend

    backend.load()  # llama.cpp before gguf's numpy: see llama/backend.py
    import numpy as np
    from gguf import GGUFValueType, GGUFWriter, Keys

    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise InputError(f"no such folder: {path.parent}; create it first or pick another --out")
    from edgechat.paths import clean_partials, partial_beside

    clean_partials(path)  # what a killed run left
    tmp = partial_beside(path)
    try:
        writer = GGUFWriter(tmp, "")  # no architecture key: llama-imatrix writes none
        writer.kv_data[0].pop(Keys.General.ARCHITECTURE, None)  # (older gguf adds one anyway)
        writer.add_type("imatrix")
        # Always present, even empty: llama-quantize refuses a file without the key.
        datasets = list(matrix.datasets) or [""]  # the writer refuses an empty array
        writer.add_key_value(KEY_DATASETS, datasets, GGUFValueType.ARRAY, GGUFValueType.STRING)
        writer.add_uint32(KEY_CHUNK_COUNT, matrix.chunk_count)
        writer.add_uint32(KEY_CHUNK_SIZE, matrix.chunk_size)
        for name in matrix.names:
            counts = matrix.counts[name]
            n = len(counts)
            sums = np.asarray(matrix.in_sum2[name], dtype=np.float32)
            shape, cshape = ((n, sums.size // n), (n, 1)) if n > 1 else ((sums.size,), (1,))
            writer.add_tensor(f"{name}.in_sum2", sums.reshape(shape))
            writer.add_tensor(f"{name}.counts", counts.astype(np.float32).reshape(cshape))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise EdgechatError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_MAX_LEGACY = 1 << 30  # a legacy .dat of the largest model's weights is far smaller


def load(path: str | Path) -> ImportanceMatrix:
    """Read an importance matrix written by edgechat or llama-imatrix (GGUF or legacy):
    untrusted input, so a pipe, a device or a loop is named for what it is, and values
    no calibration makes (that would ruin a model quantised with them) are refused."""
    from edgechat.paths import open_user_file, user_file

    path = Path(path).expanduser()
    path = user_file(path, "importance matrix (the file `calibrate` wrote)", InputError)
    with open_user_file(path, InputError) as fh:
        try:
            gguf = fh.read(4) == b"GGUF"
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from None
    matrix = replace(_load_gguf(path) if gguf else _load_legacy(path), path=str(path))
    _check_values(matrix, path)
    return matrix


def _check_values(matrix: ImportanceMatrix, path: Path) -> None:
    """Sums of squares are finite and never negative; each weight saw some rows, and
    its sums are not all zero: a matrix otherwise would tell llama.cpp that no column
    matters (a model quantised with it answers garbage or blank lines)."""
    import numpy as np

    for name in matrix.names:
        sums, counts = matrix.in_sum2[name], matrix.counts[name]
        if not np.isfinite(sums).all():
            raise InputError(f"{path} holds non-finite values for {name}: {_REMAKE}")
        if (sums < 0).any():
            raise _corrupt(path, f"negative sums of squares for {name}, which no text gives")
        if (counts < 0).any():
            raise _corrupt(path, f"a negative count of rows for {name}")
        seen = counts > 0
        if not seen.any():
            raise _corrupt(path, f"no rows were seen for {name}: it holds no data")
        if not sums.reshape(len(counts), -1)[seen].any():
            raise _corrupt(path, f"every sum of squares of {name} is zero")


def _corrupt(path: Path, why: str) -> InputError:
    return InputError(f"{path} is not a readable importance matrix ({why}): {_REMAKE}")


def _load_gguf(path: Path) -> ImportanceMatrix:
    from edgechat.llama import backend

    backend.load()
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as e:  # gguf raises ValueError, struct.error, IndexError ... on damage
        raise _corrupt(path, f"damaged GGUF: {e}") from None

    def value(key: str, default):
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        for suffix, into in ((".in_sum2", sums), (".counts", counts)):
            if t.name.endswith(suffix):
                if t.tensor_type != GGMLQuantizationType.F32:
                    raise _corrupt(path, f"{t.name} is {t.tensor_type.name}, not F32")
                into[t.name[: -len(suffix)]] = np.array(t.data, dtype=np.float32).reshape(-1)
    if not sums and not counts:
        raise _corrupt(path, "no importance data in it")
    for name, values in counts.items():
        if not np.isfinite(values).all() or (values < 0).any():
            raise _corrupt(path, f"the counts of {name} are not counts of rows (NaN or negative)")
    for name in set(sums) ^ set(counts):
        raise _corrupt(path, f"sums without counts, or counts without sums, for {name}")
    try:
        return ImportanceMatrix(
            sums,
            {k: np.rint(v).astype(np.int64) for k, v in counts.items()},  # lround
            tuple(str(d) for d in value(KEY_DATASETS, [])),
            int(value(KEY_CHUNK_COUNT, 0)),
            int(value(KEY_CHUNK_SIZE, 0)),
        )
    except EdgechatError as e:
        raise _corrupt(path, str(e)) from None


def _load_legacy(path: Path) -> ImportanceMatrix:
    """The ``.dat`` format: n_entries, then per entry its name, call count and mean
    squares times the call count; then, optionally, the chunk count and a dataset name."""
    import numpy as np

    from edgechat.paths import read_user_file

    data = read_user_file(path, _MAX_LEGACY, InputError)
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise _corrupt(path, f"it ends inside {what}")
        pos += n
        return data[pos - n : pos]

    def i32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    n_entries = i32("its header")
    if n_entries < 1:
        raise _corrupt(path, "no entries")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        name = take(i32(f"entry {i + 1}"), f"entry {i + 1}'s name")
        name = name.split(b"\0", 1)[0].decode("utf-8", "replace")
        ncall = i32(f"{name}'s call count")
        if ncall < 0:
            raise _corrupt(path, f"a negative call count for {name}")
        nval = i32(f"{name}'s size")
        if nval < 1:
            raise _corrupt(path, f"{name} has no values")
        sums[name] = np.frombuffer(take(4 * nval, f"{name}'s values"), dtype="<f4").copy()
        # Stored as mean * ncall, so mean = sums / ncall; ncall 0 keeps the values as
        # they are (llama-quantize's rule), which a count of 1 gives.
        counts[name] = np.array([ncall if ncall > 0 else 1], dtype=np.int64)
    chunk_count, datasets = 0, ()
    if pos + 4 <= len(data):
        chunk_count = i32("the chunk count")
        if pos + 4 <= len(data):
            n = i32("the dataset name")
            if n > 0 and pos + n <= len(data):
                datasets = (take(n, "the dataset name").decode("utf-8", "replace"),)
    return ImportanceMatrix(sums, counts, datasets, chunk_count, 0)
