"""Framework overhead: one finetune variant through ``kedro run`` against a minimal hand-written loop.

The same fine-tuning both ways: a resnet18 trained from scratch (the ``scratch`` variant: no source
model) to classify sex on the finetune split, with the same subjects in training and validation, epochs,
batch size, optimizer, learning-rate schedule and seed, on the same machine, one after the other.

- ``kedro run --env benchmark --nodes finetune.scratch.record_run,finetune.scratch.train``: Kedro,
  Lightning and ``tlkedro.tl`` (catalog, hooks, the data module reading float16 memory-mapped rows,
  per-epoch reseeding, metrics, logging, progress bar, early stopping, ``last.ckpt`` and ``best.ckpt``
  every epoch). Its epochs end when ``last.ckpt`` is written, so the benchmark takes the epochs' end
  times from that file's modification times, polled every 20 ms while the command runs, together with
  the process's CPU time at that moment (from ``/proc``).
- A fresh interpreter running ``hand_loop``: the images loaded into one float32 tensor, a random
  permutation per epoch, forward, loss, backward and step per batch, a validation pass, the scheduler.

Steady state: the median epoch after the first (training, validation and what the framework does per
epoch), in wall time and in CPU time, and their ratios; the overhead is a ratio minus one. CPU time
depends much less on other processes sharing the cores than wall time does, in particular with one
thread (``--threads 1``: an OpenMP thread waiting for a busy core spins, which counts as CPU time).
Start-up is reported apart: from starting the command to the end of its first epoch, minus one steady
epoch. Also printed: each process's wall time and the training throughput (images per second over the
training batches; Kedro's from ``training_summary.json``, which excludes validation as the hand loop's
does). The machine's load average is printed before each run.

Usage::

    KEDRO_DISABLE_TELEMETRY=true .venv/bin/python benchmarks/framework_overhead.py --epochs 6 --repeats 2
"""

# ruff: noqa: T201  (a benchmark reports on stdout)
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from parallel_runner import ENV, finish, kedro, kedro_process, make_project

VARIANT = "scratch"
NAMESPACE = f"finetune.{VARIANT}"


