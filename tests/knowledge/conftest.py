"""Fixtures for the knowledge-base tests: an isolated data folder per test, small valid data files,
and a throwaway PostgreSQL server for the database tests."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from glob import glob
from pathlib import Path
from typing import Any

import pytest
import yaml

from knowledge import db
from knowledge.catalog import clear_cache
from knowledge.loader import DATA_DIR


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own SHRINKWISE_HOME and no database URL from the environment."""
    home = tmp_path / "home"
    monkeypatch.setenv(db.ENV_HOME, str(home))
    monkeypatch.delenv(db.ENV_URL, raising=False)
    clear_cache()
    yield home
    db.dispose_engines()
    clear_cache()


def _method_entry(id: str, **extra: Any) -> dict[str, Any]:
    """A valid method entry (as it would appear in a YAML file)."""
    data: dict[str, Any] = {
        "id": id,
        "name": id.replace("-", " ").title(),
        "family": "quantization",
        "phase": "post-training",
        "impact": "static",
        "grades": {
            "size_reduction": "high",
            "quality_drop": "minimal",
            "hardware_dependence": "medium",
            "backward_compatibility": "none",
        },
        "changes": ["weights"],
        "requirements": {"calibration_data": True, "gradients": False, "training_compute": "none"},
        "hardware": [{"target": "nvidia-gpu", "kernels": ["marlin"]}],
        "formats": [{"format": "safetensors-fp16", "engines": ["vllm"]}],
        "summary": f"{id}: a method used by the loader tests.",
        "mechanism": "A mechanism described in more than forty characters, as the schema asks.",
        "tradeoff": "A trade-off long enough to pass.",
        "citation": {
            "authors": "A. Author",
            "title": "A Title",
            "venue": "arXiv",
            "year": 2024,
            "arxiv": "2401.00001",
            "url": "https://arxiv.org/abs/2401.00001",
        },
    }
    data.update(extra)
    return data


def _evidence_entry(method: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "method": method,
        "model": "Tiny-1M",
        "setting": "4-bit",
        "metric": "perplexity",
        "dataset": "WikiText2",
        "value": 11.0,
        "baseline": 10.0,
        "baseline_label": "FP16",
        "source": {"paper": "Author 2024", "locator": "Table 1", "tag": "primary"},
    }
    data.update(extra)
    return data


@pytest.fixture
def method_entry():
    """Factory of valid method entries: ``method_entry("gptq", phase="inference")``."""
    return _method_entry


@pytest.fixture
def evidence_entry():
    """Factory of valid evidence entries: ``evidence_entry("gptq", value=12.0)``."""
    return _evidence_entry


class DataDir:
    """A throwaway knowledge/data folder: writes YAML files, holds the real hardware/formats files."""

    def __init__(self, root: Path):
        self.root = root
        (root / "methods").mkdir(parents=True)
        (root / "evidence").mkdir()
        shutil.copy(DATA_DIR / "hardware.yaml", root / "hardware.yaml")
        shutil.copy(DATA_DIR / "formats.yaml", root / "formats.yaml")

    def write(self, relpath: str, doc: Any) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        text = doc if isinstance(doc, str) else yaml.safe_dump(copy.deepcopy(doc), sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    def methods(self, name: str, *entries: dict[str, Any]) -> Path:
        return self.write(f"methods/{name}", {"methods": list(entries)})

    def evidence(self, name: str, *entries: dict[str, Any]) -> Path:
        return self.write(f"evidence/{name}", {"evidence": list(entries)})


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    """An empty data folder with the real hardware.yaml and formats.yaml."""
    return DataDir(tmp_path / "data")


@pytest.fixture
def small_data(data_dir: DataDir) -> DataDir:
    """A valid data folder: three methods in two files and two evidence rows."""
    data_dir.methods("a.yaml", _method_entry("alpha", composes_with=["gamma"]), _method_entry("beta"))
    data_dir.methods(
        "b.yaml",
        _method_entry(
            "gamma",
            phase="inference",
            impact="dynamic",
            family="token-pruning",
            changes=["tokens"],
            in_paper=True,
            grades={
                "size_reduction": "variable",
                "quality_drop": "minimal",
                "hardware_dependence": "medium",
                "backward_compatibility": "full",
            },
        ),
    )
    data_dir.evidence(
        "e.yaml",
        _evidence_entry("alpha"),
        _evidence_entry("gamma", metric="speedup", value=2.0, baseline=1.0, setting="prefill"),
    )
    return data_dir


# --- PostgreSQL -------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    candidates = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster in a temporary folder, reachable on a unix socket.

    Runs the server binaries as the ``postgres`` user when the tests run as root (PostgreSQL refuses
    to run as root). Skips only when no server binaries are installed
    (``apt-get install postgresql``, which scripts/install-system-deps.sh does).
    """
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb) found; install them with "
            "`apt-get install -y postgresql` (scripts/install-system-deps.sh does)"
        )
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="shrinkwise-pg-"))
    pgdata, sock = base / "data", base / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if as_root:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        os.chmod(base, 0o755)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    log = base / "server.log"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=120)

    r = run(
        str(bindir / "initdb"),
        "-D",
        str(pgdata),
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
        "-E",
        "UTF8",
        "--locale=C",
    )
    if r.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed: {r.stderr or r.stdout}")
    opts = f"-k {sock} -p {port} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    r = run(str(bindir / "pg_ctl"), "-D", str(pgdata), "-o", opts, "-l", str(log), "-w", "-t", "60", "start")
    if r.returncode != 0:
        detail = log.read_text() if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {r.stderr or r.stdout}\n{detail}")
    url = f"postgresql+psycopg://postgres@/postgres?host={sock}&port={port}"
    try:
        # wait until it accepts connections (pg_ctl -w already waits; this guards slow machines)
        import psycopg

        deadline = time.time() + 30
        while True:
            try:
                psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres").close()
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        db.dispose_engines()
        run(str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
