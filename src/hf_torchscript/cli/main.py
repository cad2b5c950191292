"""`hf-torchscript` commands: each parses its flags, checks combinations, and calls the library.

Errors are formatted once, in main(): one line (validation failures add the failing checks),
exit code 1; HF_TORCHSCRIPT_DEBUG=1 shows the traceback. Ctrl-C exits 130, SIGTERM during an
export 143 (both after removing the staging directory), a closed stdout (`| head`) 141 quietly.
JSON on stdout is strict: NaN and infinities are printed as null, with a warning on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
import warnings

from ..deprecation import QUANTIZED_DEPRECATED
from ..errors import HFTorchScriptError, OptionError
from ..options import BenchOptions, ExportOptions, at_least, bench_flag, flag
from ..tasks import TASKS, task_names
from ..textinput import check_text


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def add_option_flags(parser: argparse.ArgumentParser, command: str, *, defaults: bool = True) -> None:
    """One flag per ExportOptions field the command takes: name, help, choices and type from the field.

    ``defaults=False`` (validate): an absent flag stays None, so the value recorded at export applies.
    """
    hints = typing.get_type_hints(ExportOptions)
    for f in ExportOptions.fields(command):
        meta = f.metadata
        kw: dict = {"help": meta["help"], "dest": f.name}
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        kind = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
        if meta.get("optional_value"):  # --optimize alone is True, --optimize auto / --optimize=no take a value
            kw.update(nargs="?", const=True, type=_flag_type(meta["parse"]), default=f.default if defaults else None)
        elif kind is bool:
            kw["action"] = "store_true"
            kw["default"] = f.default if defaults else None
        else:
            kw["type"] = _flag_type(meta.get("parse") or (kind if kind in (int, float) else str))
            kw["default"] = f.default if defaults else None
        parser.add_argument(flag(f.name), **kw)


def add_bench_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per BenchOptions field (progress aside: -q/--quiet); an absent flag leaves the keyword's default."""
    hints = typing.get_type_hints(BenchOptions)
    for f in BenchOptions.fields(cli=True):
        meta = f.metadata
        kw: dict = {"help": meta["help"], "dest": f.name, "default": meta.get("cli_default", argparse.SUPPRESS)}
        for key in ("metavar", "choices"):
            if key in meta:
                kw[key] = meta[key]
        kind = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
        kw["type"] = _flag_type(meta.get("parse") or (kind if kind in (int, float) else str))
        if kind is int and "metavar" not in kw:
            kw["metavar"] = "N"
        parser.add_argument(bench_flag(f), **kw)


def bench_values(a: argparse.Namespace) -> dict:
    """The BenchOptions fields the bench flags set (those not given are left to the keywords' defaults)."""
    return {f.name: getattr(a, f.name) for f in BenchOptions.fields(cli=True) if hasattr(a, f.name)}


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    """-q/--quiet, the one progress switch of every command; --no-progress stays as a hidden alias (bench and map
    spelled it so)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr (shown only on a terminal)")
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)


def _flag_type(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e) if parse not in (int, float) else
                                             f"expected {'an integer' if parse is int else 'a number'}, got {text!r}") from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def option_values(a: argparse.Namespace, command: str) -> dict:
    """The ExportOptions fields a command's flags set (None: not given, for commands without defaults)."""
    return {f.name: getattr(a, f.name) for f in ExportOptions.fields(command)}


def _identity(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def cmd_export(a) -> int:
    from ..errors import require_extra

    require_extra("export", "export", "transformers", "safetensors")  # now, not after loading half the stack
    from ..exporter.flow import export
    from ..progress import for_terminal
    from ..runtime.cpu import CpuWarning

    before = _identity(a.output_dir)
    progress = for_terminal(a.quiet)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CpuWarning)
            result = export(a.model, a.output_dir, force=a.force, progress=progress, **option_values(a, "export"))
    except KeyboardInterrupt as e:
        # The commit swaps directories, so OUTPUT_DIR is a different inode iff the new artifact landed.
        e.hts_written = _identity(a.output_dir) != before
        raise
    finally:
        if progress is not None:
            progress.close()
        for w in caught if "caught" in locals() else ():
            if issubclass(w.category, CpuWarning):  # one plain line, like the other CLI warnings
                _err(f"warning: {w.message}")
            else:  # everything else as Python would have shown it
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print("\n".join(result.lines()))
    return 0


