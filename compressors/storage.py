"""Shrinkwise's packed checkpoint format, and safe archives of checkpoint folders.

A compressed model is saved as a folder that any transformers user recognises, plus one manifest:

* ``config.json`` (+ ``generation_config.json``): the original model's config, unchanged;
* tokenizer files;
* ``model.safetensors``: for every packed module (see :mod:`compressors.packed`) the tensors of its
  ``packed_state()`` under ``<module path>.<name>`` (e.g. ``model.layers.0.mlp.up_proj.qweight``, int32
  words of packed 4-bit codes), and every other parameter at its own dtype (a tied embedding once);
* ``shrinkwise.json``: format version, method, config, each packed module's type and metadata, and the
  measured results.

Because the packed tensors are what is written, the weights file's size is the stored bits of
:func:`compressors.evaluate.storage_bits` divided by eight, plus the safetensors header (a few tens of
kilobytes); a test checks this.

Loading builds the model from ``config.json`` without initialising weights, swaps in the packed
modules, and loads the rest. :func:`make_archive` and :func:`safe_extract` move checkpoint folders
through uploads and downloads; extraction refuses path traversal, absolute paths, links, device files,
and archives with too many files or too many bytes.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
import tarfile
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import torch
from torch import nn

from compressors.base import CompressionError
from compressors.packed import get_packed_type, packed_modules

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

FORMAT = "shrinkwise-packed"
FORMAT_VERSION = 1
MANIFEST = "shrinkwise.json"
WEIGHTS = "model.safetensors"


class CheckpointError(CompressionError):
    """A packed checkpoint is missing something or inconsistent; the message says what."""


class UnsafeArchive(CompressionError):
    """An archive was refused (traversal, links, devices, size); nothing outside the target was written."""


def persistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, b in model.named_buffers():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        if attr not in getattr(module, "_non_persistent_buffers_set", set()):
            out[name] = b
    return out


def checkpoint_tensors(model: nn.Module, dense_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors :func:`save_packed` writes: packed states, then dense parameters (tied ones once)."""
    packed = packed_modules(model)
    tensors: dict[str, torch.Tensor] = {}
    for path, m in packed.items():
        for k, t in m.packed_state().items():
            tensors[f"{path}.{k}"] = t.detach().contiguous()
    inside = tuple(p + "." for p in packed)
    seen: set[int] = set()
    for name, p in model.named_parameters():  # named_parameters() yields a tied tensor once
        if name.startswith(inside) or id(p) in seen:
            continue
        seen.add(id(p))
        t = p.detach()
        if dense_dtype is not None and t.is_floating_point():
            t = t.to(dense_dtype)
        tensors[name] = t.contiguous()
    for name, b in persistent_buffers(model).items():
        if not name.startswith(inside) and name not in tensors:
            tensors[name] = b.detach().contiguous()
    return tensors


