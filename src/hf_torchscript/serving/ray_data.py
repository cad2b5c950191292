"""Bulk inference on Ray Data: a `Predictor` for ``Dataset.map_batches``, and ``hf-torchscript map``.

    import ray
    from hf_torchscript.serving.ray_data import Predictor

    ds = ray.data.read_parquet("docs.parquet")
    ds = ds.map_batches(Predictor, fn_constructor_kwargs={"artifact": "out/minilm"}, batch_size=256,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=4))

Each actor loads the artifact once, sha256 verified. A batch is sorted by token length and run
``batch_size`` rows at a time, so a short text is not padded to the longest one of the batch; the
task's outputs come back in input order as new columns, plus an ``error`` column that says why a
row (null, empty or non-string text) has none. Every number is what ``hts.load(artifact)(texts)``
returns for the texts that ran together. Needs the ``ray`` extra (``pyarrow``; ``ray`` for --ray).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..errors import ArtifactError, InputError, OptionError, option, require_extra
from ..tasks import TASKS, task_names
from ..textinput import text_problem

ERROR_COLUMN = "error"
# Rows per Predictor call = SORT_WINDOW x batch_size in `hf-torchscript map`: the window inside which
# rows are sorted by length. Larger cuts more padding; smaller streams sooner.
SORT_WINDOW = 8
# The JSONL reader puts here why it could not keep a record's text (not valid JSON, a number ...);
# Predictor turns it into that row's error and drops the column.
_INPUT_ERROR_COLUMN = "__hts_input_error"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet",
           ".csv": "csv"}


class Predictor:
    """Texts in a column -> the artifact's task outputs as new columns; for ``Dataset.map_batches``.

    Args:
        artifact: directory written by ``hf-torchscript export`` (visible to every Ray worker).
        column: the column holding the texts.
        pair_column: the column holding each text's second text (question-answering: the context;
            text-classification: the hypothesis), or None.
        batch_size: rows per model call; a batch handed to ``__call__`` is sorted by token length
            and cut into groups of this many rows.
        top_k: tokens kept per position (fill-mask, causal-lm).
        verify: check model.pt's sha256 against manifest.json when loading.
        truncation: ``"warn"`` cuts texts over the max length (like ``hts.load``); ``"error"`` makes
            them row errors.
        threads: torch threads while a batch runs (restored afterwards); None keeps the process's.
            Results are bitwise reproducible for the same groups of texts and the same thread count
            (a GEMM may split its sums differently with more threads).

    ``__call__`` takes a ``pyarrow.Table`` (``batch_format="pyarrow"``, the cheapest) or a pandas
    DataFrame and returns a ``pyarrow.Table``: the input columns, the output columns of
    :meth:`output_schema`, and ``error`` (null when the row has outputs).

    Raises (at construction):
        OptionError: a task without text input, a missing ``pair_column`` for question-answering.
        ArtifactError: see :func:`hf_torchscript.load`.
    """

    def __init__(self, artifact, *, column: str = "text", pair_column: str | None = None, batch_size: int = 32,
                 top_k: int = 5, verify: bool = True, truncation: str = "warn", threads: int | None = None):
        require_extra("ray", "hf_torchscript.serving.ray_data.Predictor", "pyarrow")
        from ..runtime.model import load

        if not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise OptionError(f"top_k must be a positive integer, got {top_k!r}")
        self.model = load(artifact, verify=verify, truncation=truncation)
        self.task = self.model.task
        task = TASKS.get(self.task)
        if task is None or task.columns is None:
            supported = ", ".join(sorted(task_names("columns")))
            raise OptionError(f"task {self.task!r} does not take one text per row; map supports {supported}")
        if self.model.tokenizer is None:
            raise ArtifactError(f"{artifact} has no tokenizer (exported from an in-memory model without tokenizer=); "
                                "map needs one to turn texts into token ids")
        if pair_column is not None and not task.pairs:
            raise OptionError(f"task {self.task!r} takes single texts; drop the pair column "
                              f"(pairs work for {', '.join(task_names('pairs'))})")
        if task.pair_required and pair_column is None:
            raise OptionError(f"{self.task} needs {task.pair_required} (pair_column=..., --pair-column)")
        self.column, self.pair_column = column, pair_column
        self.batch_size, self.top_k, self.threads = batch_size, top_k, threads
        self._fields = task.columns(self.model)  # the task's output columns (its module under tasks/)
        mask = (self.model.manifest.get("tokenizer") or {}).get("mask_token")
        self._mask = (mask, self.model.tokenizer.token_to_id(mask)) if task.needs_mask and mask else None

    def output_schema(self):
        """The columns added to every batch: the task's outputs, then ``error``."""
        import pyarrow as pa

        return pa.schema([(name, getattr(typ, "arrow_type", typ)) for name, typ, _ in self._fields]
                         + [(ERROR_COLUMN, pa.string())])

    def __call__(self, batch):
        if self.threads is None:
            return self._call(batch)
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._call(batch)
        finally:
            torch.set_num_threads(before)

    def _call(self, batch):
        import pyarrow as pa

        table, texts, pairs = self._split(batch)
        n = table.num_rows
        errors: list[str | None] = [None] * n
        if _INPUT_ERROR_COLUMN in table.column_names:
            errors = table.column(_INPUT_ERROR_COLUMN).to_pylist()
            table = table.drop_columns([_INPUT_ERROR_COLUMN])
        for i in range(n):
            errors[i] = errors[i] or _row_error(texts[i], self.column) or (
                _row_error(pairs[i], self.pair_column) if pairs is not None else None)
        ok = [i for i in range(n) if errors[i] is None]
        inputs = {i: (texts[i], pairs[i]) if pairs is not None else texts[i] for i in ok}
        results: list = [None] * n
        if ok:
            encs = self.model.tokenizer.encode_batch([inputs[i] for i in ok])
            lengths = {}
            for i, e in zip(ok, encs):
                lengths[i] = len(e.ids)
                if self.model.truncation == "error" and len(e.ids) > self.model.max_length:
                    errors[i] = (f"{len(e.ids)} tokens, more than this artifact's max length {self.model.max_length}; "
                                 "shorten it, or use truncation='warn' to cut it")
                elif self._mask is not None and self._mask[1] not in e.ids:
                    errors[i] = f"no {self._mask[0]} token in the text; put {self._mask[0]} where a word should be predicted"
            # Sorting by length (stable, so equal lengths keep input order) groups similar lengths:
            # each group is padded only to its own longest text.
            order = sorted((i for i in ok if errors[i] is None), key=lambda i: lengths[i])
            for start in range(0, len(order), self.batch_size):
                group = order[start:start + self.batch_size]
                self._run(group, [inputs[i] for i in group], results, errors)
        columns = [pa.array([get(r) if r is not None else None for r in results], type=typ)
                   if not callable(typ) else typ(results) for name, typ, get in self._fields]
        names = [name for name, _, _ in self._fields]
        return pa.Table.from_arrays(table.columns + columns + [pa.array(errors, type=pa.string())],
                                    names=table.column_names + names + [ERROR_COLUMN])

    def _run(self, idx, inputs, results, errors):
        from ..runtime import postprocess

        try:
            out = postprocess.run_task(self.model, inputs, top_k=self.top_k)
        except InputError as e:
            if len(idx) == 1:
                errors[idx[0]] = str(e)
                return
            for i, x in zip(idx, inputs):  # find the row the runtime refused; the others still get outputs
                self._run([i], [x], results, errors)
            return
        for i, r in zip(idx, out):
            results[i] = r

    def _split(self, batch):
        """(table, texts, pairs) from a pyarrow Table or a pandas DataFrame."""
        import pyarrow as pa

        cols = [c for c in (self.column, self.pair_column) if c is not None]
        if isinstance(batch, pa.Table):
            table = batch
            missing = [c for c in cols if c not in table.column_names]
            values = {c: table.column(c).to_pylist() for c in cols if c not in missing}
        elif type(batch).__name__ == "DataFrame" and hasattr(batch, "to_dict"):
            missing = [c for c in cols if c not in batch.columns]
            values = {c: batch[c].tolist() for c in cols if c not in missing}
            if not missing:
                # Non-string texts become null in the output table (a column of mixed types cannot be
                # Arrow); the error column says what each one was.
                batch = batch.assign(**{c: [v if isinstance(v, str) else None for v in values[c]] for c in cols})
            table = pa.Table.from_pandas(batch, preserve_index=False)
        else:
            raise OptionError(f"Predictor takes a pyarrow.Table or a pandas.DataFrame batch, got {type(batch).__name__}; "
                              "pass batch_format='pyarrow' to map_batches")
        if missing:
            raise OptionError(f"the input has no column {missing[0]!r}; its columns are {', '.join(table.column_names)}")
        taken = [name for name, _, _ in self._fields] + [ERROR_COLUMN]
        clash = [c for c in table.column_names if c in taken]
        if clash:
            raise OptionError(f"the input already has a column {clash[0]!r}, which {self.task} writes; rename it")
        return table, values[self.column], values[self.pair_column] if self.pair_column else None


