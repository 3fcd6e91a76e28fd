"""Estimated vs measured compression time of layer-wise methods on the demo model.

Checks the cost model of :mod:`compressors.methods.layerwise` (operation counts divided by the throughput
probe of :mod:`compressors.throughput`) against the ``compress`` stage of real runs through
:func:`compressors.run.compress_and_measure`, with the estimate given the run's own calibration size and
group size. Prints the probe's figures, one row per method, and the load average before and after each
run, since a time on a shared machine means little without it::

    .venv/bin/python benchmarks/estimate_accuracy.py --calib 4 --seq 256 rtn:bits=4,group_size=128 gptq:bits=4

A full default run (16×512 calibration, RTN and GPTQ) takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile


def parse_spec(spec: str) -> tuple[str, dict]:
    cid, _, rest = spec.partition(":")
    cfg: dict = {}
    for kv in filter(None, rest.split(",")):
        k, v = kv.split("=")
        cfg[k] = v == "true" if v in ("true", "false") else (int(v) if v.lstrip("-").isdigit() else float(v))
    return cid, cfg


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "specs", nargs="*", default=["rtn:bits=4,group_size=128", "gptq:bits=4,group_size=128"]
    )
    parser.add_argument("--calib", type=int, default=16, help="calibration windows")
    parser.add_argument("--seq", type=int, default=512, help="calibration window length")
    parser.add_argument("--refresh-probe", action="store_true", help="re-measure the throughput first")
    args = parser.parse_args()

    from compressors.base import get_compressor
    from compressors.methods.layerwise import layerwise_estimate
    from compressors.models import inspect_checkpoint
    from compressors.run import compress_and_measure
    from compressors.throughput import get_throughput

    tp = get_throughput(refresh=args.refresh_probe)
    print(f"throughput: {tp.describe()}")
    shape = inspect_checkpoint("demo").shape
    assert shape is not None
    print(
        "| method | config | calibration | estimate (s) | range (s) | measured compress (s) | load before | after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.specs:
        cid, cfg = parse_spec(spec)
        comp = get_compressor(cid)
        full = comp.config_cls.from_dict(cfg)
        group = getattr(full, "group_size", getattr(full, "beta1", -1))
        blocksize = getattr(full, "blocksize", 128)
        est = layerwise_estimate(shape, cid, args.calib, args.seq, group_size=group, blocksize=blocksize)
        before = load()
        with tempfile.TemporaryDirectory() as out:
            result = compress_and_measure(
                "demo",
                cid,
                cfg,
                out_dir=out,
                n_calib_samples=args.calib,
                calib_seq_len=args.seq,
                eval_windows=2,
                measure_before=False,
                measure_speed=False,
                export=False,
                archive=None,
            )
        low, high = est.seconds_range
        calib = f"{args.calib}×{args.seq}" if comp.needs_calibration else "-"
        print(
            f"| {cid} | {cfg} | {calib} | {est.seconds:.1f} | {low:.1f}-{high:.1f} | "
            f"{result.timings['compress']:.1f} | {before} | {load()} |",
            flush=True,
        )
        print(f"  stages: {est.note}", flush=True)


if __name__ == "__main__":
    main()
