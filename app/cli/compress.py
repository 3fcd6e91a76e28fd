"""``shrinkwise compress / evaluate / generate / methods``: run the bundled compressors from a terminal.

::

    shrinkwise methods [--json]
    shrinkwise models [--json]          (the models folder and the Hugging Face cache)
    shrinkwise compress MODEL --method ID [--bits N] [--group-size G] [--sparsity S] [--set key=value ...]
                        [--calib FILE] [--eval FILE] --out DIR [--calib-samples N] [--quick] [--json]
                        [--device auto|cpu|cuda[:N]] [--no-measure]
    shrinkwise evaluate MODEL [--eval FILE] [--json]
    shrinkwise generate MODEL --prompt TEXT [--max-new-tokens N]

``MODEL`` is ``demo``, a model folder, a ``.gguf`` file, a Shrinkwise packed checkpoint or a hub id
(``org/name``: downloaded first, safetensors only, into ``SHRINKWISE_MODELS_DIR`` or the Hugging Face cache).
Exit codes: 0 fine, 2 a problem the user can fix (the message says what; no traceback), 130 cancelled.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)


def _fail(msg: str, code: int = 2) -> None:
    _err.print(f"[red]error:[/red] {msg}", markup=True, highlight=False)
    raise typer.Exit(code)


class _PlainProgress:
    """Progress as plain, flushed lines on stderr for a log file or a pipe (no terminal to redraw).

    A line for every message and every stage change, and otherwise at most one every ``every_s``
    seconds while the fraction moves, so a long GPTQ run shows it is alive without flooding the log.
    """

    def __init__(self, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s, self.clock = every_s, clock
        self.last_t = 0.0
        self.last_stage = ""

    def __call__(self, stage: str, frac: float, msg: str) -> None:
        from compressors.progress import base_stage

        now = self.clock()
        # a moving count ("measure after — 12/20 windows, ETA 00:41") is the same stage
        if not msg and base_stage(stage) == self.last_stage and now - self.last_t < self.every_s:
            return
        self.last_t, self.last_stage = now, base_stage(stage)
        line = f"{time.strftime('%H:%M:%S')} {100 * frac:5.1f}% [{stage}] {msg}".rstrip()
        print(line, file=sys.stderr, flush=True)


#: The stages a ``--no-measure`` run has.
_COMPRESS_ONLY_STAGES = ("load", "compress", "save")


def _pre_run_lines(
    model: str,
    method: str,
    cfg: dict[str, Any],
    *,
    export: bool,
    calib: Path | None,
    eval_file: Path | None,
    calibration: tuple[int, int],
    measure: bool = True,
    evaluation: tuple[int | None, int | None],
) -> list[str]:
    """What the Compress page says before a run, as lines to print before it starts: the settings that
    block an export (:mod:`jobs.export_check`) and the estimated time of every stage. Nothing when the
    model cannot be read yet (the run then says why)."""
    from compressors.base import Calibration, CompressionError, CompressorId
    from compressors.models import inspect_checkpoint
    from jobs import preflight

    try:
        info = inspect_checkpoint(model)
        check = preflight.export_check(CompressorId(method), info, cfg)
    except (CompressionError, OSError, ValueError):
        return []
    lines = []
    if export:
        lines += [f"[yellow]warning:[/yellow] {escape(text)}" for text in check.blockers]
        lines += [f"[dim]note:[/dim] {escape(text)}" for text in check.notes]
    try:
        windows, seq_len = evaluation
        before_s = (
            preflight.cached_before_seconds(info, calib, eval_file, windows, seq_len)
            if windows is not None and seq_len is not None
            else None
        )
        cost = preflight.estimate_cost(
            CompressorId(method),
            info,
            cfg,
            Calibration(*calibration),
            eval_windows=windows,
            eval_seq_len=seq_len,
            before_seconds=before_s,
            eval_text=preflight.eval_text_of(calib, eval_file),
        )
    except (CompressionError, OSError, ValueError):
        return lines
    # --no-measure runs load, compress and save only (compressors.run.compress_only): estimate just those
    shown = {k: v for k, v in cost.stages.items() if k != "total" and (measure or k in _COMPRESS_ONLY_STAGES)}
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in shown.items())
    lines.append(f"[dim]estimate:[/dim] about {sum(shown.values()):.0f} s ({stages})")
    if measure and cost.eval_plan is not None:
        lines.append(f"[dim]evaluation:[/dim] {escape(cost.eval_plan.describe())}")
    return lines


def _local_model(model: str) -> str:
    """What MODEL names on this machine: an existing path as it is; a name under the models folder
    (``SHRINKWISE_MODELS_DIR``, e.g. ``llama-7b`` or a downloaded ``org/name``) as that folder; another hub
    id (``org/name``) downloaded first (safetensors, configs and tokenizer files only; resumable) into the
    models folder or the Hugging Face cache. Anything else is returned as it is (the run says what is
    wrong with it)."""
    from jobs.access import models_dir
    from jobs.model_sources import download_hub_model, is_hub_id

    if Path(model).expanduser().exists():
        return model
    root = models_dir()
    if root is not None and not Path(model).is_absolute():
        under = (root / model).resolve()
        if (under == root or root in under.parents) and under.exists():
            return str(under)
    if not is_hub_id(model):
        return model
    last = [-1.0]

    def say(frac: float, msg: str) -> None:
        if frac - last[0] >= 0.05 or frac in (0.0, 1.0):
            last[0] = frac
            _err.print(f"[dim]download:[/dim] {100 * frac:5.1f}% {escape(msg)}", highlight=False)

    return str(download_hub_model(model, progress=say))


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f}%"


def methods(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the bundled compressors with their flags and settings."""
    from compressors.base import all_compressors

    rows = []
    for cid, cls in all_compressors().items():
        rows.append(
            {
                "id": cid,
                "implements": list(cls.implements),  # knowledge-base method ids a run is filed under
                "name": cls.name,
                "phase": cls.phase,
                "impact": cls.impact,
                "needs_calibration": cls.needs_calibration,
                "needs_gradients": cls.needs_gradients,
                "needs_gpu": cls.needs_gpu,
                "output_format": cls.output_format,
                "summary": cls.summary,
                "settings": [{k: v for k, v in f.items()} for f in cls.config_cls.describe()],
            }
        )
    if json_out:
        _out.print_json(json.dumps(rows, default=str))
        return
    t = Table(title="Bundled compressors")
    for col in ("id", "phase", "impact", "calibration", "settings (default)", "summary"):
        t.add_column(col, overflow="fold")
    for r in rows:
        settings = ", ".join(f"{s['name']}={s['default']}" for s in r["settings"])
        t.add_row(
            r["id"],
            r["phase"],
            r["impact"],
            "yes" if r["needs_calibration"] else "no",
            settings,
            r["summary"],
        )
    _out.print(t)