def hand_loop(project: Path, result_path: Path) -> None:
    """Train as the variant's resolved configuration says, with plain PyTorch; write the epochs' end times."""
    start = time.perf_counter()
    import numpy as np
    import pandas as pd
    import torch

    from tlkedro.tl.architectures import create_architecture
    from tlkedro.tl.data import subject_split
    from tlkedro.tl.labels import target_values

    config = json.loads(
        (project / "data/07_model_output/finetune" / VARIANT / "config.json").read_text()
    )["config"]
    trainer, optimizer_config = config["trainer"], config["optimizer"]
    images = np.load(project / "data/05_model_input/finetune/images.npy")
    labels = pd.read_parquet(project / "data/05_model_input/finetune/labels.parquet")
    targets = target_values(labels, config["target"], config["task"])
    seed = config["seed"]
    train, val = subject_split(
        labels["subject_id"], config["data"]["val_fraction"], seed, targets=targets
    )

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)  # as Lightning's deterministic mode on the CPU
    x = torch.from_numpy(images.astype(np.float32))
    y = torch.from_numpy(targets)
    model = create_architecture(
        config["architecture"]["name"],
        in_channels=images.shape[1],
        img_size=list(images.shape[2:]),
        num_outputs=int(targets.max()) + 1,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=optimizer_config["lr"], weight_decay=optimizer_config["weight_decay"]
    )
    epochs, batch_size = trainer["max_epochs"], trainer["batch_size"]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    epoch_ends, epoch_cpu, train_seconds, train_images = [], [], 0.0, 0
    for _ in range(epochs):
        model.train()
        epoch_start = time.perf_counter()
        order = torch.from_numpy(train)[torch.randperm(len(train), generator=generator)]
        if len(order) % batch_size == 1:
            order = order[:-1]  # BatchNorm cannot train on one image, as in the data module
        for batch in order.split(batch_size):
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
            train_images += len(batch)
        train_seconds += time.perf_counter() - epoch_start
        model.eval()
        with torch.no_grad():
            for batch in torch.from_numpy(val).split(batch_size):
                loss_fn(model(x[batch]), y[batch])
        scheduler.step()
        epoch_ends.append(time.perf_counter() - start)
        epoch_cpu.append(time.process_time())
    result_path.write_text(
        json.dumps(
            {
                "epoch_ends": epoch_ends,
                "epoch_cpu": epoch_cpu,
                "train_images_per_second": train_images / train_seconds,
                "wall": time.perf_counter() - start,
            }
        )
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EpochClock:
    """Polls, from a thread, a file rewritten at the end of every epoch: its modification times, and
    the CPU time of the process writing it when each was seen."""

    def __init__(self, path: Path, pid: int, interval: float = 0.02) -> None:
        self.path, self.pid, self.interval = path, pid, interval
        self.times: list[float] = []
        self.cpu: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> EpochClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                mtime = self.path.stat().st_mtime
                cpu = cpu_seconds(self.pid)
            except FileNotFoundError:  # no checkpoint yet, or already deleted; or the process ended
                mtime = None
            if mtime is not None and (not self.times or mtime != self.times[-1]):
                self.times.append(mtime)
                self.cpu.append(cpu)
            time.sleep(self.interval)


def through_kedro(project: Path, env: dict[str, str]) -> dict:
    last = project / "data/06_models/checkpoints" / NAMESPACE / "checkpoints" / "last.ckpt"
    nodes = f"{NAMESPACE}.record_run,{NAMESPACE}.train"
    started = time.time()
    process = kedro_process(project, "run", "--env", ENV, "--nodes", nodes, env=env)
    with EpochClock(last, process.pid) as clock:
        finish(process)
    wall = time.time() - started
    summary = json.loads(
        (project / "data/07_model_output/finetune" / VARIANT / "training_summary.json").read_text()
    )
    return {
        "epoch_ends": [mtime - started for mtime in clock.times],
        "epoch_cpu": clock.cpu,
        "train_images_per_second": summary["train_images_per_second"],
        "wall": wall,
    }


def by_hand(project: Path, env: dict[str, str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--hand-loop", str(project), result.name],
            check=True,
            env={**os.environ, **env},
        )
        wall = time.perf_counter() - started
        measured = json.loads(Path(result.name).read_text())
    # Measured from the interpreter's start: the imports count, as they do in the kedro command.
    offset = wall - measured["wall"]
    return {
        **measured,
        "epoch_ends": [end + offset for end in measured["epoch_ends"]],
        "wall": wall,
    }


def steady_epoch(ends: list[float]) -> float:
    """The median time between the ends of consecutive epochs: every epoch but the first."""
    return statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--subjects", type=int, default=48, help="synthetic cohort size")
    parser.add_argument("--slices", type=int, default=16, help="central axial slices per subject")
    parser.add_argument("--size", type=int, default=64, help="slice height and width")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of both (default: torch's)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating")
    parser.add_argument("--workdir", type=Path, help="keep the project here (default: a temp dir)")
    parser.add_argument("--hand-loop", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hand_loop:
        hand_loop(*args.hand_loop)
        return

    parameters = {
        "synthetic": {"n_subjects": args.subjects},
        "preprocessing": {
            "slices": {"selection": "k_central", "k": args.slices, "size": [args.size] * 2}
        },
        "finetune": {
            "trainer": {
                "max_epochs": args.epochs,
                "early_stopping_patience": args.epochs,
                "batch_size": args.batch_size,
            }
        },
    }
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    with tempfile.TemporaryDirectory(prefix="tlkedro-bench-") as temporary:
        project = make_project(args.workdir or Path(temporary), parameters)
        seconds, _ = kedro(project, "run", "--env", ENV, "--pipelines", "data")
        print(f"prepared the data in {seconds:.1f} s")
        runs: dict[str, list[dict]] = {"kedro": [], "hand": []}
        print(
            f"{'run':<6} {'load':>5} {'wall s':>7} {'to epoch 1 s':>13} {'epoch s':>8} "
            f"{'epoch CPU s':>12} {'img/s':>7}"
        )
        for repeat in range(args.repeats):
            # kedro first in the first repeat: the hand loop reads the configuration it resolves.
            for name in ("kedro", "hand") if repeat % 2 == 0 else ("hand", "kedro"):
                load = os.getloadavg()[0]
                run = through_kedro(project, env) if name == "kedro" else by_hand(project, env)
                if len(run["epoch_ends"]) != args.epochs:
                    raise SystemExit(
                        f"{name}: {len(run['epoch_ends'])} epoch ends, not {args.epochs}"
                    )
                run["epoch"], run["epoch_cpu"] = (
                    steady_epoch(run["epoch_ends"]),
                    steady_epoch(run["epoch_cpu"]),
                )
                runs[name].append(run)
                print(
                    f"{name:<6} {load:>5.2f} {run['wall']:>7.1f} {run['epoch_ends'][0]:>13.1f} "
                    f"{run['epoch']:>8.3f} {run['epoch_cpu']:>12.3f} "
                    f"{run['train_images_per_second']:>7.1f}"
                )

    def median(key: str) -> dict[str, float]:
        return {name: statistics.median(run[key] for run in rs) for name, rs in runs.items()}

    epoch, cpu, wall = median("epoch"), median("epoch_cpu"), median("wall")
    throughput = median("train_images_per_second")
    first = {
        name: statistics.median(run["epoch_ends"][0] for run in rs) for name, rs in runs.items()
    }
    print(
        f"\nresnet18 from scratch, {args.epochs} epochs of batch {args.batch_size}, "
        f"{args.subjects} subjects, {args.slices} slices/subject of {args.size}x{args.size}, "
        f"{args.threads or 'default'} threads; medians of {args.repeats} runs"
    )
    for label, values in (("steady epoch wall", epoch), ("steady epoch CPU", cpu)):
        print(
            f"{label}: kedro {values['kedro']:.3f} s, hand {values['hand']:.3f} s, "
            f"overhead {100 * (values['kedro'] / values['hand'] - 1):+.1f}%"
        )
    print(
        f"training throughput: kedro {throughput['kedro']:.1f} img/s, hand {throughput['hand']:.1f} "
        f"img/s, ratio {throughput['hand'] / throughput['kedro']:.3f}"
    )
    print(
        f"start-up (to the end of epoch 1, minus a steady epoch): kedro "
        f"{first['kedro'] - epoch['kedro']:.1f} s, hand {first['hand'] - epoch['hand']:.1f} s"
    )
    print(
        f"wall: kedro {wall['kedro']:.1f} s, hand {wall['hand']:.1f} s, "
        f"ratio {wall['kedro'] / wall['hand']:.2f}"
    )


if __name__ == "__main__":
    main()