def save_packed(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    out_dir: str | Path,
    *,
    method: str,
    config: dict[str, Any],
    results: dict[str, Any] | None = None,
    dense_dtype: torch.dtype | None = None,
    extra: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``model`` (with its packed modules) to ``out_dir`` in the packed format; returns the folder.

    ``dense_dtype`` (e.g. ``torch.float16``) converts the parameters that are not packed; by default they
    keep their dtype, so the only change measured is the compressor's. ``progress(files done, files)``
    is called as each part is written (config, generation config, tokenizer, weights, manifest).
    """
    from safetensors.torch import save_file

    steps = 5

    def wrote(done: int) -> None:
        if progress is not None:
            progress(done, steps)

    wrote(0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = checkpoint_tensors(model, dense_dtype)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    packed = packed_modules(model)
    write_side_files(
        out,
        cfg,
        getattr(model, "generation_config", None),
        tokenizer,
        architecture=type(model).__name__,
        packed=bool(packed),
    )
    wrote(3)  # config, generation config, tokenizer
    save_file(tensors, str(out / WEIGHTS), metadata=WEIGHTS_METADATA)
    wrote(4)
    write_manifest(
        out,
        method=method,
        config=config,
        dense_dtype=dense_dtype,
        modules={path: {"type": m.packed_type, "meta": m.meta()} for path, m in packed.items()},
        results=results,
        extra=extra,
    )
    wrote(5)
    return out


#: The metadata of every packed ``model.safetensors`` (whole-model and streamed writers alike).
WEIGHTS_METADATA = {"format": "pt", "producer": FORMAT}


def write_side_files(
    out: Path,
    cfg: PretrainedConfig,
    generation_config: Any,
    tokenizer: PreTrainedTokenizerBase | None,
    *,
    architecture: str,
    packed: bool,
) -> None:
    """``config.json`` (marked packed when ``packed``), the generation config and the tokenizer files of a
    packed checkpoint; code files are dropped. Shared by :func:`save_packed` and the streaming writer."""
    if not getattr(cfg, "architectures", None):  # built from a config or a GGUF: name the class
        cfg.architectures = [architecture]
    cfg.save_pretrained(out)
    if packed:
        _mark_config_packed(out / "config.json")
    if generation_config is not None:
        try:
            generation_config.save_pretrained(out)
        except Exception as exc:  # an invalid generation config must not lose the compressed model
            log.warning("generation_config not saved: %s", exc)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    drop_code_files(out)


def write_manifest(
    out: Path,
    *,
    method: str,
    config: dict[str, Any],
    dense_dtype: torch.dtype | None,
    modules: dict[str, dict[str, Any]],
    results: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """``shrinkwise.json``: format, method, settings, every packed module's type and metadata."""
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": method,
        "config": config,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dense_dtype": None if dense_dtype is None else str(dense_dtype).replace("torch.", ""),
        "modules": modules,
        "results": results or {},
        **(extra or {}),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))


#: safetensors' names of the dtypes a packed checkpoint holds.
_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class SafetensorsStreamWriter:
    """Writes one safetensors file tensor by tensor, holding none of them: what the streaming compressor
    needs, since :func:`safetensors.torch.save_file` wants every tensor in memory at once.

    A safetensors file is an 8-byte header length, a JSON header (name -> dtype, shape, byte range) and
    the data. The header can only be written once every tensor is known, so :meth:`add` appends each
    tensor's bytes to a temporary file per element size, and :meth:`finish` writes the header and then
    the parts, widest elements first: every tensor then starts at a multiple of its element size, as in
    files ``save_file`` writes (the header is padded to 8 bytes the same way). The disk holds the data
    twice for a moment while the parts are copied; memory holds one copy buffer.

    Example::

        >>> w = SafetensorsStreamWriter(Path(tmp) / "model.safetensors")
        >>> w.add("a", torch.zeros(3, dtype=torch.int32)); w.add("b", torch.ones(2))
        >>> w.finish({"format": "pt"})
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._parts: dict[int, IO[bytes]] = {}
        self._sizes: dict[int, int] = {}
        self._entries: dict[str, tuple[str, list[int], int, int, int]] = {}
        self.data_bytes = 0

    def _part(self, element_size: int) -> IO[bytes]:
        if element_size not in self._parts:
            self._parts[element_size] = open(
                self.path.with_name(f".{self.path.name}.part{element_size}"), "w+b"
            )
            self._sizes[element_size] = 0
        return self._parts[element_size]

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor`` (any device; copied to the CPU) under ``name``."""
        if name in self._entries:
            raise ValueError(f"tensor {name!r} written twice")
        if tensor.dtype not in _ST_DTYPES:
            raise ValueError(
                f"tensor {name!r} has dtype {tensor.dtype}; safetensors holds {list(_ST_DTYPES)}"
            )
        t = tensor.detach().to("cpu").contiguous()
        size = t.element_size()
        raw = t.reshape(-1).view(torch.uint8)
        part = self._part(size)
        offset = self._sizes[size]
        if raw.numel():
            raw.numpy().tofile(part)
        self._sizes[size] = offset + raw.numel()
        self._entries[name] = (_ST_DTYPES[t.dtype], list(t.shape), size, offset, raw.numel())
        self.data_bytes += raw.numel()

    def finish(self, metadata: dict[str, str] | None = None) -> Path:
        """Write the file (header, then the parts) and remove the temporary parts; returns the path."""
        order = sorted(self._parts, reverse=True)
        base: dict[int, int] = {}
        pos = 0
        for size in order:
            base[size] = pos
            pos += self._sizes[size]
        header: dict[str, Any] = {"__metadata__": dict(metadata or {})}
        for name, (dtype, shape, size, offset, n) in self._entries.items():
            start = base[size] + offset
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [start, start + n]}
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        tmp = self.path.with_name(f".{self.path.name}.writing")
        try:
            with open(tmp, "wb") as out:
                out.write(len(blob).to_bytes(8, "little"))
                out.write(blob)
                for size in order:
                    part = self._parts[size]
                    part.seek(0)
                    shutil.copyfileobj(part, out, 16 * 2**20)
            tmp.replace(self.path)
        finally:
            self.close()
            tmp.unlink(missing_ok=True)
        return self.path

    def close(self) -> None:
        """Remove the temporary parts (after :meth:`finish`, or to abandon the file)."""
        for size, part in self._parts.items():
            part.close()
            self.path.with_name(f".{self.path.name}.part{size}").unlink(missing_ok=True)
        self._parts.clear()


