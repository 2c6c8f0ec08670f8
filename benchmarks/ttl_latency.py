"""CPU inference latency of the trained finetune variants of a project, timed side by side.

The reports' ``cpu_latency_ms`` is measured once per variant, right after its training, so on a shared
machine each figure carries the load of its own moment. This script times one trained model per group
(the variants of a group differ only by seed, so their networks are the same size) in interleaved
rounds, so that every model sees the same load, and prints each group's median latency and its speed-up
over a reference group as a markdown table (the latency figures of docs/science_ttl.md).

Usage (``PROJECT`` is the folder ``kedro run`` ran in, holding ``data/``)::

    .venv/bin/python benchmarks/ttl_latency.py PROJECT --reference full --rounds 40 --threads 1
"""

# ruff: noqa: T201  (a benchmark reports on stdout)
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from kedro.io.core import Version

from tlkedro.datasets import TorchCheckpointDataset
from tlkedro.tl.analysis.complexity import count_parameters, cpu_latency_ms, macs_per_image
from tlkedro.tl.architectures import TLModel
from tlkedro.tl.checkpoint import build_model


def one_model_per_group(project: Path) -> dict[str, TLModel]:
    """The latest trained model of the first finished variant (by name) of each finetune group."""
    models: dict[str, TLModel] = {}
    for metrics_path in sorted((project / "data/07_model_output/finetune").glob("*/metrics.json")):
        variant = metrics_path.parent.name
        group = json.loads(metrics_path.read_text())["group"]
        if group not in models:
            checkpoint = TorchCheckpointDataset(
                filepath=str(project / "data/06_models/finetune" / variant / "model.pt"),
                version=Version(None, None),
            ).load()
            models[group] = build_model(checkpoint)
    return models


def interleaved_latency(
    models: dict[str, TLModel], rounds: int, repeats: int, batch_size: int
) -> dict[str, float]:
    """Median over ``rounds`` of each model's median latency (ms), the models taking turns every round."""
    times: dict[str, list[float]] = {group: [] for group in models}
    for _ in range(rounds):
        for group, model in models.items():
            shape = tuple(model.example_input().shape[1:])
            times[group].append(
                cpu_latency_ms(model, shape, batch_size=batch_size, warmup=1, repeats=repeats)
            )
    return {group: statistics.median(values) for group, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="the folder kedro ran in (holding data/)")
    parser.add_argument("--reference", default="full", help="the group speed-ups are relative to")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per model and round")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    models = one_model_per_group(args.project)
    latency = interleaved_latency(models, args.rounds, args.repeats, args.batch_size)
    reference = latency[args.reference]
    print(
        f"batch {args.batch_size}, {args.threads} thread(s), median of {args.rounds} interleaved rounds "
        f"of {args.repeats} passes\n"
    )
    print(
        "| group | params | MACs per image | CPU latency (ms) | speed-up over "
        + args.reference
        + " |"
    )
    print("|---|---|---|---|---|")
    for group, model in sorted(models.items(), key=lambda item: latency[item[0]]):
        params, _ = count_parameters(model)
        macs = macs_per_image(model, tuple(model.example_input().shape[1:]))
        print(
            f"| {group} | {params:,} | {macs / 1e6:.1f} M | {latency[group]:.2f} | "
            f"{reference / latency[group]:.2f}x |"
        )


if __name__ == "__main__":
    main()
