"""
Runs per hour on this CPU: one run on every core against one run per core side by side.

    python -m tools.throughput --out runs/cpu/bench/throughput_128.json

Times the segmentation run's two costs, a training step of the reference UNet (batch 2 of
``side``-px patches) and the forward pass of one whole 512-px test image, in each execution
the scripts choose from (``medimg.execution.candidates``), laid out two ways:

- ``one run``: one process with every core's thread;
- ``side by side``: one process per core, one thread each, all timing at once.

Each figure is seconds per step (or per image) of the machine as a whole: the median over
``--rounds`` of a process's time per call, divided by the processes that ran at once
(which start each candidate together). The
layout with the lower figure makes more runs per hour. Writes the figures with the machine,
versions and date.
"""
import argparse
import copy
import datetime
import multiprocessing
import os
import shlex
import statistics
import sys

import torch

from medimg.cli import run_cli
from medimg.execution import candidates, time_steps
from medimg.machine import library_versions, machine_info
from medimg.registry import CPU_PATCH
from medimg.runfiles import write_json
from medimg.workloads import Workload


def _time(side: int, threads: int, rounds: int, start=None, results=None, image_side: int = 512) -> dict:
    """Median seconds per training step and per forward pass of one whole ``image_side``-px
    image of each candidate, with ``threads`` threads; processes side by side wait at the ``start`` barrier before each
    candidate, so that they time it at the same moment, and put their figures in ``results``."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _time_candidates(side, rounds, start, results, image_side)
    finally:
        torch.set_num_threads(before)  # in-process callers (the tests) keep their thread count


def _time_candidates(side, rounds, start, results, image_side):
    device, workload = torch.device("cpu"), Workload("unet", 2, side)
    make_step, model = workload.step_maker(), workload.build()
    image = torch.rand(1, 3, image_side, image_side)
    out = {}
    for name, execution in candidates(device).items():
        net = execution.prepare(copy.deepcopy(model)).eval()  # prepare converts in place: each its own copy

        def forward():
            with torch.no_grad(), execution.autocast():
                net(execution.to_input(image))
        if start is not None:
            start.wait()
        step, _ = time_steps(make_step(execution), device, warmup=1, repeats=rounds)
        image_seconds, _ = time_steps(forward, device, warmup=1, repeats=rounds)
        out[name] = {"step": step, "image": image_seconds}
    if results is not None:
        results.put(out)
    return out


def measure(side: int, rounds: int) -> dict:
    """Both layouts: per candidate, seconds per step and per image of the whole machine."""
    cores = os.cpu_count() or 1
    alone = _time(side, cores, rounds)
    context = multiprocessing.get_context("spawn")  # fresh processes: their own thread pools
    start, results = context.Barrier(cores), context.Queue()
    workers = [context.Process(target=_time, args=(side, 1, rounds, start, results)) for _ in range(cores)]
    for worker in workers:
        worker.start()
    together = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    layouts = {}
    for name in alone:
        layouts[name] = {
            "one run": alone[name],
            "side by side": {kind: statistics.median(p[name][kind] for p in together) / cores
                             for kind in ("step", "image")}}
    return {"processes_side_by_side": cores, "layouts": layouts}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=CPU_PATCH, help="the training patch's side in pixels "
                                                                   "(default: the cpu profile's, %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each, after one untimed")
    parser.add_argument("--out", default="throughput.json")
    args = parser.parse_args(argv)
    record = measure(args.side, args.rounds)
    for name, layout in record["layouts"].items():
        print(f"{name:<20} " + "   ".join(f"{where}: {t['step']:.3f} s/step, {t['image']:.3f} s/image"
                                          for where, t in layout.items()))
    write_json(args.out, {**record, "side": args.side, "rounds": args.rounds,
                          "command": shlex.join(["python", "-m", "tools.throughput", *(sys.argv[1:] if argv is None
                                                                                        else argv)]),
                          "machine": machine_info(), "versions": library_versions(),
                          "date": datetime.datetime.now().isoformat(timespec="seconds")})


if __name__ == "__main__":
    run_cli(main)