_DENSE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DENSE_DTYPES = ("auto", *_DENSE)


def resolve_dense_dtype(requested: str, source: str, source_dtype: str) -> torch.dtype:
    """The dtype a run stores its unquantized tensors in (embeddings, norms, the head, pruned layers'
    values): ``auto`` keeps the checkpoint's own 16-bit dtype, and uses bfloat16 for a GGUF source (the demo model is one), whose
    dense copy in memory is a float32 dequantization of a ~4-6-bit file (kept in float32, a Gemma-3
    GGUF's 262k-word embedding made the output three times the input). A float32 source stays float32,
    so the only change measured is the compressor's. Any other value is used as given.
    """
    if requested not in DENSE_DTYPES:
        raise ValueError(f"dense dtype {requested!r}: choose one of {', '.join(DENSE_DTYPES)}")
    if requested != "auto":
        return _DENSE[requested]
    if source in ("gguf", "demo"):  # the demo model is a float32 copy of a GGUF file (compressors.demo)
        return torch.bfloat16
    return _DENSE[source_dtype] if source_dtype in ("bfloat16", "float16") else torch.float32


PACKED_MODEL_TYPE = "shrinkwise-packed"
LOAD_HINT = (
    "Shrinkwise packed checkpoint: load it with `from compressors.storage import load_packed; "
    "load_packed(folder)` (pip install shrinkwise), or export it to compressed-tensors or GGUF for an engine"
)


#: Files that are code, never copied into an output (transformers' save_pretrained copies the modules
#: an ``auto_map`` names next to the config or tokenizer).
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".so", ".pyd")


def drop_code_files(folder: str | Path) -> list[str]:
    """Delete code files (``*.py`` ...) anywhere under ``folder``; returns their relative names."""
    root = Path(folder)
    dropped: list[str] = []
    for p in sorted(root.rglob("*")):
        if p.name.lower().endswith(CODE_SUFFIXES) and (p.is_file() or p.is_symlink()):
            dropped.append(p.relative_to(root).as_posix())
            p.unlink()
    if dropped:
        log.warning("dropped code files from %s: %s", root, dropped)
    return dropped


