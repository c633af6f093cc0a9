"""scenes: why ascent on the forget set's segmentation labels collapses the model, by class.

The scenes studies forget the segmentation labels of every scene with a ball (partial mode).
Those label maps are mostly floor, wall and ceiling, which every other scene also teaches;
only the ball's pixels are knowledge the retrain lacks. This script measures, per segmentation
class, on the forget scenes and on ``val``:

- the share of the forget scenes' pixels each class covers;
- the IoU of the original, of the retrain (the ensemble's first member) and of each unlearned
  model, pooled over the set's pixels (``|pred ∩ label| / |pred ∪ label|`` per class);

for GradDiff and ``interference_aware`` at ascent rates across their default space (ratios of the
forget gradient's scale, the retain rate at the middle of its space) and for retain-only
fine-tuning, at the scenes study's step budget. Rates are given as ratios of the scale the
study measures on the original (``‖θ‖/‖g‖``, as the default spaces are written); ``--retain-ratio``
sets the retain rate's (default: the middle of its space). It also prints where the
``retain_probe`` scale lands (methods/_rate_scale.py), as a ratio of the retain gradient's.
What an honest deletion changes is the ball's row; what the unlearned models change is read
off the other rows.

    python benchmarks/scenes_forget_share.py [--samples 600] [--ratios 1e-5 1e-4 1e-3]
        [--retain-ratio 3e-4] [--steps 40] [--threads 2] [--cache DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.methods import METHODS
from tune_unlearn.methods._rate_scale import measure_rate_scales, probe_retain_rate
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.problems._scenes import OBJECT_CLASSES, SURFACES
from tune_unlearn.problems.forget import LabeledSet
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values

CLASSES = (*SURFACES, *OBJECT_CLASSES)
#: The kept tasks, whose damage the segmentation IoU cannot show, and the study's two objectives.
SCORE_COLUMNS = ("val depth", "val normals", "forget_efficacy", "retained_utility")
KEPT = ("depth", "normals")


@torch.no_grad()
def confusion(model: MultiTaskModel, study: LoadedStudy, labeled: LabeledSet) -> Tensor:
    """``[C, C]`` pixel counts (true class, predicted class) of the segmentation head."""
    data, classes = study.inputs.data, len(CLASSES)
    counts = torch.zeros(classes * classes, dtype=torch.long)
    model.eval()
    for rows, inputs in data.input_batches(labeled.indices.to(data.device), 64):
        predicted = model(inputs)["segmentation"].argmax(dim=1)
        truth = data.labels["segmentation"][rows].long()
        counts += torch.bincount((truth * classes + predicted).flatten().cpu(), minlength=classes**2)
    return counts.view(classes, classes)


def class_iou(counts: Tensor) -> list[float]:
    """Per class, pooled IoU; NaN for a class absent from both the labels and the predictions."""
    hits = counts.diag().double()
    union = counts.sum(dim=0).double() + counts.sum(dim=1).double() - hits
    return [float(h / u) if u > 0 else float("nan") for h, u in zip(hits, union, strict=True)]


def row(name: str, forget: Tensor, val: Tensor, scores: dict[str, float]) -> str:
    """One model: per-class IoU on the forget scenes and on ``val``, then ``scores`` (the kept
    tasks' ``val`` scores and, for an unlearned model, its efficacy and utility)."""
    cells = [f"{v:.2f}" for v in class_iou(forget)] + [f"{v:.2f}" for v in class_iou(val)]
    cells += [f"{scores[key]:.3f}" if key in scores else "" for key in SCORE_COLUMNS]
    return f"| {name} | " + " | ".join(cells) + " |"


def study_values(args: argparse.Namespace, cache: Path) -> LoadedStudy:
    params: dict[str, Any] = {"num_samples": args.samples}
    for key in ("image_size", "channels", "epochs"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    raw = {
        "name": "scenes_forget_share",
        "problem": {"name": "scenes", "params": params},
        "forget": {"mode": "partial", "target_tasks": ["segmentation"], "where": {"has_ball": 1}},
        # Its rates are shares of plain-step scales: sgd named, as the default space takes Adam.
        "method": {"name": "graddiff", "fixed": {"steps": args.steps, "batch_size": 16, "optimizer": "sgd"}},
        "references": {"cache_dir": str(cache), "retrain": {"seeds": 2}},
        "tracking": {"enabled": False},
        "collapse_guard": {"enabled": False},
    }
    return load_study_values(parse_study(raw))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--image-size", dest="image_size", type=int, default=None)
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--ratios", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3])
    # The default: the middle of the retain rate's default space (ratios 1e-5 to 1e-2, log).
    parser.add_argument("--retain-ratio", dest="retain_ratio", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="reference cache (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        study = study_values(args, args.cache or Path(scratch))
        inputs, references = study
        sets = inputs.sets
        forget, val = sets.forget, sets.val
        original, retrain = references.original_model(), references.retrain_models()[0]
        scales = measure_rate_scales(original, inputs.setup)
        probe = probe_retain_rate(original, inputs.setup, scales["retain_gradient"])
        base = {"original": confusion(original, study, forget), "retrain": confusion(retrain, study, forget)}
        pixels = base["original"].sum(dim=1).double()
        share = (pixels / pixels.sum()).tolist()
        print(
            f"scenes {args.samples} samples; forget set {len(forget)} scenes with a ball; {args.steps} steps;"
            f" retain rate {args.retain_ratio:g} × its scale"
        )
        print(f"retain_probe: {probe / scales['retain_gradient']:g} × the retain gradient's scale")
        print(
            "forget scenes' pixels: " + ", ".join(f"{c} {s:.3f}" for c, s in zip(CLASSES, share, strict=True))
        )
        header = " | ".join(f"forget {c}" for c in CLASSES) + " | " + " | ".join(f"val {c}" for c in CLASSES)
        print(f"\n| model | {header} | " + " | ".join(SCORE_COLUMNS) + " |")
        print("|" + " --- |" * (2 * len(CLASSES) + 1 + len(SCORE_COLUMNS)))
        for kind, model in (("original", original), ("retrain", retrain)):
            kept = {f"val {task}": references.scores[f"score/{kind}/val/{task}"] for task in KEPT}
            print(row(kind, base[kind], confusion(model, study, val), kept))
        retain_lr = args.retain_ratio * scales["retain_gradient"]
        runs: list[tuple[str, dict[str, float]]] = [("finetune", {"retain_lr": retain_lr})]
        for ratio in args.ratios:
            ascent_lr = ratio * scales["forget_gradient"]
            runs += [
                (f"graddiff {ratio:g}", {"ascent_lr": ascent_lr, "retain_lr": retain_lr}),
                (f"interference_aware {ratio:g}", {"ascent_lr": ascent_lr, "retain_lr": retain_lr}),
            ]
        for name, configuration in runs:
            method_inputs = dataclasses.replace(inputs, method_class=METHODS.get(name.split()[0]))
            result = configuration_run.run(method_inputs, references, configuration, seed=0)
            metrics = result.metrics
            scores = {f"val {task}": metrics[f"score/unlearned/val/{task}"] for task in KEPT}
            scores |= {key: metrics[key] for key in ("forget_efficacy", "retained_utility")}
            forget_counts, val_counts = (
                confusion(result.model, study, forget),
                confusion(result.model, study, val),
            )
            print(row(name, forget_counts, val_counts, scores), flush=True)


if __name__ == "__main__":
    main()
