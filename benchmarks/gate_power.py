"""Gate power: how often the release suite catches a planted fault, and how often it fails a
model that is an honest deletion.

For each request, the study's retrain ensemble (K seeds) is the reference, and per seed:

benign (the gate should pass them)
- ``heldout_retrain``: a retrain with a seed outside the ensemble: an exact deletion;
- ``mild_finetune``: that retrain after 10 Adam steps (lr 1e-4) on a retain sample.

planted faults (the gate should fail them)
- ``under_forgetting``: GradDiff with an ascent rate too small to forget (the forget-set score
  stays near the original's);
- ``over_forgetting``: gradient ascent past the retrains (random-instance request only, where
  the retrains still score the forget set well, so there is room below them);
- ``relearnable``: the original with the target head's logits for the forgotten class pushed
  down (class requests only): it scores like a retrain, and the knowledge is all still there;
- ``quantization_fragile`` (digits, class request): a GradDiff model with every weight clamped
  to within 0.49 of a 4-bit step of the original's 4-bit grid point (and to the original's
  largest magnitude, which keeps its value, so the per-tensor scale is the same), so that
  rounding the candidate to 4 bits gives back exactly the rounded original: forgetting that
  quantization undoes (the attack of Zhang et al., 2024, on unlearned LLMs);
- ``collateral_damage``: bounded ascent on the ``val`` neighbours of the forget instances
  (knowledge next to the forgotten data) with descent on the retain set. Meant as a masked
  collapse; on digits the damage spreads to the retain training samples too (and healing them
  heals the neighbours), so it is reported as what it is: collateral damage.

``under_forgetting`` is planted only where the original scores the forget set outside the
retrains' tolerance band: inside it, doing nothing is indistinguishable from honest deletion
and is no fault.

Each model is gated with the suite through the same code as ``gate`` (the Python API, to build
the references once). A model counts as caught when the verdict is not ``pass``; for
``masked_collapse`` the rate at which the verdict *names* masked collapse is reported too.

    python benchmarks/gate_power.py --problem digits --seeds 10 [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from tune_unlearn.config import parse_study
from tune_unlearn.experiment import Experiment
from tune_unlearn.forget import LabeledSet
from tune_unlearn.methods import DivergenceError
from tune_unlearn.methods._gradients import Batch, masked_task_losses
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.references import train_model
from tune_unlearn.validation import Candidate, ValidationContext, load_suite, validate

ROOT = Path(__file__).resolve().parents[1]

PROBLEMS: dict[str, dict[str, Any]] = {
    "digits": {
        "problem": {"name": "digits", "seed": 0},
        "class_request": {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 3}},
        "class_task": "digit",
        "class_value": 3,
        "random_request": {"mode": "full", "where": {"ink": 1}, "fraction": 0.3},
        "under_forgetting": {"ascent_lr": 1e-5, "retain_lr": 0.01},
        "over_forgetting": {"ascent_lr": 0.02, "retain_lr": 0.05, "steps": 200},
        "quantization_fragile": {"ascent_lr": 0.01, "retain_lr": 0.05},
    },
    "shapes": {
        "problem": {"name": "shapes", "params": {"num_samples": 8000, "epochs": 20}, "seed": 0},
        "class_request": {"mode": "partial", "target_tasks": ["shape"], "where": {"shape": 0}},
        "class_task": "shape",
        "class_value": 0,
        "random_request": {"mode": "full", "where": {"colour": 0}, "fraction": 0.3},
        # The CNN diverges under GradDiff at the digits rates: plain SGD needs smaller steps.
        "under_forgetting": {"ascent_lr": 1e-5, "retain_lr": 1e-3},
        "over_forgetting": {"ascent_lr": 3e-3, "retain_lr": 1e-3, "steps": 200},
    },
}


def study(problem: str, request: str, cache: Path, out: Path) -> dict[str, Any]:
    spec = PROBLEMS[problem]
    return {
        "name": f"power-{problem}-{request}",
        "problem": spec["problem"],
        "forget": spec[f"{request}_request"],
        "method": {"name": "graddiff", "fixed": {"steps": 60, "batch_size": 32}},
        "references": {"cache_dir": str(cache), "retrain": {"seeds": 5}},
        "output": str(out),
        "device": "cpu",
        "tracking": {"enabled": False},
    }


def finetuned(
    e: Experiment,
    model: MultiTaskModel,
    labeled: LabeledSet,
    steps: int,
    lr: float,
    seed: int,
    ascend: LabeledSet | None = None,
) -> MultiTaskModel:
    """``steps`` Adam steps of descent on batches of ``labeled`` (and ascent on ``ascend``)."""
    model = copy.deepcopy(model)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    tasks = e.problem.tasks

    def batch(source: LabeledSet) -> Batch:
        pick = torch.randint(len(source), (32,), generator=generator)
        rows = source.indices[pick]
        return Batch(e.data.inputs[rows], {k: v[rows] for k, v in e.data.labels.items()}, source.mask[pick])

    for _ in range(steps):
        b = batch(labeled)
        loss = masked_task_losses(model(b.inputs), b, tasks).sum()
        if ascend is not None:
            a = batch(ascend)
            # Bounded ascent (a hinge on the loss) damages the neighbours without diverging.
            loss = loss - masked_task_losses(model(a.inputs), a, tasks).clamp(max=3.0).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return model


def on_original_grid(model: MultiTaskModel, original: MultiTaskModel, bits: int) -> MultiTaskModel:
    """``model`` with each weight clamped to within 0.49 of a ``bits``-bit step of the
    original's grid point (the per-tensor symmetric grid of the quantization attack), so that
    quantizing it gives the quantized original."""
    levels = 2 ** (bits - 1) - 1
    out = copy.deepcopy(model)
    with torch.no_grad():
        for clamped, reference in zip(out.parameters(), original.parameters(), strict=True):
            largest = reference.abs().max()
            step = largest / levels
            grid = torch.round(reference / step) * step
            value = torch.minimum(torch.maximum(clamped, grid - 0.49 * step), grid + 0.49 * step)
            # the same per-tensor scale: nothing beyond the original's largest magnitude, which
            # its own element keeps
            value = value.clamp(-largest, largest).flatten()
            peak = reference.abs().flatten().argmax()
            value[peak] = reference.flatten()[peak]
            clamped.copy_(value.view_as(clamped))
    return out


def val_neighbours(e: Experiment, ctx: ValidationContext, k: int = 5) -> LabeledSet:
    val = e.splits["val"]
    distances = torch.cdist(ctx.features(e.request.indices), ctx.features(val))
    rows = val[distances.topk(k, dim=1, largest=False).indices.flatten().unique()]
    return LabeledSet(rows, torch.ones(len(rows), len(e.task_names), dtype=torch.bool))


def models(
    problem: str, request: str, e: Experiment, ctx: ValidationContext, seed: int
) -> dict[str, MultiTaskModel]:
    spec = PROBLEMS[problem]
    out: dict[str, MultiTaskModel] = {}
    heldout = train_model(e.problem, e.data, e.sets["retain"], seed=10_000 + seed, progress=False)
    out["heldout_retrain"] = heldout
    out["mild_finetune"] = finetuned(e, heldout, e.sets["retain"], 10, 1e-4, seed)
    original = ctx.original
    inside = e.measure(original)
    if not all(inside[f"nothing_to_forget/{t}"] for t in e.request.target_tasks):
        with contextlib.suppress(DivergenceError):  # a diverged model is no candidate
            out["under_forgetting"] = e.run(spec["under_forgetting"], seed=seed).model
    if request == "random":
        with contextlib.suppress(DivergenceError):
            out["over_forgetting"] = e.run(spec["over_forgetting"], seed=seed).model
    if request == "class":
        suppressed = copy.deepcopy(original)
        with torch.no_grad():
            suppressed.heads[spec["class_task"]].bias[spec["class_value"]] -= 16.0 + seed
        out["relearnable"] = suppressed
        if "quantization_fragile" in spec:
            with contextlib.suppress(DivergenceError):
                unlearned = e.run(spec["quantization_fragile"], seed=seed).model
                out["quantization_fragile"] = on_original_grid(unlearned, original, bits=4)
    out["collateral_damage"] = finetuned(
        e, original, e.sets["retain"], 20, 1e-3, seed, ascend=val_neighbours(e, ctx)
    )
    return out


BENIGN = ("heldout_retrain", "mild_finetune")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="digits")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed … seeds − 1 (to finish a run in parts)"
    )
    parser.add_argument("--requests", nargs="+", choices=("class", "random"), default=["class", "random"])
    parser.add_argument("--suite", type=Path, default=ROOT / "validators" / "release.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cache", type=Path, default=None, help="reference cache (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--probe-rule", choices=("upper_bound", "estimate"), help="override the suite's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    if args.probe_rule:
        suite = suite.model_copy(update={"probe_rule": args.probe_rule})
    tmp = Path(tempfile.mkdtemp())
    cache = args.cache or tmp / "cache"
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for request in args.requests:
        e = Experiment(parse_study(study(args.problem, request, cache, tmp / request)), progress=False)
        ctx = ValidationContext(e)
        for seed in range(args.first_seed, args.seeds):
            for kind, model in models(args.problem, request, e, ctx, seed).items():
                report = validate(ctx, Candidate(model, f"{kind} seed {seed}"), suite)
                failed = [r.name for r in report.results if r.status in ("fail", "error")]
                # Attack verdicts without the retrains' seed band, to report both rules from one run.
                unbanded = [
                    r.name
                    for r in report.results
                    if r.name.startswith("attack/")
                    and r.status == "pass"
                    and (r.value or 0.0) > (r.threshold or 0.0)
                ]
                rows.append(
                    {
                        "request": request,
                        "kind": kind,
                        "seed": seed,
                        "verdict": report.verdict,
                        "failed": failed,
                        "failed_without_attack_band": failed + unbanded,
                    }
                )
                print(
                    f"{request:6} {kind:16} seed {seed}: {report.verdict:15} {', '.join(failed)}", flush=True
                )
    print(
        f"\n{args.problem}: {len(rows)} models gated in {time.perf_counter() - started:.0f} s with "
        f"{args.suite.name} (probe_rule {suite.probe_rule})"
    )
    print("| request | model | kind | n | rate | checks that fired (count) |")
    print("|---|---|---|---|---|---|")
    for request in args.requests:
        for kind in dict.fromkeys(r["kind"] for r in rows if r["request"] == request):
            group = [r for r in rows if r["request"] == request and r["kind"] == kind]
            benign = kind in BENIGN
            flagged = sum(r["verdict"] != "pass" for r in group)
            rate = flagged / len(group)
            label = "false alarms" if benign else "detected"
            fired = Counter(name for r in group for name in r["failed"])
            extra = ""
            if kind == "quantization_fragile":
                caught = sum("attack/quantization_4bit" in r["failed"] for r in group)
                extra = f"; the 4-bit quantization check fired {caught}/{len(group)}"
            if kind == "collateral_damage":
                named = sum(r["verdict"] == "masked collapse" for r in group)
                extra = f"; named masked collapse {named}/{len(group)}"
            checks = ", ".join(f"{n} ({c})" for n, c in fired.most_common())
            unbanded = sum(bool(r["failed_without_attack_band"]) for r in group)
            extra += f"; without the attack seed band {unbanded}/{len(group)}"
            share = f"{flagged}/{len(group)} = {rate:.0%}{extra}"
            print(f"| {request} | {kind} | {label} | {len(group)} | {share} | {checks} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