def _mark_config_packed(config_json: Path) -> None:
    """Make plain transformers refuse the folder instead of loading random weights.

    The packed layers' tensors (``qweight``, ``scales``...) are not the tensors transformers expects, and
    transformers skips a ``quantization_config`` it does not know with a warning, so the folder loaded as
    a randomly initialised model with no error. An unknown ``model_type`` is refused by every
    ``from_pretrained`` with a message that names it; the real one is kept under ``shrinkwise_packed``,
    which :func:`read_packed_config` restores.
    """
    cfg = json.loads(config_json.read_text())
    cfg["shrinkwise_packed"] = {"model_type": cfg["model_type"], "how_to_load": LOAD_HINT}
    cfg["model_type"] = PACKED_MODEL_TYPE
    config_json.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def read_packed_config(folder: str | Path) -> PretrainedConfig:
    """The transformers config of a packed checkpoint folder (restoring the model type saved aside)."""
    from transformers import AutoConfig

    cfg = json.loads((Path(folder) / "config.json").read_text())
    marker = cfg.pop("shrinkwise_packed", None)
    config: PretrainedConfig  # AutoConfig's constructors are typed as returning Any
    if cfg.get("model_type") != PACKED_MODEL_TYPE:  # written before the marker existed, or a dense save
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        return config
    if not isinstance(marker, dict) or not isinstance(marker.get("model_type"), str):
        raise CheckpointError(
            f"{folder}: config.json says {PACKED_MODEL_TYPE} but lacks the original model type"
        )
    cfg.pop("model_type")
    config = AutoConfig.for_model(marker["model_type"], **cfg)
    return config


def read_manifest(folder: str | Path) -> dict[str, Any]:
    p = Path(folder) / MANIFEST
    if not p.is_file():
        raise CheckpointError(f"{folder} is not a Shrinkwise packed checkpoint: {MANIFEST} is missing")
    manifest: dict[str, Any] = json.loads(p.read_text())
    if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: format {manifest.get('format')!r} version {manifest.get('format_version')} is not readable "
            f"by this Shrinkwise (reads {FORMAT} up to version {FORMAT_VERSION})"
        )
    return manifest