def cmd_bench(a) -> int:
    from ..errors import require_extra

    # Before minutes of measuring. The bench extra's packages (onnxruntime, matplotlib...) are optional:
    # benchmark() lists the missing ones before it starts and measures what it can.
    require_extra("export", "bench", "transformers")
    # torch.profiler's kineto prints "USDT: ... profiler_start/stop" lines at every profile (the bench's
    # top-ops table); 6 is above its highest level. Kineto reads it when the profiler starts.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from ..bench import benchmark

    report = benchmark(a.model, progress=not a.quiet, **bench_values(a))
    print(report.table())
    print("wrote " + " and ".join(report.files.values()))
    return 0


def cmd_run(a) -> int:
    # Everything that can be checked without torch is checked first: a mistyped path or a bad text
    # answers in a fraction of a second, not after `import torch` (seconds, tens on a busy machine).
    from ..atomic import check_output_file
    from ..runtime.artifact import read_manifest

    if a.output not in (None, "-"):
        check_output_file(a.output, "--output", inputs=[a.input] if a.input not in (None, "-") else [])
    inputs = _run_inputs(a)
    read_manifest(a.output_dir)

    import torch

    from ..runtime.model import NonFiniteOutputWarning, TruncationWarning, load
    from . import display

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=QUANTIZED_DEPRECATED)
        model = load(a.output_dir, verify=not a.no_verify, truncation="error" if a.no_truncate else "warn")
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    task = TASKS.get(model.task)
    if getattr(task, "kv_cache", False):
        return _run_generation(a, model, inputs, notes)
    generation_only = [f for f, v in (("--max-new-tokens", a.max_new_tokens), ("--do-sample", a.do_sample),
                                      ("--temperature", a.temperature), ("--top-p", a.top_p), ("--seed", a.seed),
                                      ("--stop", a.stop)) if v]
    if generation_only:
        raise OptionError(f"{', '.join(generation_only)} apply to {' or '.join(task_names('kv_cache'))} artifacts; "
                          f"{a.output_dir} is a {model.task} artifact")
    a.top_k = 5 if a.top_k is None else a.top_k
    if a.similarity and not getattr(task, "similarity", False):
        raise OptionError(f"--similarity compares sentence embeddings; {a.output_dir} is a {model.task} artifact "
                          f"(export with --task {' or '.join(task_names('similarity'))})")
    if a.choice and not getattr(task, "choices", False):
        raise OptionError(f"--choice is for {' or '.join(task_names('choices'))} artifacts; {a.output_dir} is a "
                          f"{model.task} artifact")
    outputs, embeddings, nonfinite = [], [], 0
    # Batches of --batch-size texts: many texts (--input) never become one giant padded batch.
    for start in range(0, len(inputs), a.batch_size):
        chunk = inputs[start : start + a.batch_size]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncationWarning)
            warnings.simplefilter("always", NonFiniteOutputWarning)
            result = model(chunk, top_k=a.top_k)
        notes += [str(w.message) for w in caught]
        nonfinite += sum(w.message.count for w in caught if isinstance(w.message, NonFiniteOutputWarning))
        if getattr(task, "similarity", False):
            embeddings.append(result)
        outputs += display.run_output(model.task, result)
    similarity = display.cosine_matrix(torch.cat(embeddings)) if a.similarity else None
    doc = display.run_document(a.output_dir, model.manifest, inputs, outputs, similarity=similarity, warnings=notes)
    if a.json:
        doc = display.finish(doc, nonfinite)
        text, _ = display.dumps(doc)
    else:
        text = display.run_text(doc, top_k=a.top_k)
    for note in doc["warnings"]:
        _err(f"warning: {note}")
    _write(text + "\n", a.output)
    return nonfinite_exit(doc, nonfinite, a.json)


# `run` exits with this status when the artifact returned NaN/inf values (the output is still written).
EXIT_NONFINITE = 3


def nonfinite_exit(doc: dict, nonfinite: int, json_mode: bool) -> int:
    """0, or EXIT_NONFINITE when the model or the written document holds NaN/inf values: never a quiet nan."""
    if nonfinite or doc.get("nonfinite_outputs"):  # finish() already turned the document's NaNs into nulls
        return EXIT_NONFINITE
    from . import display

    _, shown = display.strict({k: v for k, v in doc.items() if k != "warnings"})
    return EXIT_NONFINITE if shown else 0