def _row_error(value, column: str) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"column {column!r} is null (no text)"
    if not isinstance(value, str):
        return f"column {column!r} must be a string, got {type(value).__name__}: {str(value)[:40]}"
    if not value.strip():
        return f"column {column!r} is empty"
    why = text_problem(value)  # a JSON "\ud800" escape gives a lone surrogate, which tokenizers refuse
    return f"column {column!r} {why}" if why else None


# -- reading JSONL ourselves: pyarrow's JSON reader fails the whole file on one number in a text column --

def parse_jsonl(lines, column: str, pair_column: str | None = None):
    """JSON lines -> a pyarrow Table; a record whose text is not a string keeps a null text and a reason."""
    import pyarrow as pa

    records, reasons = [], []
    for line in lines:
        reason = None
        try:
            obj = json.loads(line)
        except ValueError as e:
            obj, reason = {}, f"the line is not valid JSON ({getattr(e, 'msg', e)}): {line[:40]!r}"
        except RecursionError:
            obj, reason = {}, f"the line nests JSON too deeply to read: {line[:40]!r}"
        if not isinstance(obj, dict):
            obj, reason = {}, f"the line is a JSON {type(obj).__name__}, not an object: {line[:40]!r}"
        for c in (column, pair_column):
            if c is not None and obj.get(c) is not None and not isinstance(obj[c], str):
                reason = reason or f"column {c!r} must be a string, got JSON {_json_type(obj[c])}: {json.dumps(obj[c])[:40]}"
                obj[c] = None
            elif c is not None and isinstance(obj.get(c), str) and text_problem(obj[c]):
                # A JSON "\udc80" escape decodes to a lone surrogate: no Arrow string can hold it.
                reason = reason or f"column {c!r} {text_problem(obj[c])}"
                obj[c] = None
        records.append(obj)
        reasons.append(reason)
    keys = list(dict.fromkeys(k for r in records for k in r))
    for c in (column, pair_column):
        if c is not None and c not in keys:
            keys.append(c)
    arrays, names = [], []
    for k in keys:
        values = [r.get(k) for r in records]
        if k in (column, pair_column):
            arrays.append(pa.array(values, type=pa.string()))
        else:
            try:
                arrays.append(pa.array(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
                # Values of mixed types (or text with lone surrogates) cannot share an Arrow column: keep them as
                # their JSON text, which escapes what UTF-8 cannot hold.
                arrays.append(pa.array([None if v is None else json.dumps(v) for v in values], type=pa.string()))
        names.append(k)
    arrays.append(pa.array(reasons, type=pa.string()))
    names.append(_INPUT_ERROR_COLUMN)
    return pa.Table.from_arrays(arrays, names=names)


def _json_type(v) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}.get(type(v), type(v).__name__)


def _parse_jsonl_batch(batch, column: str, pair_column: str | None):
    """Ray: read_text's ``text`` column (one JSON line per row) -> parse_jsonl."""
    return parse_jsonl(batch.column("text").to_pylist(), column, pair_column)


# -- hf-torchscript map ----------------------------------------------------------------------------

@dataclass
class MapReport:
    """What `map_file` wrote."""

    output: Path
    rows: int
    errors: int
    seconds: float
    engine: str

    def __str__(self) -> str:
        return (f"mapped {self.rows} rows ({self.errors} with errors) in {self.seconds:.1f}s "
                f"({rate_text(self.rows, self.seconds)} rows/s, {self.engine}) -> {self.output}")


def map_file(artifact, input, output, *, column: str = "text", pair_column: str | None = None,
             batch_size: int = 32, top_k: int = 5, use_ray: bool = False, workers: int | None = None,
             threads: int | None = None, force: bool = False, progress: bool = True, verify: bool = True) -> MapReport:
    """Run an artifact over every record of a JSONL, Parquet or CSV file; write one Parquet file.

    Args:
        artifact: directory written by ``hf-torchscript export``.
        input: ``.jsonl``/``.ndjson``/``.json`` (one object per line), ``.parquet`` or ``.csv``.
        output: the Parquet file to write: the input columns, the task's output columns, ``error``;
            rows in input order. Written to a temp file and renamed, so a failed run leaves nothing.
        column, pair_column, batch_size, top_k, verify: as for :class:`Predictor`.
        use_ray: run on Ray Data (the cluster at ``RAY_ADDRESS``, else a local one) with ``workers``
            actors; otherwise in this process. Both hand :class:`Predictor` the same windows of
            ``SORT_WINDOW * batch_size`` rows, so they write identical files.
        workers: actors in the pool (default: the cluster's CPUs minus one for reading).
        threads: torch threads per worker (default: 1 per Ray actor, which reserves that many CPUs;
            in-process, the process's). The in-process and Ray files are bitwise identical when the
            thread counts match (``threads=1``).
        force: replace ``output`` if it exists.
        progress: rows done, errors and rows/s on stderr.

    Raises:
        ExtraNotInstalledError: pyarrow (or ray, with ``use_ray``) missing.
        OptionError, InputError, ArtifactError: bad flags, an unreadable input, a bad artifact.
    """
    require_extra("ray", "hf-torchscript map", "pyarrow")
    if use_ray:
        require_extra("ray", "hf-torchscript map --ray", "ray.data")
    elif workers is not None:
        raise OptionError(f"{option('workers')} needs {option('use_ray', True)} (without it the model runs in this process)")
    src, dst = atomic.as_path(input, "input"), atomic.as_path(output, "output")
    atomic.as_path(artifact, "artifact")
    fmt = FORMATS.get(src.suffix.lower())
    if fmt is None:
        raise OptionError(f"cannot tell the format of {str(src)!r} from its suffix; use one of {', '.join(FORMATS)}")
    if not src.is_file():
        raise InputError(f"INPUT {str(src)!r} does not exist or is not a file")
    # Not a directory, device, pipe or link, and never the input itself (by inode: hard links too).
    atomic.check_output_file(dst, "OUTPUT", inputs=[src], force=force)
    if use_ray and workers is not None and not os.environ.get("RAY_ADDRESS"):
        import ray

        if not ray.is_initialized():  # a local cluster would start: check this machine before it takes a minute
            _check_local_cpus(workers, threads or 1)
    _check_columns(src, fmt, [c for c in (column, pair_column) if c])
    # Built here too, before any worker starts, so a bad artifact, task or column fails at once.
    predictor = Predictor(artifact, column=column, pair_column=pair_column, batch_size=batch_size, top_k=top_k,
                          verify=verify, threads=threads)
    window = SORT_WINDOW * batch_size
    t0 = time.perf_counter()
    meter = _Progress(_count_rows(src, fmt), enabled=progress)
    engine = {"name": "in-process"}
    with _ParquetSink(dst) as sink:
        if use_ray:
            kw = dict(artifact=str(Path(artifact).resolve()), column=column, pair_column=pair_column,
                      batch_size=batch_size, top_k=top_k, verify=verify, threads=threads or 1)
            batches = _ray_batches(str(src.resolve()), fmt, kw, window, workers, engine)
        else:
            batches = (predictor(t) for t in _rechunk(_read_local(src, fmt, column, pair_column, window), window))
        for table in batches:
            sink.write(table)
            meter.update(table.num_rows, table.column(ERROR_COLUMN).null_count)
    meter.done()
    if sink.rows == 0:
        raise InputError(f"INPUT {str(src)!r} has no records")
    return MapReport(dst, sink.rows, sink.errors, time.perf_counter() - t0, engine["name"])


def _csv_convert(column, pair_column):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    # CSV has no types: read the text columns as strings, so "42" stays a text.
    return pcsv.ConvertOptions(column_types={c: pa.string() for c in (column, pair_column) if c})


def _read_local(src: Path, fmt: str, column, pair_column, window: int):
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            yield from (pa.Table.from_batches([b]) for b in pq.ParquetFile(src).iter_batches(batch_size=window))
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(src, convert_options=_csv_convert(column, pair_column))
            yield from (pa.Table.from_batches([b]) for b in reader)
        else:
            with open(src, encoding="utf-8") as f:
                lines = []
                for line in f:
                    if line.strip():
                        lines.append(line.rstrip("\r\n"))  # as Ray's read_text hands them over
                    if len(lines) == window:
                        yield parse_jsonl(lines, column, pair_column)
                        lines = []
                if lines:
                    yield parse_jsonl(lines, column, pair_column)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {str(src)!r} as {fmt}: {str(e).splitlines()[0]}") from None


def _rechunk(tables, window: int):
    """Exactly ``window`` rows per table (the last may be shorter): the same cut Ray's repartition makes."""
    import pyarrow as pa

    pending, rows = [], 0
    for t in tables:
        pending.append(t)
        rows += t.num_rows
        while rows >= window:
            whole = pa.concat_tables(pending, promote_options="permissive")
            yield whole.slice(0, window)
            rest = whole.slice(window)
            pending, rows = [rest], rest.num_rows
    if rows:
        yield pa.concat_tables(pending, promote_options="permissive")


def _ray_batches(src: str, fmt: str, predictor_kwargs: dict, window: int, workers: int | None, engine: dict):
    import ray
    import ray.data

    started = not ray.is_initialized()
    if started:
        ray.init()  # RAY_ADDRESS selects a running cluster; else a local one starts
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        per = predictor_kwargs["threads"]
        n = workers if workers is not None else max(1, (cpus - 1) // per)
        if n * per + 1 > cpus:
            raise OptionError(f"--workers {n} x --threads {per} needs {n * per + 1} CPUs in the Ray cluster (each actor "
                              f"reserves its threads, one CPU reads the input); it has {cpus}: pass fewer workers")
        engine["name"] = f"ray, {n} worker{'s' if n > 1 else ''}"
        column, pair_column = predictor_kwargs["column"], predictor_kwargs["pair_column"]
        if fmt == "parquet":
            ds = ray.data.read_parquet(src)
        elif fmt == "csv":
            ds = ray.data.read_csv(src, convert_options=_csv_convert(column, pair_column))
        else:
            ds = ray.data.read_text(src).map_batches(
                _parse_jsonl_batch, fn_kwargs={"column": column, "pair_column": pair_column}, batch_format="pyarrow")
        # Exactly `window` rows per block, so Predictor sees the same windows as the in-process run.
        ds = ds.repartition(target_num_rows_per_block=window, strict=True)
        ds = ds.map_batches(Predictor, fn_constructor_kwargs=predictor_kwargs, batch_size=window,
                            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=n), num_cpus=per)
        # This dataset's own context (a copy): rows in input order; our progress line, not Ray's bars.
        ds.context.execution_options.preserve_order = True
        ds.context.enable_progress_bars = False
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)
    finally:
        if started:
            ray.shutdown()