def update_manifest(folder: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the manifest (e.g. ``results=...`` after measuring)."""
    manifest = read_manifest(folder)
    manifest.update(fields)
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def build_empty(config: PretrainedConfig, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The model of ``config`` with uninitialised weights (fast; the weights are loaded next)."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    d = dtype or getattr(config, "dtype", None) or torch.float32
    if isinstance(d, str):
        d = getattr(torch, d)
    with no_init_weights():
        model: PreTrainedModel = AutoModelForCausalLM.from_config(config, dtype=d, trust_remote_code=False)
    return model


def load_packed(folder: str | Path) -> PreTrainedModel:
    """Rebuild a runnable model from a packed checkpoint folder (eval mode, CPU).

    Layers with a low-bit kernel (:mod:`compressors.kernels`) get their kernel weight here, and the
    memory their unpacked codes took is handed back, so the loaded model's RAM is about its packed size.
    """
    from compressors.layers import set_module
    from compressors.models import check_safetensors

    folder = Path(folder)
    manifest = read_manifest(folder)
    wfile = folder / WEIGHTS
    if not wfile.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS} is missing")
    check_safetensors(wfile)
    config = read_packed_config(folder)
    model = build_empty(config)
    tensors = _read_private(wfile)
    for path, spec in manifest.get("modules", {}).items():
        try:
            cls = get_packed_type(spec["type"])
        except KeyError as exc:
            raise CheckpointError(f"{folder}: module {path}: {exc.args[0]}") from None
        prefix = path + "."
        state = {
            k[len(prefix) :]: tensors.pop(k)
            for k in [k for k in tensors if k.startswith(prefix) and "." not in k[len(prefix) :]]
        }
        if not state:
            raise CheckpointError(f"{folder}: no tensors for packed module {path} in {WEIGHTS}")
        set_module(model, path, cls.from_packed(state, spec["meta"]))
    # Dense tensors saved in 16 bits (dense_dtype) compute in the model's dtype: a bf16 embedding feeding
    # float32 layers would mix dtypes. What was *stored* is remembered for the bit count of the harness.
    compute = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    tensors = {k: (t.to(compute) if t.is_floating_point() else t) for k, t in tensors.items()}
    stored = manifest.get("dense_dtype")
    if isinstance(stored, str) and stored:
        vars(model)["shrinkwise_stored_dense_bits"] = torch.finfo(getattr(torch, stored)).bits
    result = model.load_state_dict(tensors, strict=False, assign=True)
    packed_prefixes = tuple(p + "." for p in manifest.get("modules", {}))
    tied = _tied_keys(model)
    missing = [k for k in result.missing_keys if not k.startswith(packed_prefixes) and k not in tied]
    if missing:
        raise CheckpointError(f"{folder}: {WEIGHTS} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    if result.unexpected_keys:
        raise CheckpointError(f"{folder}: {WEIGHTS} has unknown tensors, e.g. {result.unexpected_keys[:3]}")
    if getattr(config, "tie_word_embeddings", False) or tied:
        model.tie_weights()
    model.eval()
    # dynamic methods (LazyLLM, AIM, TEAL) saved untouched weights plus a record in config.json
    # ("shrinkwise_dynamic"); re-apply them so the loaded model behaves as the compressed one did
    from compressors.dynamic.manifest import reinstall

    reinstall(model, manifest.get("dynamic"))
    from compressors.packed import QuantizedLinear

    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            module.prepare_kernel("cpu")
    release_free_heap()
    return model


def _read_private(wfile: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a private copy, one at a time.

    ``safetensors`` hands out tensors that are views of a memory map of the file: every page read stays
    in the process's RSS for as long as any tensor of the map lives, so codes that a layer drops after
    building its kernel weight would still be counted (measured: 0.42x instead of 0.3x of float32 on a
    1.1B model). Copying each tensor and letting its map go keeps only what the model holds.
    """
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    with safe_open(str(wfile), framework="pt") as f:
        for key in f.keys():
            view = f.get_tensor(key)
            out[key] = view.clone()
            del view
    return out


def release_free_heap() -> None:
    """Ask the C allocator to return freed heap pages to the OS (glibc's ``malloc_trim``).

    Building kernel weights frees many mid-sized buffers (unpacked codes); glibc keeps such freed memory
    in its arenas, where it still counts as the process's RSS. Elsewhere (macOS, musl) this does nothing.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _tied_keys(model: nn.Module) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or {}
    if isinstance(keys, dict):
        return set(keys)
    return set(keys)


# ---------------------------------------------------------------------------------------------------
# archives


def make_archive(folder: str | Path, fmt: str = "zip", out_path: str | Path | None = None) -> Path:
    """Archive ``folder`` as ``.zip`` or ``.tar.gz`` (members under the folder's name); returns the path."""
    folder = Path(folder)
    if fmt not in ("zip", "tar.gz"):
        raise ValueError(f"fmt={fmt!r}; choose 'zip' or 'tar.gz'")
    out = Path(out_path) if out_path else folder.with_name(folder.name + "." + fmt)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    if fmt == "zip":
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for p in files:
                z.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
    else:
        with tarfile.open(out, "w:gz", compresslevel=1) as t:
            for p in files:
                t.add(p, f"{folder.name}/{p.relative_to(folder).as_posix()}", recursive=False)
    return out


def _safe_member_path(name: str, dest: Path) -> Path:
    if not name or "\x00" in name:
        raise UnsafeArchive(f"refused archive member with an empty or invalid name: {name!r}")
    norm = name.replace("\\", "/")
    pp = PurePosixPath(norm)
    if norm.startswith("/") or pp.is_absolute() or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchive(f"refused archive member with an absolute path: {name!r}")
    if any(part == ".." for part in pp.parts):
        raise UnsafeArchive(f"refused archive member that leaves the folder: {name!r}")
    target = (dest / Path(*[p for p in pp.parts if p not in ("", ".")])).resolve()
    if target != dest and dest not in target.parents:
        raise UnsafeArchive(f"refused archive member that leaves the folder: {name!r}")
    return target


#: What every archive entry (a file, a folder, a folder implied by a member's path) costs on disk at the
#: least, counted toward ``max_total_bytes``: an archive of empty folders fills inodes and blocks too.
ENTRY_BYTES = 4096
#: Zip compression methods Python reads (stored, deflate, bzip2, lzma); others (deflate64 = 9) are refused.
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def safe_extract(
    archive: str | Path, dest: str | Path, *, max_files: int = 1000, max_total_bytes: int = 64 * 2**30
) -> Path:
    """Extract a ``.zip``/``.tar``/``.tar.gz`` into ``dest`` refusing anything unsafe; returns ``dest``.

    Every member is checked before anything is written (absolute paths, ``..``, symlinks and hard
    links, devices/FIFOs, encrypted or unsupported zip compression, more than ``max_files`` entries,
    declared sizes over ``max_total_bytes``), and bytes are counted while writing so an archive that
    lies about its sizes is stopped too. Entries of every kind count: files, folders and the folders a
    member's path implies each count toward ``max_files`` and cost :data:`ENTRY_BYTES` of the byte
    budget, so an archive of 100,000 empty folders is refused like one of 100,000 files.

    The archive is extracted into a hidden sibling folder that is renamed to ``dest`` only when all went
    well; on a refusal, an unreadable archive or any interruption (even ``KeyboardInterrupt``) that
    folder is removed, so nothing half-extracted is left. ``dest`` must not exist or be empty. Every
    failure is an :class:`UnsafeArchive` whose message says what was wrong, never a traceback.
    """
    archive, dest = Path(archive), Path(dest)
    dest = dest.parent.resolve() / dest.name
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UnsafeArchive(f"cannot extract {archive.name}: {dest} already exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.extracting-{uuid.uuid4().hex[:8]}"
    name = archive.name.lower()
    try:
        work.mkdir()
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, work, max_files, max_total_bytes)
            elif name.endswith((".tar", ".tar.gz", ".tgz")) or tarfile.is_tarfile(archive):
                _extract_tar(archive, work, max_files, max_total_bytes)
            else:
                raise UnsafeArchive(f"{archive.name} is not a .zip, .tar or .tar.gz archive")
        except UnsafeArchive:
            raise
        except zlib.error as exc:
            raise UnsafeArchive(
                f"{archive.name} is corrupt: its compressed data does not decompress ({exc}); "
                "create the archive again and upload it once more"
            ) from None
        except OSError as exc:  # the message without the server's paths
            raise UnsafeArchive(
                f"{archive.name} could not be extracted: {exc.strerror or type(exc).__name__}"
            ) from None
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError, RuntimeError) as exc:
            raise UnsafeArchive(
                f"{archive.name} is not a readable archive ({type(exc).__name__}: {exc}); "
                "create it again with zip or tar and upload it once more"
            ) from None
        if dest.exists():
            dest.rmdir()  # empty, checked above
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest


def _count_entries(names: list[str], max_files: int, *, more: bool = False) -> int:
    """The number of paths the archive creates (its members and every folder their paths imply);
    refused over ``max_files``. ``more``: the listing was cut short, there are more members."""
    paths: set[tuple[str, ...]] = set()
    n_files = 0
    for n in names:
        parts = tuple(p for p in PurePosixPath(n.replace("\\", "/")).parts if p not in ("", ".", "/"))
        if not n.endswith("/"):
            n_files += 1
        for i in range(1, len(parts) + 1):
            paths.add(parts[:i])
    if more or len(paths) > max_files:
        or_more = " or more" if more else ""
        raise UnsafeArchive(
            f"archive has {len(paths)}{or_more} entries ({n_files} files, {len(paths) - n_files} folders"
            f"{or_more}); at most {max_files} files and folders together are accepted"
        )
    return len(paths)


def _copy_limited(src: IO[bytes], dst: Path, budget: list[int], limit: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as out:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            budget[0] += len(chunk)
            if budget[0] > limit:
                raise UnsafeArchive(f"archive expands to more than {limit} bytes; refused")
            out.write(chunk)


def _extract_zip(archive: Path, dest: Path, max_files: int, max_total: int) -> None:
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        entries = _count_entries([i.filename for i in infos], max_files)
        files = [i for i in infos if not i.is_dir()]
        if sum(i.file_size for i in files) + ENTRY_BYTES * entries > max_total:
            raise UnsafeArchive(f"archive expands to more than {max_total} bytes; refused")
        targets = []
        for i in infos:
            if i.flag_bits & 0x1:
                raise UnsafeArchive(
                    f"{archive.name} is encrypted ({i.filename!r} needs a password); "
                    "upload an archive made without a password"
                )
            if i.compress_type not in _ZIP_METHODS:
                kind = "deflate64" if i.compress_type == 9 else f"method {i.compress_type}"
                raise UnsafeArchive(
                    f"{archive.name} uses a compression Shrinkwise cannot read ({kind}, for "
                    f"{i.filename!r}); create it again with standard zip compression (deflate) or as .tar.gz"
                )
            mode = (i.external_attr >> 16) & 0xFFFF
            if mode and (
                stat.S_ISLNK(mode)
                or stat.S_ISCHR(mode)
                or stat.S_ISBLK(mode)
                or stat.S_ISFIFO(mode)
                or stat.S_ISSOCK(mode)
            ):
                raise UnsafeArchive(
                    f"refused archive member {i.filename!r}: links and device files are not accepted"
                )
            targets.append((i, _safe_member_path(i.filename, dest)))
        budget = [ENTRY_BYTES * entries]
        for i, target in targets:
            if i.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with z.open(i) as src:
                _copy_limited(src, target, budget, max_total)


def _extract_tar(archive: Path, dest: Path, max_files: int, max_total: int) -> None:
    with tarfile.open(archive, "r:*") as t:
        members = []
        for m in t:  # read the headers one by one: a count over the limit stops the listing early
            members.append(m)
            if len(members) > max_files:
                break
        for m in members:
            if m.issym() or m.islnk():
                raise UnsafeArchive(f"refused archive member {m.name!r}: links are not accepted")
            if not (m.isfile() or m.isdir()):
                raise UnsafeArchive(
                    f"refused archive member {m.name!r}: device files and FIFOs are not accepted"
                )
        entries = _count_entries(
            [m.name + ("/" if m.isdir() else "") for m in members], max_files, more=len(members) > max_files
        )
        files = [m for m in members if m.isfile()]
        if sum(m.size for m in files) + ENTRY_BYTES * entries > max_total:
            raise UnsafeArchive(f"archive expands to more than {max_total} bytes; refused")
        targets = [(m, _safe_member_path(m.name, dest)) for m in members]
        budget = [ENTRY_BYTES * entries]
        for m, target in targets:
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            src = t.extractfile(m)
            if src is None:
                raise UnsafeArchive(f"cannot read archive member {m.name!r}")
            with src:
                _copy_limited(src, target, budget, max_total)


def find_model_root(folder: str | Path) -> Path:
    """The folder holding ``config.json`` (or a single ``.gguf``) inside an extracted upload.

    Accepts the files at the top level or inside one wrapping folder (what archiving a folder gives).
    """
    folder = Path(folder)
    for cand in (
        [folder]
        + sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", ".")))[:1]
        if folder.is_dir()
        else []
    ):
        if (cand / "config.json").is_file():
            return cand
        ggufs = sorted(cand.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
    raise CheckpointError(
        f"no model found in {folder.name}: expected config.json (with *.safetensors and tokenizer files) "
        "or a single .gguf at the top level or inside one folder"
    )
