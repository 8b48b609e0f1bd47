"""Per-epoch trace of a VA run: what docs/valence-arousal.md's "Why xattn and tcn stayed flat"
table shows (prints figures, asserts nothing).

Trains one ``fuse`` run of ``head.tasks = ["expr", "va"]`` (``train.select_task = va`` unless
``--select``) with the fuse defaults otherwise, instrumenting it from outside (the training code
is wrapped, not changed), and prints one JSON line per epoch:

* ``va_loss`` and ``expr_loss``: the mean VA and expression losses of the epoch's batches;
* ``train_pred_std`` / ``tgt_std``: the std of the VA predictions and targets in those batches;
* ``z_abs`` and ``z_sat``: the mean |pre-tanh output| of the VA layer in training, and the share
  of it beyond 2 (where ``tanh'`` < 0.07);
* ``g_va_layer``, ``g_trunk_from_va``, ``g_trunk_from_expr``: gradient norms before clipping, of
  the VA layer and of the trunk (every parameter but the expression, AU and VA layers) on VA
  batches, and of the trunk on expression batches;
* ``dev_ccc``, ``dev_v``, ``dev_a``, ``dev_pred_std``, ``dev_pred_mean``: the selection pass's VA
  CCCs and the std and mean of its VA predictions.

``--steps`` also prints each VA batch's CCC, mean and std per dimension. Run, on a demo store::

    PYTHONPATH=. .venv/bin/python tests/bench/bench_va_trace.py --method tcn \\
        --store D/features.zarr --manifests D/manifests --out /tmp/trace [--set loss.va_loss=ccc]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import pipeline.fusion.tasks as tasks
import pipeline.fusion.training_run as training_run
from pipeline.data.manifest import SPLITS, load_clips
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.train import train
from pipeline.training.step import Stepper

HEAD_LAYERS = ("va_layer", "classify", "au_layer")  # not the trunk


def ccc_per_dimension(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mx, my = x.mean(0), y.mean(0)
    cov = ((x - mx) * (y - my)).mean(0)
    return 2 * cov / (x.var(0, unbiased=False) + y.var(0, unbiased=False) + (mx - my) ** 2)


class Trace:
    """Wraps the loop's VA loss, batch loss, optimiser step, VA evaluator and epoch log."""

    def __init__(self, steps: bool) -> None:
        self.steps = steps
        self.stats: dict[str, list] = {}
        self.head = self.tags = None
        self.dev: list[np.ndarray] = []
        self.clear()

    def clear(self) -> None:
        self.stats = {k: [] for k in ("va_loss", "expr_loss", "train_std", "tgt_std", "z_abs",
                                      "z_sat", "g_va", "g_trunk")}

    def install(self) -> None:
        va_loss, batch_loss = tasks.va_batch_loss, training_run.batch_loss
        step, add, end = Stepper.step, tasks.VAEvaluator.add, training_run.EpochLog.end_epoch

        def traced_va_loss(values, targets, *args, **kwargs):
            loss = va_loss(values, targets, *args, **kwargs)
            v = values.reshape(-1, 2).detach().float()
            t = targets.reshape(-1, 2).to(v.device).float()
            keep = (t != -5).all(1)
            self.stats["va_loss"].append(float(loss.detach()))
            self.stats["train_std"].append(v[keep].std(0).tolist())
            self.stats["tgt_std"].append(t[keep].std(0).tolist())
            if self.steps:
                print("  VA batch: ccc", np.round(ccc_per_dimension(v[keep], t[keep]).tolist(), 3),
                      "mean", np.round(v[keep].mean(0).tolist(), 3),
                      "std", np.round(v[keep].std(0).tolist(), 3), flush=True)
            return loss

        def traced_batch_loss(head, table, chunk, tags, *args, **kwargs):
            if self.head is not head:
                self.head = head
                head.va_layer.register_forward_hook(self.pre_tanh)
                expr_loss = head.loss

                def traced_expr_loss(*a, **k):
                    value = expr_loss(*a, **k)
                    self.stats["expr_loss"].append(float(value.detach()))
                    return value
                head.loss = traced_expr_loss
            self.tags = tags
            return batch_loss(head, table, chunk, tags, *args, **kwargs)

        def traced_step(stepper):
            if self.head is not None and self.tags is not None:
                task = ("va" if (self.tags == tasks.VA).all() else
                        "expr" if (self.tags == tasks.EXPR).all() else "mixed")
                named = dict(self.head.named_parameters())
                self.stats["g_va"].append((task, grad_norm(
                    p for n, p in named.items() if n.startswith("va_layer"))))
                self.stats["g_trunk"].append((task, grad_norm(
                    p for n, p in named.items() if not n.startswith(HEAD_LAYERS))))
            return step(stepper)

        def traced_add(evaluator, values, labels):
            self.dev.append(values[(labels != -5).all(1)])
            return add(evaluator, values, labels)

        def traced_end(log, record, optimizer):
            print(json.dumps(self.epoch_row(record)), flush=True)
            return end(log, record, optimizer)

        tasks.va_batch_loss, training_run.batch_loss = traced_va_loss, traced_batch_loss
        Stepper.step, tasks.VAEvaluator.add = traced_step, traced_add
        training_run.EpochLog.end_epoch = traced_end

    def pre_tanh(self, module, inputs, output) -> None:
        if module.training:
            z = output.detach().abs()
            self.stats["z_abs"].append(float(z.mean()))
            self.stats["z_sat"].append(float((z > 2).float().mean()))

    def epoch_row(self, record: dict) -> dict:
        s = self.stats
        pred = np.concatenate(self.dev) if self.dev else np.zeros((0, 2))
        self.dev = []

        def mean(values):
            return float(np.mean(values)) if len(values) else None

        va = record.get("val_va") or {}
        row = {
            "epoch": record["epoch"], "va_batches": len(s["va_loss"]),
            "va_loss": mean(s["va_loss"]), "expr_loss": mean(s["expr_loss"]),
            "train_pred_std": np.mean(s["train_std"], axis=0).round(4).tolist()
            if s["train_std"] else None,
            "tgt_std": np.mean(s["tgt_std"], axis=0).round(3).tolist() if s["tgt_std"] else None,
            "z_abs": mean(s["z_abs"]), "z_sat": mean(s["z_sat"]),
            "g_va_layer": mean([g for task, g in s["g_va"] if task == "va"]),
            "g_trunk_from_va": mean([g for task, g in s["g_trunk"] if task == "va"]),
            "g_trunk_from_expr": mean([g for task, g in s["g_trunk"] if task == "expr"]),
            "dev_ccc": va.get("mean_ccc"), "dev_v": va.get("ccc_valence"),
            "dev_a": va.get("ccc_arousal"),
            "dev_pred_std": pred.std(0).round(4).tolist() if len(pred) else None,
            "dev_pred_mean": pred.mean(0).round(3).tolist() if len(pred) else None,
        }
        self.clear()
        return row


def grad_norm(parameters) -> float:
    squares = [p.grad.detach().float().norm() ** 2 for p in parameters if p.grad is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--select", default="va", help="train.select_task")
    parser.add_argument("--set", action="append", default=[], help="extra fuse key=value")
    parser.add_argument("--steps", action="store_true", help="print every VA batch too")
    args = parser.parse_args()
    Trace(args.steps).install()
    sets = ['head.tasks=["expr","va"]', f"train.select_task={args.select}", *args.set]
    config = build_config(args.method, args.store, args.manifests, sets=sets)
    clips = load_clips(args.manifests, SPLITS, au_only=True)
    result = train(config, args.out / args.method, clips, FeatureStore(args.store), restart=True)
    print(json.dumps({"method": args.method, "best_epoch": result.best_epoch,
                      "epochs": result.epochs_run, "val_va": result.val_va}))


if __name__ == "__main__":
    main()