def _check_local_cpus(workers: int, per: int) -> None:
    """The check _ray_batches makes against the cluster, made against this machine before a local one starts."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers * per + 1 > cpus:
        raise OptionError(f"--workers {workers} x --threads {per} needs {workers * per + 1} CPUs (each actor reserves "
                          f"its threads, one CPU reads the input); this machine has {cpus}: pass fewer workers, or set "
                          "RAY_ADDRESS to a larger cluster")


def _check_columns(src: Path, fmt: str, wanted: list[str]) -> None:
    """A column absent from the whole input is a wrong --column, not a thousand row errors."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            have = pq.ParquetFile(src).schema_arrow.names
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"cannot read INPUT {str(src)!r} as parquet ({str(e).splitlines()[0][:200]}); pass a "
                             "Parquet file, or give the file the suffix of its format") from None
    elif fmt == "csv":
        with open(src, encoding="utf-8", errors="replace") as f:
            import csv

            have = next(csv.reader([f.readline()]), [])
    else:
        have, seen = [], 0
        with open(src, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(obj, dict):
                    have += [k for k in obj if k not in have]
                    seen += 1
                if seen == 100 or all(c in have for c in wanted):
                    break
    for c in wanted:
        if c not in have:
            raise OptionError(f"INPUT {str(src)!r} has no column {c!r} (its first records have "
                              f"{', '.join(have) or 'no columns'}); pass {option('column')} ({option('pair_column')}) to name it")


def _count_rows(src: Path, fmt: str) -> int | None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(src).metadata.num_rows
        except Exception:
            return None
    if fmt == "jsonl":
        with open(src, "rb") as f:
            return sum(1 for line in f if line.strip())
    return None  # CSV: quoted newlines make line counts wrong


class _ParquetSink:
    """One Parquet file, written beside OUTPUT and renamed into place only when everything succeeded."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = atomic.temp_name(path)
        self.writer = None
        self.rows = self.errors = 0

    def __enter__(self):
        return self

    def write(self, table) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        elif table.schema != self.writer.schema:
            try:
                table = table.cast(self.writer.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
                diff = [f.name for f in table.schema if f not in self.writer.schema]
                raise InputError(
                    f"column(s) {', '.join(diff) or '?'} change type partway through the input "
                    f"({table.schema.field(diff[0]).type if diff else '?'} after "
                    f"{self.writer.schema.field(diff[0]).type if diff and diff[0] in self.writer.schema.names else '?'}); "
                    "give every record the same types"
                ) from None
        self.writer.write_table(table)
        self.rows += table.num_rows
        self.errors += table.num_rows - table.column(ERROR_COLUMN).null_count

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.writer is not None:
                self.writer.close()
            if exc_type is None and self.rows:
                os.replace(self.tmp, self.path)
        finally:
            if os.path.lexists(self.tmp):  # failed, interrupted, or nothing to write: no leftover temp file
                self.tmp.unlink()
        return False


class _Progress:
    def __init__(self, total: int | None, enabled: bool):
        self.total, self.enabled = total, enabled
        self.rows = self.errors = 0
        self.shown = -1  # rows in the last line printed: the final line is printed once, not again
        self.t0 = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, rows: int, ok: int) -> None:
        self.rows += rows
        self.errors += rows - ok
        now = time.perf_counter()
        if self.enabled and (self.tty or now - self.last >= 5):
            self.last = now
            self._print(end="\r" if self.tty else "\n")

    def done(self) -> None:
        if not self.enabled:
            return
        if self.shown != self.rows:
            self._print(end="\n")
        elif self.tty:
            print(file=sys.stderr, flush=True)  # end the line the last update drew

    def _print(self, end: str) -> None:
        self.shown = self.rows
        elapsed = time.perf_counter() - self.t0
        of = f"/{self.total} ({100 * self.rows / self.total:.0f}%)" if self.total else ""
        print(f"map: {self.rows}{of} rows, {self.errors} errors, {rate_text(self.rows, elapsed)} rows/s", end=end,
              file=sys.stderr, flush=True)


def rate_text(rows: int, seconds: float) -> str:
    """Rows per second with the digits that matter: 1234, 12.5, 0.25 (never "0" for a slow but real rate)."""
    if seconds <= 0:
        return "-"
    rate = rows / seconds
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 1 else f"{rate:.2g}"