def compress(
    model: str = typer.Argument(
        ..., help="demo, a model folder, a .gguf file, a packed checkpoint or a hub id"
    ),
    method: str = typer.Option(..., "--method", "-m", help="Compressor id (see `shrinkwise methods`)"),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (packed model, archive, export, report)"
    ),
    sets: list[str] = typer.Option([], "--set", help="Method setting key=value (repeatable)"),
    bits: int | None = typer.Option(None, "--bits", help="Shortcut for --set bits=N"),
    group_size: int | None = typer.Option(None, "--group-size", help="Shortcut for --set group_size=G"),
    sparsity: float | None = typer.Option(None, "--sparsity", help="Shortcut for --set sparsity=S"),
    calib: Path | None = typer.Option(None, "--calib", help="Calibration text file (default: built-in)"),
    eval_file: Path | None = typer.Option(
        None, "--eval", help="Evaluation text file (default: held-out built-in)"
    ),
    calib_samples: int = typer.Option(128, "--calib-samples", help="Calibration windows"),
    calib_seq_len: int = typer.Option(512, "--calib-seq-len", help="Tokens per calibration window"),
    eval_windows: int | None = typer.Option(
        None,
        "--eval-windows",
        help="Evaluation windows of --eval-seq-len tokens (default: 20 where measuring is cheap, else "
        "bounded so that measuring before and after takes no longer than the compression)",
    ),
    eval_seq_len: int | None = typer.Option(
        None, "--eval-seq-len", help="Tokens per evaluation window (default: 512, or bounded as above)"
    ),
    no_before: bool = typer.Option(False, "--no-before", help="Skip measuring the original model"),
    remeasure: bool = typer.Option(
        False,
        "--remeasure",
        help="Measure the original again even when an earlier run measured the same files and text",
    ),
    no_export: bool = typer.Option(False, "--no-export", help="Skip the compressed-tensors export"),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON"),
    dense_dtype: str = typer.Option(
        "auto",
        "--dense-dtype",
        help="dtype of the tensors left unquantized (embeddings, norms, head): auto (the source's 16-bit "
        "dtype; bfloat16 for a GGUF source; float32 stays float32), float32, bfloat16 or float16",
    ),
    device: str = typer.Option(
        "auto",
        "--device",
        help="Where a streamed run (a block-wise method on a safetensors folder) computes the block it compresses "
        "and its activations: auto (CUDA when available), cpu, cuda or cuda:N",
    ),
    no_measure: bool = typer.Option(
        False,
        "--no-measure",
        help="Only compress and write the packed model: no before/after measurement, which loads the whole "
        "model (for checkpoints too large to load whole; the block-wise methods stream them block by block)",
    ),
) -> None:
    """Compress MODEL with a bundled method, measure before/after and write the packed model."""
    from compressors.base import Cancelled, CompressionError, CompressorId
    from compressors.run import comparison_rows, compress_and_measure, compress_only
    from compressors.settings import config_from_assignments

    try:
        cfg = config_from_assignments(
            method, sets, {"bits": bits, "group_size": group_size, "sparsity": sparsity}
        )
    except CompressionError as exc:
        _fail(str(exc))
    for f in (calib, eval_file):
        if f is not None and not f.is_file():
            _fail(f"text file {f} not found")
    try:
        model = _local_model(model)
    except CompressionError as exc:
        _fail(str(exc))
    for line in _pre_run_lines(
        model,
        method,
        cfg,
        export=not no_export and not no_measure,
        calib=calib,
        eval_file=eval_file,
        calibration=(calib_samples, calib_seq_len),
        evaluation=(eval_windows, eval_seq_len),
        measure=not no_measure,
    ):
        _err.print(line, highlight=False)
    cancel = threading.Event()
    plain = _PlainProgress() if not _err.is_terminal else None
    progress = Progress(
        TextColumn("{task.description:<44}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=_err,
        transient=json_out,
        # rich draws nothing useful into a log file or a pipe: there, plain lines (see _PlainProgress)
        disable=plain is not None,
    )
    try:
        with progress:
            task = progress.add_task("starting", total=1.0)

            def on_progress(stage: str, frac: float, msg: str) -> None:
                if plain is not None:
                    plain(stage, frac, msg)
                else:
                    progress.update(task, completed=frac, description=stage[:60])

            if no_measure:
                only = compress_only(
                    model,
                    CompressorId(method),
                    cfg,
                    out_dir=out,
                    calib_text=calib,
                    progress=on_progress,
                    cancel_event=cancel,
                    n_calib_samples=calib_samples,
                    calib_seq_len=calib_seq_len,
                    dense_dtype=dense_dtype,
                    device=device,
                )
                if json_out:
                    print(json.dumps(asdict(only), default=str, indent=2))
                else:
                    _out.print(
                        f"packed model: {only.checkpoint_dir}\npath: {only.path}\n"
                        f"compression took {only.timings.get('compress', 0):.1f} s, peak RSS "
                        f"{only.peak_rss_bytes / 2**30:.2f} GiB"
                    )
                return
            result = compress_and_measure(
                model,
                CompressorId(method),
                cfg,
                out_dir=out,
                calib_text=calib,
                eval_text=eval_file,
                progress=on_progress,
                cancel_event=cancel,
                n_calib_samples=calib_samples,
                calib_seq_len=calib_seq_len,
                eval_windows=eval_windows,
                eval_seq_len=eval_seq_len,
                measure_before=not no_before,
                reuse_before=not remeasure,
                export=not no_export,
                dense_dtype=dense_dtype,
                device=device,
            )
    except KeyboardInterrupt:
        cancel.set()
        _fail("cancelled", 130)
    except Cancelled:
        _fail("cancelled", 130)
    except (CompressionError, ValueError, OSError) as exc:
        _fail(str(exc))
    if json_out:
        print(json.dumps(result.to_dict(), default=str, indent=2))
        return
    t = Table(title=f"{method} on {model}  ({json.dumps(result.config, sort_keys=True)})")
    t.add_column("figure")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    for name, b, a in comparison_rows(result.before, result.after):
        t.add_row(name, b, a)
    _out.print(t)
    for w in result.warnings:
        _err.print(f"[yellow]warning:[/yellow] {escape(w)}")
    ch = result.changes()
    if ch:
        _out.print(
            f"perplexity {_pct(ch['perplexity'])}, size on disk {_pct(ch['size_on_disk'])}, "
            f"decode speed {_pct(ch['decode_tokens_per_s'])}"
        )
    if result.before is not None:
        _out.print(f"before: {result.before.generation!r}")
    _out.print(f"after:  {result.after.generation!r}")
    a = result.artifacts
    _out.print(f"packed model: {a.checkpoint_dir}" + (f"\narchive: {a.archive}" if a.archive else ""))
    _out.print(f"compressed-tensors export: {a.export_dir or a.export_note}")
    gguf = f"{a.gguf_path} ({a.gguf_type}; {a.gguf_note})" if a.gguf_path else a.gguf_note
    _out.print(f"GGUF export (llama.cpp): {gguf}")
    _out.print(f"report: {a.report_md}   (compression took {result.timings.get('compress', 0):.1f} s)")


def evaluate_cmd(
    model: str = typer.Argument(
        ..., help="demo, a model folder, a .gguf file, a packed checkpoint or a hub id"
    ),
    eval_file: Path | None = typer.Option(
        None, "--eval", help="Evaluation text file (default: held-out built-in)"
    ),
    eval_windows: int = typer.Option(20, "--eval-windows"),
    eval_seq_len: int = typer.Option(512, "--eval-seq-len"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """Measure MODEL: perplexity, size, bits per weight, speed, memory, a greedy generation."""
    from compressors.base import CompressionError
    from compressors.evaluate import evaluate
    from compressors.models import inspect_checkpoint, load_model
    from compressors.run import comparison_rows
    from compressors.text import resolve_texts

    try:
        if eval_file is not None and not eval_file.is_file():
            _fail(f"text file {eval_file} not found")
        info = inspect_checkpoint(model)
        texts = resolve_texts(None, eval_file)
        m, tok = load_model(model)
        with _err.status("measuring..."):
            r = evaluate(
                m,
                tok,
                texts.evaluation,
                n_windows=eval_windows,
                seq_len=eval_seq_len,
                checkpoint_dir=info.path if info.source in ("demo", "folder", "packed") else None,
            )
    except (CompressionError, ValueError, OSError) as exc:
        _fail(str(exc))
    if json_out:
        print(json.dumps({"model": info.to_dict(), "result": r.to_dict()}, default=str, indent=2))
        return
    t = Table(title=f"{model}: {info.architecture}, {info.n_params:,} parameters")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for name, _, a in comparison_rows(None, r):
        t.add_row(name, a)
    _out.print(t)
    _out.print(f"generation for {r.generation_prompt!r}: {r.generation!r}")


def generate(
    model: str = typer.Argument(
        ..., help="demo, a model folder, a .gguf file, a packed checkpoint or a hub id"
    ),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", min=1, max=4096),
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the tokenizer's chat template"),
) -> None:
    """Greedy generation with MODEL (works on packed checkpoints too)."""
    from compressors.base import CompressionError
    from compressors.evaluate import greedy_generate
    from compressors.models import load_model

    try:
        m, tok = load_model(model)
        text = prompt
        if chat and getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        out = greedy_generate(m, tok, text, max_new_tokens)
    except (CompressionError, ValueError, OSError) as exc:
        _fail(str(exc))
    print(prompt + out if not chat else out)


def models(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the models on this machine: under the models folder (SHRINKWISE_MODELS_DIR) and in the
    Hugging Face cache. Give a listed name or path to `shrinkwise compress`."""
    from jobs.access import ENV_MODELS_DIR, models_dir
    from jobs.model_sources import hf_cache_dir, list_hf_cache, list_models_dir

    root, cache = models_dir(), hf_cache_dir()
    rows = [
        {"source": "models folder", "name": m.label, "path": str(m.path), "bytes": m.size_bytes}
        for m in list_models_dir()
    ] + [
        {"source": "Hugging Face cache", "name": m.label, "path": str(m.path), "bytes": m.size_bytes}
        for m in list_hf_cache(cache)
    ]
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title=f"Models folder: {root or f'not set ({ENV_MODELS_DIR})'}; Hugging Face cache: {cache}")
    for col in ("source", "name", "size", "path"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["source"], r["name"], f"{r['bytes'] / 2**30:.2f} GiB", r["path"])
    _out.print(t)


def register(app: typer.Typer) -> None:
    """Add ``compress``, ``evaluate``, ``generate``, ``methods`` and ``models`` to the main app."""
    app.command("models")(models)
    app.command("compress")(compress)
    app.command("evaluate")(evaluate_cmd)
    app.command("generate")(generate)
    app.command("methods")(methods)