def _run_generation(a, model, prompts: list, notes: list) -> int:
    """text-generation: stream each prompt's continuation to the terminal, or one --json document."""
    from . import display

    if any(not isinstance(p, str) for p in prompts):
        raise OptionError(f"{model.task} takes plain prompts; --pair and --choice do not apply")
    kw = dict(max_new_tokens=a.max_new_tokens or 32, do_sample=a.do_sample, temperature=a.temperature or 1.0,
              top_k=a.top_k, top_p=a.top_p, seed=a.seed, stop=tuple(a.stop or ()))
    outputs = []
    stream = not a.json and a.output is None
    for prompt in prompts:
        if stream:  # pieces as they arrive; the prompt first, as a terminal user typed it
            result: dict = {}
            sys.stdout.write(prompt)
            sys.stdout.flush()
            from ..runtime.generation import sampling

            for piece in model.generator().stream(prompt, sampling(**kw), result=result):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            outputs.append(result)
        else:
            outputs.append(vars(model.generate(prompt, details=True, **kw)))
    doc = display.run_document(a.output_dir, model.manifest, prompts, [display.generation_output(o) for o in outputs],
                               warnings=notes)
    doc["sampling"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
    for note in doc["warnings"]:
        _err(f"warning: {note}")
    if a.json:
        _write(display.dumps(doc)[0] + "\n", a.output)
    elif not stream:
        _write("".join(p + o["text"] + "\n" for p, o in zip(prompts, outputs)), a.output)
    return 0


def _run_inputs(a) -> list:
    """TEXTs from the command line or --input (a file or - for stdin), with --pair / --choice applied."""
    if a.input is not None and a.texts:
        raise OptionError("give TEXTs or --input FILE, not both")
    if a.input is not None:
        items = _read_inputs(a.input, a.input_format)
    else:
        items = [check_text(t, f"TEXT {i}") for i, t in enumerate(a.texts, 1)]
        if a.pair is not None:
            for i, t in enumerate(a.pair, 1):
                check_text(t, f"--pair {i}")
        for i, t in enumerate(a.choice or (), 1):
            check_text(t, f"--choice {i}")
    if not items:
        raise OptionError("no input texts; pass at least one TEXT after OUTPUT_DIR, or --input FILE (- for stdin)")
    if a.pair is not None:
        if a.input is not None:
            raise OptionError("--pair goes with TEXTs on the command line; in --input JSONL give {\"text\": ..., "
                              "\"pair\": ...} per line")
        if len(a.pair) != len(items):
            raise OptionError(f"--pair was given {len(a.pair)} times for {len(items)} texts; give one --pair per text")
        items = list(zip(items, a.pair))
    if a.choice:
        items = [(t if isinstance(t, str) else t[0], list(a.choice)) for t in items]
    return items


def _read_inputs(path: str, fmt: str) -> list:
    """One input per line: plain text, or (JSONL) a JSON string or {"text", "pair" | "choices"} object."""
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
    except OSError as e:
        raise OptionError(f"cannot read --input {path!r}: {e.strerror or e}; pass a text file, one text per line") from None
    except UnicodeDecodeError as e:
        raise OptionError(f"--input {path!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if fmt == "auto":
        fmt = "jsonl" if path.endswith((".jsonl", ".ndjson")) else "text"
    if fmt == "text":
        # Blank lines are separators, not empty texts.
        return [check_text(line, f"--input {path!r} line {n}") for n, line in enumerate(lines, 1) if line.strip()]
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            x = json.loads(line)
        except json.JSONDecodeError as e:
            raise OptionError(f"--input {path!r} line {n} is not JSON ({e.msg}); give one JSON string or "
                              '{"text": ...} object per line, or --input-format text') from None
        except RecursionError:
            raise OptionError(f"--input {path!r} line {n} nests JSON arrays/objects too deeply to read; give one JSON "
                              'string or {"text": ...} object per line') from None
        where = f"--input {path!r} line {n}"
        if isinstance(x, dict):
            for key in ("text", "pair"):
                if isinstance(x.get(key), str):
                    check_text(x[key], f"{where} {key!r}")
            if isinstance(x.get("choices"), list):
                for c in x["choices"]:
                    check_text(c if isinstance(c, str) else str(c), f"{where} choice")
        elif isinstance(x, str):
            check_text(x, where)
        if isinstance(x, str):
            items.append(x)
        elif isinstance(x, dict) and isinstance(x.get("text"), str):
            if isinstance(x.get("choices"), list) and x["choices"]:
                items.append((x["text"], [str(c) for c in x["choices"]]))
            elif isinstance(x.get("pair"), str):
                items.append((x["text"], x["pair"]))
            else:
                items.append(x["text"])
        else:
            raise OptionError(f"--input {path!r} line {n}: expected a JSON string or an object with a \"text\" "
                              f"string (and \"pair\" or \"choices\"), got {line.strip()[:60]!r}")
    return items


def _write(text: str, path: str | None) -> None:
    """stdout, or FILE written whole (a temp file renamed into place: never half a result)."""
    from ..atomic import write_file

    if path is None or path == "-":
        sys.stdout.write(text)
        return
    try:
        write_file(path, text)
    except OSError as e:
        raise OptionError(f"cannot write --output {path!r}: {e.strerror or e}") from None


def cmd_info(a) -> int:
    from ..runtime.artifact import model_file_name, read_manifest, verify
    from .display import checks, cpu_lines, validation_lines

    m = read_manifest(a.output_dir)  # schema-checked: every key used below as m[...] is there
    verify(a.output_dir, m)
    if a.json:
        # The manifest as written, plus what info concludes from it (verified, each check in its own terms).
        print(json.dumps({**m, "summary": {"artifact": str(a.output_dir), "verified": True, **checks(m)}}, indent=2,
                         allow_nan=False))
        return 0
    s = m["shapes"]
    source = (m.get("source") or {}).get("model", "?")
    lines = [
        f"artifact      {a.output_dir} (format {m.get('format', 'torchscript')} v{m['format_version']}, "
        f"{model_file_name(m)} sha256 {m['sha256'][:16]}..., {len(m.get('files') or {}) or 1} files verified)",
        f"model         {m['model_type']} {m.get('model_class', '')} from {source}",
        f"task          {m['task']}",
        "inputs        " + ", ".join(f"{i['name']} {i['dtype']} ({', '.join(map(str, i['shape']))})"
                                     + (f" [optional: {i['default']}]" if i.get("default") else "") for i in m["inputs"]),
        "outputs       " + ", ".join(f"{o['name']} {o['dtype']} ({', '.join(map(str, o['shape']))})" for o in m["outputs"]),
        f"shapes        {s['strategy']}: lengths {s.get('min_length', 1)}..{s['max_length']}"
        + (f", buckets {s['buckets']}" if s.get("buckets") else "")
        + (f", fixed batch {s['batch_size']}" if s.get("batch_size") else ", any batch")
        + (f" ({s['reason']})" if s.get("reason") else ""),
        f"dtype         {m.get('dtype', 'float32')}" + (f", quantized {m['quantize']}" if m.get("quantize") else "")
        + (", frozen" if m.get("optimize") else "") + f", backend {m.get('backend', 'torchscript')}",
        *([f"neuron        {m['neuron'].get('sdk', '?')} {m['neuron'].get('sdk_version') or '?'} for "
           f"{m['neuron'].get('instances', '?')}; {m['neuron'].get('compiler', '?')} {m['neuron'].get('compiler_args_text', '')}"
           + (", dynamic batch" if m['neuron'].get('dynamic_batch') else "")] if m.get("neuron") else []),
        *([f"aoti          {len(m['aoti']['models'])} compiled model(s) for CPU ISA {m['aoti'].get('cpu_isa') or '?'} "
           f"with torch {m['aoti']['torch']} (runs only with that torch; compile {m['aoti']['compile_seconds']}s)"]
          if m.get("aoti") else []),
        f"pad token id  {m['pad_token_id']}",
        f"labels        {len(m['id2label'])}" if m.get("id2label") else "labels        -",
        f"tokenizer     {m['tokenizer']['file'] if m.get('tokenizer') else '- (tensors only)'}"
        + (("; C++ tokenizer: supported" if m["cpp_tokenizer"]["supported"] else
            "; C++ tokenizer: unsupported (" + ", ".join(m["cpp_tokenizer"]["unsupported"]) + "), ids only")
           if m.get("tokenizer") and m.get("cpp_tokenizer") else ""),
        *validation_lines(m),
        *cpu_lines(m),
        f"tracer warns  {len(m.get('tracer_warnings', []))} (all checked by the validation grid)",
        "versions      " + ", ".join(f"{k} {x}" for k, x in (m.get("versions") or {}).items()),
    ]
    print("\n".join(lines))
    return 0


def cmd_validate(a) -> int:
    from ..errors import require_extra
    from ..progress import for_terminal

    require_extra("export", "validate", "transformers", "safetensors")
    from ..exporter.validate import validate

    progress = for_terminal(a.quiet)
    try:
        # No --model: the model recorded in the manifest, if it can be found offline.
        report = validate(a.output_dir, a.model, progress=progress,
                          **{k: v for k, v in option_values(a, "validate").items() if v is not None})
    finally:
        if progress is not None:
            progress.close()
    print(report.summary())
    return 0


def cmd_cpp_build(a) -> int:
    from ..runtime.cpp import build_runner, cmake_command

    if a.print:
        print(cmake_command(a.build_dir, source=a.source))
        return 0
    print(build_runner(a.build_dir, source=a.source, quiet=False))
    return 0


# -- serving: map (Ray Data), serve (Ray Serve), triton (model repository) -------------------------
# Kept in one block, apart from the export/validate flags: these commands only read an artifact.


def cmd_map(a) -> int:
    from ..serving.ray_data import map_file

    report = map_file(a.artifact, a.input, a.output, column=a.column, pair_column=a.pair_column,
                      batch_size=a.batch_size, top_k=a.top_k, use_ray=a.ray, workers=a.workers, threads=a.threads,
                      force=a.force,
                      progress=not a.quiet, verify=not a.no_verify)
    print(report)
    return 0


def cmd_serve(a) -> int:
    from ..errors import require_extra
    from ..serving.http import ServerOptions, check_listen, check_servable  # no torch import: checks come first

    try:  # every option and the artifact, before Ray or a model starts: one line, exit 2
        if a.ray:
            require_extra("ray", "hf-torchscript serve --ray", "ray.serve", "starlette")
        else:
            require_extra("serve", "hf-torchscript serve", "starlette", "uvicorn")
        options = ServerOptions(max_batch_tokens=a.max_batch_tokens, max_client_batch_size=a.max_client_batch_size,
                                max_concurrent_requests=a.max_concurrent_requests, max_body_bytes=a.max_body_bytes,
                                body_timeout_s=a.body_timeout, auto_truncate=a.auto_truncate, model_id=a.model_id)
        options.check()
        if not a.ray and a.replicas is not None:
            raise OptionError("--replicas runs copies of the model on Ray Serve: add --ray (one process serves "
                              "without it)")
        check_listen(a.host, a.port)
        from ..runtime.artifact import read_manifest, verify

        manifest = verify(a.artifact) if not a.no_verify else read_manifest(a.artifact)
        check_servable(manifest, a.artifact)
        options.check(manifest["max_length"])
    except HFTorchScriptError as e:
        _err(f"error: {e.cli_message()}")
        return 2
    if a.ray:
        from ..serving.ray_serve import serve_http_forever

        serve_http_forever(a.artifact, host=a.host, port=a.port, replicas=a.replicas or 1, options=options,
                           verify=not a.no_verify)
        return 0
    from ..serving.http import serve

    def ready(url: str) -> None:
        routes = ("OpenAI's POST /v1/completions (streamed with \"stream\": true)" if manifest["task"] in
                  task_names("kv_cache") else "TEI's routes (POST /embed, /predict, /rerank, ...), OpenAI's /v1/embeddings")
        print(f"serving {a.artifact} at {url}: {routes}, GET /info; Ctrl-C stops", flush=True)

    serve(a.artifact, host=a.host, port=a.port, options=options, verify=not a.no_verify, on_ready=ready)
    _err("stopped")
    return 0


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535 (0: any free port), got {text!r}")
    return n


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = -1.0
    if not (x > 0 and x < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return x


def cmd_triton(a) -> int:
    from ..serving.triton import write_repository

    print(write_repository(a.artifact, a.repo, name=a.name, max_batch_size=a.max_batch_size, instances=a.instances,
                           with_tokenizer=a.with_tokenizer, force=a.force))
    return 0


_positive = _flag_type(at_least(1))
_non_negative = _flag_type(at_least(0))


def _int_range(low: int, high: int):
    def convert(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = low - 1
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text!r}")
        return n
    convert.__name__ = "integer"
    return convert


def _add_serving_commands(sub) -> None:
    m = sub.add_parser("map", help="run an artifact over a JSONL/Parquet/CSV file (in-process or on Ray Data); "
                       "writes Parquet")
    m.add_argument("artifact", metavar="ARTIFACT")
    m.add_argument("input", metavar="INPUT", help=".jsonl/.ndjson/.json (one object per line), .parquet or .csv")
    m.add_argument("output", metavar="OUTPUT", help="Parquet file: the input columns, the task's outputs, error")
    m.add_argument("--column", default="text", help="the column holding the texts (default text)")
    m.add_argument("--pair-column", default=None, metavar="COLUMN",
                   help=f"second text of each row ({' / '.join(task_names('pair_required'))}: the context)")
    m.add_argument("--ray", action="store_true", help="run on Ray Data (RAY_ADDRESS, else a local cluster)")
    m.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="with --ray: actors (default: the cluster's CPUs minus one, over --threads)")
    m.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="torch threads per worker (default: 1 per Ray actor; in-process, torch's default); "
                   "equal counts give bitwise-equal files")
    m.add_argument("--batch-size", type=_positive, default=32, metavar="N",
                   help="rows per model call; rows are sorted by length in windows of 8x this (default 32)")
    m.add_argument("--top-k", type=_positive, default=5)
    m.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    add_quiet_flag(m)
    m.add_argument("--no-verify", action="store_true", help="skip the sha256 check of model.pt")
    m.set_defaults(func=cmd_map)

    s = sub.add_parser("serve", help="serve an artifact over HTTP in this process: TEI's and OpenAI's APIs "
                       "(--ray: on Ray Serve)")
    s.add_argument("artifact", metavar="ARTIFACT")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=_port, default=8000, help="default 8000; 0 picks a free port")
    s.add_argument("--max-batch-tokens", type=_positive, default=16384, metavar="N",
                   help="padded tokens per model call, across requests (default 16384)")
    s.add_argument("--max-client-batch-size", type=_positive, default=32, metavar="N",
                   help="most inputs one request may send; more is answered 413 (default 32)")
    s.add_argument("--max-concurrent-requests", type=_positive, default=512, metavar="N",
                   help="requests answered at once; more are answered 429 (default 512)")
    s.add_argument("--max-body-bytes", type=_positive, default=2_000_000, metavar="N",
                   help="largest request body; larger is answered 413 (default 2000000)")
    s.add_argument("--body-timeout", type=_seconds, default=10.0, metavar="S",
                   help="a body not received within S seconds is answered 408 (default 10)")
    s.add_argument("--auto-truncate", action="store_true",
                   help="cut inputs over the max length even when a request does not send \"truncate\": true")
    s.add_argument("--model-id", default=None, help="the name /info and OpenAI's \"model\" report "
                   "(default: the artifact folder's name)")
    s.add_argument("--no-verify", action="store_true", help="skip the sha256 check of model.pt")
    s.add_argument("--ray", action="store_true", help="run the same server on Ray Serve (RAY_ADDRESS, else a "
                   "local cluster): the 'ray' extra")
    s.add_argument("--replicas", type=_positive, default=None, metavar="N",
                   help="with --ray: model replicas, one CPU each (default 1)")
    s.set_defaults(func=cmd_serve)

    t = sub.add_parser("triton", help="write a Triton model repository (libtorch backend) for an artifact")
    t.add_argument("artifact", metavar="ARTIFACT")
    t.add_argument("repo", metavar="REPO", help="model repository folder (created, or added to)")
    t.add_argument("--name", default=None, help="model name (default: the artifact folder's name)")
    t.add_argument("--max-batch-size", type=_int_range(0, 2**31 - 1), default=8, metavar="N",
                   help="Triton's max_batch_size: rows per batched request (default 8)")
    t.add_argument("--instances", type=_positive, default=1, metavar="N", help="CPU instances of the model (default 1)")
    t.add_argument("--with-tokenizer", action="store_true",
                   help="add a Python-backend tokenizer model and an ensemble, so clients send strings")
    t.add_argument("--force", action="store_true", help="replace models of the same name in REPO")
    t.set_defaults(func=cmd_triton)


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a misspelt flag, command or choice (Python 3.11's argparse has none)."""

    argv: typing.ClassVar[list[str]] = []  # the command line being parsed: an unknown flag is matched against its command's flags

    def error(self, message: str):
        super().error(message + self._suggestion(message))

    def _flags_and_choices(self) -> tuple[list[str], list[str]]:
        flags, choices = [], []
        for action in self._actions:
            flags += action.option_strings
            if isinstance(action, argparse._SubParsersAction):
                command = next((w for w in _Parser.argv if w in action.choices), None)
                choices += list(action.choices)
                if command is not None:  # the top-level parser reports the command's unknown flags
                    flags += [o for a in action.choices[command]._actions for o in a.option_strings]
            elif action.choices:
                choices += [str(c) for c in action.choices]
        return flags, choices

    def _suggestion(self, message: str) -> str:
        import difflib
        import re

        flags, choices = self._flags_and_choices()
        m = re.search(r"unrecognized arguments: (.*)", message)
        if m:
            for word in m.group(1).split():
                if word.startswith("--"):
                    close = difflib.get_close_matches(word.split("=")[0], flags, n=1, cutoff=0.6)
                    if close:
                        return f" (did you mean {close[0]}?)"
            return ""
        m = re.search(r"invalid choice: '([^']*)'", message)
        if m:
            close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {close[0]!r}?)"
        return ""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hf-torchscript",
        description="Export Hugging Face Transformers models to validated TorchScript artifacts.",
    )
    p.add_argument("--version", action=_Version, help="print the versions of hf-torchscript, torch and transformers")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("export", help="export MODEL to a validated TorchScript artifact in OUTPUT_DIR")
    e.add_argument("model", metavar="MODEL", help="directory with config.json + weights, or a cached/bundled model id")
    e.add_argument("output_dir", metavar="OUTPUT_DIR")
    add_option_flags(e, "export")
    e.add_argument("--force", action="store_true", help="replace an earlier artifact in OUTPUT_DIR")
    add_quiet_flag(e)
    e.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="time eager transformers vs exported variants (table, JSON, PNG)")
    b.add_argument("model", metavar="MODEL", help="directory with config.json + weights, or a cached/bundled model id")
    add_bench_flags(b)
    add_quiet_flag(b)
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("run", help="run texts through an artifact; a short summary, or --json (docs/cli.md)")
    r.add_argument("output_dir", metavar="OUTPUT_DIR")
    r.add_argument("texts", nargs="*", metavar="TEXT")
    r.add_argument("--input", metavar="FILE", help="read inputs from FILE (- for stdin): one text per line, or JSONL "
                   "({\"text\": ..., \"pair\": ...} / {\"text\": ..., \"choices\": [...]} per line)")
    r.add_argument("--input-format", choices=("auto", "text", "jsonl"), default="auto",
                   help="how --input is read (auto: jsonl for .jsonl/.ndjson files, else text)")
    r.add_argument("--pair", action="append", default=None, help="second text of a pair (QA context), once per TEXT")
    r.add_argument("--choice", action="append", default=None, metavar="TEXT",
                   help=f"{' / '.join(task_names('choices'))}: one choice (repeat the flag), the same for every TEXT")
    r.add_argument("--top-k", type=int, default=None, help="predictions shown per mask / next token (default 5); "
                   "generation with --do-sample: sample from the K most likely tokens")
    r.add_argument("--max-new-tokens", type=_positive, default=None, metavar="N",
                   help="generation: tokens to generate at most (default 32); stops earlier at EOS or a --stop")
    r.add_argument("--do-sample", action="store_true", help="generation: sample instead of greedy decoding")
    r.add_argument("--temperature", type=float, default=None, help="generation with --do-sample (default 1.0)")
    r.add_argument("--top-p", type=float, default=None, help="generation with --do-sample: nucleus sampling")
    r.add_argument("--seed", type=int, default=None, help="generation with --do-sample: the same seed gives "
                   "the same tokens")
    r.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="generation: stop before this text (repeat the flag for several)")
    r.add_argument("--similarity", action="store_true", help="sentence embeddings: add their cosine similarities")
    r.add_argument("--json", action="store_true", help="the full results as JSON, one schema for every task")
    r.add_argument("-o", "--output", metavar="FILE", help="write the results to FILE instead of stdout")
    r.add_argument("--batch-size", type=_positive, default=32, metavar="N", help="texts per model call (default 32)")
    r.add_argument("--no-truncate", action="store_true", help="fail instead of truncating texts over the max length")
    r.add_argument("--no-verify", action="store_true", help="skip the sha256 check of model.pt")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("info", help="summarise an artifact: signature, shapes, what was checked and how")
    i.add_argument("output_dir", metavar="OUTPUT_DIR")
    i.add_argument("--json", action="store_true", help="the whole manifest, plus a \"summary\" of the checks")
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("validate", help="re-run the validation grid against the eager model")
    v.add_argument("output_dir", metavar="OUTPUT_DIR")
    v.add_argument("--model", default=None, metavar="MODEL",
                   help="the model the artifact was exported from (default: the one its manifest records, found "
                   "offline)")
    add_quiet_flag(v)
    add_option_flags(v, "validate", defaults=False)
    v.set_defaults(func=cmd_validate)

    c = sub.add_parser("cpp-build", help="build the C++ runner hts_run against the installed torch's libtorch")
    c.add_argument("--build-dir", default="build/cpp", metavar="DIR", help="cmake build folder (default build/cpp)")
    c.add_argument("--source", default=None, metavar="DIR", help="the cpp/ folder (default: this checkout's)")
    c.add_argument("--print", action="store_true", help="print the cmake commands instead of running them")
    c.set_defaults(func=cmd_cpp_build)

    _add_serving_commands(sub)
    return p


