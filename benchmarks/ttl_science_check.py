"""Science check: TruncatedTL at the SVCCA-suggested cut (``cut_at: auto``) against the two-stage cutoff
search, full fine-tuning and training from scratch, with BCa intervals and paired differences.

The cohort, source and fine-tuning of ``svcca_cutoff_check.py`` (synthetic cohort with the generator's
current defaults, 4 mm, central axial slice padded to 48x56; resnet18 pretrained from scratch on age, then
fine-tuned on sex), per seed:

- ``scratch`` (no source), ``full`` (every layer fine-tuned);
- stage 1 of the search: ``truncated`` at every stage boundary after the stem (``maxpool`` ... ``layer3``;
  ``layer4`` is ``full``); stage 2: the cut points around the stage with the best mean validation AUPRC
  (``truncation_candidates``), the selected cut point being the best of both stages;
- ``auto``: ``truncated`` at ``auto_cut_at(source, full model of the same seed, finetune images)``, the
  rule the ``truncated`` strategy's ``cut_at: auto`` applies (largest drop of SVCCA similarity).

Every model is evaluated on the same test subjects with ``tlkedro.tl.reports.evaluation_table`` (the
reporting pipeline's BCa intervals and paired bootstrap differences). A truncated model whose cut point and
seed equal another's is the same training run (same configuration and seed), so it is trained once.

    PYTHONPATH=src python benchmarks/ttl_science_check.py --out /tmp/ttl_check

Prints markdown tables; writes ``runs.csv``, ``evaluation.csv`` and ``profiles.csv`` into ``--out``.
"""

# ruff: noqa: T201  (a science check reports on stdout)

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from svcca_cutoff_check import _cohort, _config, _markdown  # noqa: E402  (the same cohort and training)

from tlkedro.tl.analysis.svcca import auto_cut_at  # noqa: E402
from tlkedro.tl.checkpoint import build_model  # noqa: E402
from tlkedro.tl.reports import evaluation_table  # noqa: E402
from tlkedro.tl.strategies.truncated import truncation_candidates  # noqa: E402
from tlkedro.tl.training import evaluate, fit  # noqa: E402