def version_text() -> str:
    """``hf-torchscript X (torch Y, transformers Z)``: read from package metadata, so nothing heavy is imported."""
    from importlib import metadata

    from ..version import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"hf-torchscript {__version__} (torch {installed('torch')}, transformers {installed('transformers')})"


class _Version(argparse.Action):
    """--version, computed only when asked (argparse's own "version" action needs the text up front)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def optional_values(argv: list[str]) -> list[str]:
    """``--optimize`` followed by anything but a value it takes becomes ``--optimize=yes``, so that
    ``export --optimize MODEL OUT`` keeps MODEL a positional (argparse's nargs="?" would swallow it)."""
    from ..options import optimize_value

    takes = {flag(f.name) for f in ExportOptions.fields() if f.metadata.get("optional_value")}
    out = list(argv)
    for i, word in enumerate(out):
        if word == "--":
            break
        if word in takes:
            nxt = out[i + 1] if i + 1 < len(out) else None
            try:
                nxt is not None and optimize_value(nxt)
            except ValueError:
                nxt = None
            if nxt is None:
                out[i] = f"{word}=yes"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as a Namespace; `run`'s TEXTs may come before, between or after its flags."""
    argv = optional_values(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    _Parser.argv = argv
    if argv and argv[0] == "run":
        # `run OUT --json "a" "b"`: argparse's plain parsing stops collecting TEXTs at the first flag.
        # The intermixed parser collects every positional wherever it stands (subparsers cannot use it,
        # so the run command's own parser does, on the words after "run").
        run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
        args = run.parse_intermixed_args(argv[1:])
        args.command = "run"
        return args
    return parser.parse_args(argv)


def _quiet_third_party() -> None:
    """Other libraries' import-time log lines that say nothing to our users (the CLI owns its process).

    torchao logs "Failed to load ..._C_mxfp8...so" and "Detected no triton" on CPU machines, and torch's
    pytree logs a deprecation of torchao's own Enum registration: four lines before every export's output.
    Errors still show. The quantized-tensor deprecation notice of int8 modules is filtered where they load.
    """
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=QUANTIZED_DEPRECATED)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet_third_party()
    debug = bool(os.environ.get("HF_TORCHSCRIPT_DEBUG"))
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not as a warning at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141  # like a program killed by SIGPIPE; the reader (`| head`) had what it wanted
    except HFTorchScriptError as e:
        if debug:
            raise
        _err(f"error: {e.cli_message()}")  # options spelled as flags (--force), not keywords (force=True)
        _err("(set HF_TORCHSCRIPT_DEBUG=1 for the full traceback)")
        return 1
    except KeyboardInterrupt as e:
        from ..atomic import Terminated

        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        if getattr(e, "hts_written", False):
            _err(f"{what} after the export was complete: OUTPUT_DIR holds the new artifact")
        else:
            _err(f"{what}; nothing was written")
        return getattr(e, "exit_code", 130)
    except OSError as e:  # a file we were pointed at is unreadable, a disk failed: the OS says it best
        if debug:
            raise
        _err(f"error: {e}")
        _err("(set HF_TORCHSCRIPT_DEBUG=1 for the full traceback)")
        return 1
    except Exception as e:  # noqa: BLE001 - a bug: still one line, and how to get the details
        if debug:
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        _err(f"error: internal error ({type(e).__name__}: {first}); this is a bug in hf-torchscript: please "
             "report it with the output of HF_TORCHSCRIPT_DEBUG=1")
        return 70  # EX_SOFTWARE


def _silence_stdout() -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (tests capture it)


if __name__ == "__main__":
    sys.exit(main())