STAGE1 = ["maxpool", "layer1", "layer2", "layer3", "layer4"]  # layer4: the whole network, `full`


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subjects", type=int, nargs=3, default=(400, 200, 300))
    parser.add_argument("--seeds", type=int, nargs="+", default=(1, 2))
    parser.add_argument("--cohort-seed", type=int, default=2024)
    parser.add_argument("--epochs", type=int, nargs=2, default=(8, 5), help="pretrain, finetune")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    images, labels = _cohort(sum(args.subjects), args.cohort_seed)
    n_pre, n_fine, _ = args.subjects
    parts = {"pretrain": slice(0, n_pre), "finetune": slice(n_pre, n_pre + n_fine)}
    parts["test"] = slice(n_pre + n_fine, None)
    split = {name: (images[s], labels.iloc[s].reset_index(drop=True)) for name, s in parts.items()}
    print(f"cohort: {len(labels)} subjects in {time.time() - start:.0f} s", flush=True)
    pretrain = dict(target="age", task="regression", objective={"name": "mse"}, seed=0)
    source = fit(
        _config(args.epochs[0], **pretrain, data={"val_fraction": 0.15}), *split["pretrain"]
    ).checkpoint
    metrics, _ = evaluate(source, *split["test"], target="age", split="test")
    print(f"source: test MAE {metrics['test/mae']:.2f} years ({time.time() - start:.0f} s)")

    runs: dict[tuple[int, str], dict] = {}  # (seed, model) -> row with the predictions

    def train(seed: int, model: str, strategy: dict, with_source: bool = True) -> dict:
        if (seed, model) not in runs:
            config = _config(
                args.epochs[1],
                target="sex",
                task="classification",
                objective={"name": "cross_entropy"},
                strategy=strategy,
                seed=seed,
                optimizer={"lr": 3e-4},
            )
            result = fit(config, *split["finetune"], source=source if with_source else None)
            kept = result.history.loc[result.history["val/loss"].idxmin()]
            test, predictions = evaluate(
                result.checkpoint, *split["test"], target="sex", split="test"
            )
            runs[seed, model] = {
                "seed": seed,
                "model": model,
                "val_auprc": kept["val/auprc"],
                "test_auroc": test["test/auroc"],
                "checkpoint": result.checkpoint,
                "predictions": predictions,
            }
            print(
                f"seed {seed} {model}: val AUPRC {kept['val/auprc']:.3f}, test AUROC "
                f"{test['test/auroc']:.3f} ({time.time() - start:.0f} s)",
                flush=True,
            )
        return runs[seed, model]

    def truncated(seed: int, cut_at: str) -> dict:
        if cut_at == "layer4":
            return train(seed, "full", {"name": "full"})
        return train(seed, f"ttl_{cut_at}", {"name": "truncated", "kwargs": {"cut_at": cut_at}})

    profiles, auto = [], {}
    for seed in args.seeds:
        train(seed, "scratch", {"name": "scratch"}, with_source=False)
        for cut_at in STAGE1:
            truncated(seed, cut_at)
        full = build_model(runs[seed, "full"]["checkpoint"])
        auto[seed], profile = auto_cut_at(build_model(source), full, split["finetune"][0])
        profiles.append(profile.assign(seed=seed))
        print(f"seed {seed}: auto cut at {auto[seed]}", flush=True)
        truncated(seed, auto[seed])

    def mean_val(cut_at: str) -> float:
        model = "full" if cut_at == "layer4" else f"ttl_{cut_at}"
        return sum(runs[s, model]["val_auprc"] for s in args.seeds) / len(args.seeds)

    best_stage = max(STAGE1, key=mean_val)
    around = truncation_candidates("resnet18", best_stage)
    for seed in args.seeds:
        for cut_at in around:
            truncated(seed, cut_at)
    searched = max(dict.fromkeys(STAGE1 + around), key=mean_val)
    print(f"search: stage 1 {best_stage}, stage 2 over {around}: {searched}", flush=True)

    table = pd.DataFrame(
        [
            {k: v for k, v in r.items() if k not in ("checkpoint", "predictions")}
            for r in runs.values()
        ]
    )
    table.to_csv(args.out / "runs.csv", index=False)
    pd.concat(profiles).to_csv(args.out / "profiles.csv", index=False)
    chosen = {"search": searched}
    rows = []
    for seed in args.seeds:
        named = {
            "scratch": "scratch",
            "full": "full",
            f"auto ({auto[seed]})": "full" if auto[seed] == "layer4" else f"ttl_{auto[seed]}",
            f"search ({chosen['search']})": "full" if searched == "layer4" else f"ttl_{searched}",
        }
        predictions = {shown: runs[seed, model]["predictions"] for shown, model in named.items()}
        for reference in ("full", "scratch"):
            evaluated = evaluation_table(predictions, "classification", reference=reference)
            rows.append(evaluated.assign(seed=seed))
    evaluation = pd.concat(rows, ignore_index=True)
    evaluation.to_csv(args.out / "evaluation.csv", index=False)

    print("\n## SVCCA similarity of `full` to the source (finetune images), per seed\n")
    similarity = pd.concat(profiles).pivot(index="stage", columns="seed", values="similarity")
    print(_markdown(similarity.loc[list(dict.fromkeys(profiles[0]["stage"]))].round(3)))
    print("\n## Validation AUPRC and test AUROC of every run\n")
    print(
        _markdown(
            table.pivot(index="model", columns="seed", values=["val_auprc", "test_auroc"]).round(3)
        )
    )
    print("\n## Test AUROC with 95% BCa intervals and paired differences\n")
    shown = evaluation.assign(
        auroc=lambda t: t.apply(lambda r: f"{r.estimate:.3f} [{r.low:.3f}, {r.high:.3f}]", axis=1),
        difference=lambda t: t.apply(
            lambda r: f"{r.difference:+.3f} [{r.difference_low:+.3f}, {r.difference_high:+.3f}]",
            axis=1,
        ),
    )[["seed", "model", "n_subjects", "auroc", "reference", "difference", "verdict"]]
    print(_markdown(shown.set_index("seed")))
    print(f"\n{len(split['test'][1])} test subjects; total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
