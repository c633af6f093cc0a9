"""Gate power: how often the release suite catches a planted fault, and how often it fails a
model that is an honest deletion.

For each request, the study's retrain ensemble (K seeds) is the reference, and per seed:

benign (the gate should pass them)
- ``heldout_retrain``: a retrain with a seed outside the ensemble: an exact deletion;
- ``mild_finetune``: that retrain after 10 Adam steps on retain samples (digits: lr 1e-4;
  shapes: 1e-5, as 1e-4 damages the annealed CNN on `val`). Benign by measurement, not only by
  intent: every model's loss on all of ``val`` (``val_damage``) is reported beside its verdict.

planted faults (the gate should fail them)
- ``under_forgetting``: an unlearning run too weak to forget, so the forget-set score stays near
  the original's (digits: GradDiff at ascent rate 1e-5; shapes: ten mild Adam retain steps
  from the original, since GradDiff collapses the CNN);
- ``over_forgetting``: ascent past the retrains (random-instance request only, where the
  retrains still score the forget set well, so there is room below them; digits: 200 GradDiff
  steps; shapes: 30 Adam steps of bounded ascent on the forget set with retain descent);
- ``relearnable``: the original with the target head's logits for the forgotten class pushed
  down (class requests only): it scores like a retrain, and the knowledge is all still there;
- ``quantization_fragile`` (digits, class request): a GradDiff model with every weight clamped
  to within 0.49 of a 4-bit step of the original's 4-bit grid point (and to the original's
  largest magnitude, which keeps its value, so the per-tensor scale is the same), so that
  rounding the candidate to 4 bits gives back exactly the rounded original: forgetting that
  quantization undoes (the attack of Zhang et al., 2024, on unlearned LLMs);
- ``collateral_damage``: the held-out retrain (an exact deletion, so that this damage is the
  only fault) after 20 Adam steps of bounded ascent on the ``val`` neighbours of the forget
  instances (knowledge next to the forgotten data) with descent on the retain set. Meant as a
  masked collapse; on digits the damage spreads to the retain training samples too (and healing
  them heals the neighbours), so it is reported as what it is: collateral damage;
- ``masked_collapse``: that collateral-damage model behind a memory of the retain *training*
  inputs (``tune_unlearn.plants.RetainMemorised``): on an input it was trained on
  it answers what the held-out retrain answered, anywhere else what the damaged model
  answers. The static retain set (training samples) then looks untouched while the held-out
  neighbours carry the damage, the defining condition of masked collapse. It is a constructed
  model: the digits MLP generalises from its retain set to the neighbours too well for any
  unlearning run tried on it to damage one and not the other (RESULTS.md lists the attempts),
  while a large network that memorises its training set does exactly that.

Each damaging plant's truth is measured where the gate never looks: its accuracy loss beyond
the retrains on the ``val`` neighbours of the forget instances (``planted_damage``; the probes
draw from ``holdout``). A plant with at least 0.10 (twice the suite's 0.05) is a fault by
construction; below that the damage is within reach of the threshold, and the table reports it
apart.

``under_forgetting`` is planted only where the original scores the forget set outside the
retrains' tolerance band: inside it, doing nothing is indistinguishable from honest deletion
and is no fault.

naturally damaged models (``natural``: the gate should fail the damaged ones)
- ``natural_<method>``: a shipped method (GradDiff, interference-aware, NPO, SCRUB) at an
  aggressive setting drawn per seed: its rates in the units of its default space (relative to
  the gradient scale measured on the original, as a study resolves them) from the top of that
  space to 30× past it (``--natural-span LOW HIGH``, in multiples of that top: ``0.1 3`` draws
  milder settings, around the top), 100 steps, ``max_step`` from 0.01 to 0.1. Nothing is
  planted: the truth
  is measured against the gold ensemble where the gate never looks, as the worst task's
  accuracy loss on the ``val`` neighbours of the forget instances (``planted_damage``) and on a
  sample of the retain training set (``static_damage``, what the static retain probe sees). A
  model is *damaged* at neighbour damage ≥ 0.10, and a *masked* case when it is damaged while
  its static damage is below the suite's 0.05: the table gives detection on the damaged and the
  rate at which the verdict names masked collapse on the masked ones.

Reference modes (``--references``, one or more; every model is built once and judged in each):

- ``ensemble`` (gold): K = 5 retrains of this request, 5 retrains per request;
- ``bank``: K = 5 members trained once on the train set less this request *and* nine companion
  requests (a stream of 10: each companion a disjoint seeded random 1% of the train instances
  outside the request, same mode and tasks), so 0.5 retrain per request. The truth of every
  model (its planted damage, its val damage) is measured against the gold ensemble, and the
  table gives each mode's agreement with the gold verdicts.

Each model is gated with the suite through the same code as ``gate`` (the Python API, to build
the references once). A model counts as caught when the verdict is not ``pass``; for
``masked_collapse`` the rate at which the verdict *names* masked collapse is reported too.

    python benchmarks/gate_power.py --problem digits --seeds 10 [--references ensemble bank]
        [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.methods import METHODS, DivergenceError, measure_rate_scales
from tune_unlearn.plants import RetainMemorised, finetuned, val_neighbours
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.problems.forget import LabeledSet
from tune_unlearn.references.training import train_model
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values
from tune_unlearn.validation import Candidate, ValidationContext, load_suite, validate

ROOT = Path(__file__).resolve().parents[1]

PROBLEMS: dict[str, dict[str, Any]] = {
    "digits": {
        "problem": {"name": "digits", "seed": 0},
        "class_request": {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 3}},
        # the relearnable plant: (head, its output layer or "" for the head itself, class index)
        "suppress": ("digit", "", 3),
        "random_request": {"mode": "full", "where": {"ink": 1}, "fraction": 0.3},
        "under_forgetting": {"ascent_lr": 1e-5, "retain_lr": 0.01},
        "over_forgetting": {"ascent_lr": 0.02, "retain_lr": 0.05, "steps": 200},
        "quantization_fragile": {"ascent_lr": 0.01, "retain_lr": 0.05},
        "mild_finetune": {"steps": 10, "lr": 1e-4},
    },
    "shapes": {
        "problem": {"name": "shapes", "params": {"num_samples": 8000, "epochs": 30}, "seed": 0},
        "class_request": {"mode": "partial", "target_tasks": ["shape"], "where": {"shape": 0}},
        "suppress": ("shape", "", 0),
        "random_request": {"mode": "full", "where": {"colour": 0}, "fraction": 0.3},
        # GradDiff (plain SGD) on the CNN collapses at any retain rate that moves it and diverges
        # at any ascent rate that over-forgets (RESULTS.md), so both plants are Adam runs: too
        # little (ten mild retain steps from the original), and too much (bounded ascent on the
        # forget set, with retain descent).
        "under_forgetting": {"steps": 10, "lr": 1e-4},
        "over_forgetting": {"steps": 30, "lr": 1e-3, "ascend_forget": True},
        # Adam's first steps move every weight by about the rate, whatever its gradient; the
        # annealed CNN ends at rates near zero, and 1e-4 cost it 0.02-0.10 on `val` (RESULTS.md).
        # At 1e-5 it loses what the held-out retrain loses, to within 0.006 (plain SGD at the
        # recipe's rate is no mild step: the `size` regression's gradients wreck the CNN).
        "mild_finetune": {"steps": 10, "lr": 1e-5},
    },
    # The dense problem (ResNet encoder with batch norm, per-pixel decoders), at half the
    # default size so that a retrain takes about a minute on one core. The class request
    # forgets the segmentation labels of every scene with a ball (partial mode: depth and
    # normals stay learned), as studies/scenes_partial.yaml; the random one, full mode, 30% of
    # the bedrooms. The plants are the shapes recipes (Adam; batch norm in train mode, as a user
    # fine-tunes), the relearnable one the ball class's bias in the segmentation decoder's last
    # layer pushed down.
    "scenes": {
        "problem": {"name": "scenes", "params": {"num_samples": 1000}, "seed": 0},
        "class_request": {"mode": "partial", "target_tasks": ["segmentation"], "where": {"has_ball": 1}},
        "suppress": ("segmentation", "project", 3),
        "random_request": {"mode": "full", "where": {"room": 0}, "fraction": 0.3},
        "under_forgetting": {"steps": 10, "lr": 1e-4},
        "over_forgetting": {"steps": 30, "lr": 1e-3, "ascend_forget": True},
        "mild_finetune": {"steps": 10, "lr": 1e-5},
    },
}


#: The bank's stream: this request and nine companions, each this share of the train set.
STREAM_SIZE = 10
COMPANION_SHARE = 0.01


def bank_file(e: LoadedStudy, path: Path) -> Path:
    """The instances a bank for a 10-request stream leaves out: this request, previous ones, and
    nine disjoint seeded random companions of 1% of the train set each, from the rest."""
    deleted = torch.cat([e.inputs.request.indices, e.inputs.request.previous])
    rest = e.inputs.train[~torch.isin(e.inputs.train, deleted)]
    size = max(1, round(COMPANION_SHARE * len(e.inputs.train)))
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(e.inputs.config.problem.seed))
    companions = rest[order[: size * (STREAM_SIZE - 1)]]
    path.write_text("\n".join(str(i) for i in sorted(torch.cat([deleted, companions]).tolist())) + "\n")
    return path


def bank_study(raw: dict[str, Any], left_out: Path) -> dict[str, Any]:
    retrain = {"seeds": 5, "left_out": str(left_out), "shared_by": STREAM_SIZE}
    return {**raw, "references": {**raw["references"], "retrain": retrain}}


def study(problem: str, request: str, cache: Path, out: Path) -> dict[str, Any]:
    spec = PROBLEMS[problem]
    return {
        "name": f"power-{problem}-{request}",
        "problem": spec["problem"],
        "forget": spec[f"{request}_request"],
        # The plants' recipes are plain-step rates: sgd named, as the default space takes Adam.
        "method": {"name": "graddiff", "fixed": {"steps": 60, "batch_size": 32, "optimizer": "sgd"}},
        "references": {"cache_dir": str(cache), "retrain": {"seeds": 5}},
        "output": str(out),
        "device": "cpu",
        "tracking": {"enabled": False},
    }


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


def damage_meter(
    e: LoadedStudy, ctx: ValidationContext, neighbours: LabeledSet
) -> Callable[[MultiTaskModel], float]:
    """A model's damage, measured where the gate never looks: the worst task's accuracy loss
    beyond the retrain ensemble's mean on ``neighbours`` (the ``val`` neighbours of the forget
    instances for the planted damage, or all of ``val``; the probes draw from ``holdout``).
    The retrains are scored once."""
    names = e.inputs.task_names
    members = [ctx.per_sample_of(r, neighbours.indices).scores(neighbours, names) for r in ctx.retrains]
    reference = {t: sum(m[t] for m in members) / len(members) for t in names}

    def planted_damage(model: MultiTaskModel) -> float:
        scores = ctx.per_sample_of(model, neighbours.indices).scores(neighbours, names)
        return max(reference[t] - scores[t] for t in names)

    return planted_damage


#: A planted damage at least this large (twice the suite's 0.05) is a fault by construction.
DAMAGE_FLOOR = 0.10


KINDS = (
    "heldout_retrain",
    "mild_finetune",
    "under_forgetting",
    "over_forgetting",
    "relearnable",
    "quantization_fragile",
    "collateral_damage",
    "masked_collapse",
    "natural",
)


#: Natural damage: per method, each rate's scale and the top of the method's default space in
#: its units (1e-3 for ascent and 1e-2 for descent rates); a run draws each rate log-uniformly
#: from ``--natural-span`` times that top (default 1 to 30: from the top to 30× past it).
AGGRESSIVE: dict[str, dict[str, tuple[str, float]]] = {
    "graddiff": {"ascent_lr": ("forget_gradient", 1e-3), "retain_lr": ("retain_gradient", 1e-2)},
    "interference_aware": {"ascent_lr": ("forget_gradient", 1e-3), "retain_lr": ("retain_gradient", 1e-2)},
    "npo": {"lr": ("retain_gradient", 1e-2)},
    "scrub": {"lr": ("retain_gradient", 1e-2)},
}
NATURAL_SPAN = (1.0, 30.0)
NATURAL = tuple(f"natural_{name}" for name in AGGRESSIVE)
DAMAGING = ("collateral_damage", "masked_collapse", *NATURAL)
#: The dependent probes' threshold in the release suite: neighbour damage below it is none.
DEPENDENT_MAX = 0.05


def _log_uniform(generator: torch.Generator, low: float, high: float) -> float:
    share = float(torch.rand(1, generator=generator))
    return math.exp(math.log(low) + (math.log(high) - math.log(low)) * share)


def natural_models(
    e: LoadedStudy, scales: Mapping[str, float], seed: int, span: tuple[float, float] = NATURAL_SPAN
) -> dict[str, MultiTaskModel]:
    """Each shipped method of :data:`AGGRESSIVE` once, at a setting drawn from ``seed`` within
    ``span`` times its space's top; a run that diverges is no candidate (left out, and counted
    by its absence)."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, MultiTaskModel] = {}
    for name, space in AGGRESSIVE.items():
        params: dict[str, Any] = {
            key: _log_uniform(generator, top * span[0], top * span[1]) * scales[scale]
            for key, (scale, top) in space.items()
        }
        params.update(steps=100, batch_size=32, max_step=_log_uniform(generator, 0.01, 0.1))
        if name == "interference_aware":
            params["projection_strength"] = float(torch.rand(1, generator=generator))
        model = e.references.original_model()
        with contextlib.suppress(DivergenceError):
            METHODS.get(name)(**params).unlearn(model, e.inputs.setup, seed=seed)
            if all(torch.isfinite(p).all() for p in model.parameters()):
                out[f"natural_{name}"] = model
    return out


def planted(e: LoadedStudy, recipe: dict[str, Any], start: MultiTaskModel, seed: int) -> MultiTaskModel:
    """A plant from its recipe: a GradDiff run (``ascent_lr``, ``retain_lr``, ``steps``), or
    ``finetune`` (Adam descent on the retain set, from ``start``) with ``ascend_forget`` adding
    bounded ascent on the forget set."""
    if "ascent_lr" in recipe:
        return configuration_run.run(*e, recipe, seed=seed).model
    ascend = e.inputs.sets.forget if recipe.get("ascend_forget") else None
    return finetuned(
        e.inputs, start, e.inputs.sets.retain, recipe["steps"], recipe["lr"], seed, ascend=ascend
    )


def models(
    problem: str,
    request: str,
    e: LoadedStudy,
    ctx: ValidationContext,
    seed: int,
    kinds: tuple[str, ...],
    neighbours: LabeledSet,
    scales: Mapping[str, float],
    natural_span: tuple[float, float] = NATURAL_SPAN,
) -> dict[str, MultiTaskModel]:
    """The benign models, planted faults and naturally damaged models of ``kinds`` that apply
    to the request."""
    spec = PROBLEMS[problem]
    out: dict[str, MultiTaskModel] = {}
    original = ctx.original
    needs_heldout = ("heldout_retrain", "mild_finetune", "collateral_damage", "masked_collapse")
    if any(kind in kinds for kind in needs_heldout):
        heldout = train_model(
            e.inputs.problem, e.inputs.data, e.inputs.sets.retain, seed=10_000 + seed, progress=False
        )
        out["heldout_retrain"] = heldout
        out["mild_finetune"] = planted(e, spec["mild_finetune"], heldout, seed)
    inside = configuration_run.measure(*e, original)
    if "under_forgetting" in kinds and not all(
        inside[f"nothing_to_forget/{t}"] for t in e.inputs.request.target_tasks
    ):
        with contextlib.suppress(DivergenceError):  # a diverged model is no candidate
            out["under_forgetting"] = planted(e, spec["under_forgetting"], original, seed)
    if "over_forgetting" in kinds and request == "random":
        with contextlib.suppress(DivergenceError):
            out["over_forgetting"] = planted(e, spec["over_forgetting"], original, seed)
    if request == "class":
        head, layer, value = spec["suppress"]
        suppressed = copy.deepcopy(original)
        output = suppressed.heads[head]
        with torch.no_grad():
            (getattr(output, layer) if layer else output).bias[value] -= 16.0 + seed
        out["relearnable"] = suppressed
        if "quantization_fragile" in spec and "quantization_fragile" in kinds:
            with contextlib.suppress(DivergenceError):
                unlearned = configuration_run.run(*e, spec["quantization_fragile"], seed=seed).model
                out["quantization_fragile"] = on_original_grid(unlearned, original, bits=4)
    if "collateral_damage" in kinds or "masked_collapse" in kinds:
        # From an exact deletion, so that the damage next to the request is the only fault.
        damaged = finetuned(e.inputs, heldout, e.inputs.sets.retain, 20, 1e-3, seed, ascend=neighbours)
        out["collateral_damage"] = damaged
        retain_inputs = e.inputs.data.inputs[e.inputs.sets.retain.indices.unique()]
        out["masked_collapse"] = RetainMemorised(damaged, heldout, retain_inputs)
    if "natural" in kinds:
        out.update(natural_models(e, scales, seed, natural_span))
    return {kind: model for kind, model in out.items() if kind in kinds or kind in NATURAL}


BENIGN = ("heldout_retrain", "mild_finetune")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="digits")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--samples", type=int, default=None, help="the problem's num_samples (default: the table's)"
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed … seeds − 1 (to finish a run in parts)"
    )
    parser.add_argument("--requests", nargs="+", choices=("class", "random"), default=["class", "random"])
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="the models to gate (default: all)"
    )
    parser.add_argument(
        "--natural-span",
        type=float,
        nargs=2,
        default=NATURAL_SPAN,
        metavar=("LOW", "HIGH"),
        help="natural models' rates, in multiples of the top of each method's default space (default: 1 30)",
    )
    parser.add_argument("--suite", type=Path, default=ROOT / "validators" / "release.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cache", type=Path, default=None, help="reference cache (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--probe-rule", choices=("upper_bound", "estimate"), help="override the suite's")
    parser.add_argument(
        "--references",
        nargs="+",
        choices=("ensemble", "bank"),
        default=["ensemble"],
        help="reference modes to judge every model in (the gold ensemble's verdicts are the "
        "agreement baseline, so list it first)",
    )
    parser.add_argument("--rows", type=Path, default=None, help="print the tables of an earlier --json")
    args = parser.parse_args()
    if not args.rows and args.first_seed >= args.seeds:
        # --seeds is where the range ends, not how many: an empty range would judge nothing
        parser.error(
            f"--first-seed {args.first_seed} must be below --seeds {args.seeds}: seeds first-seed … seeds − 1"
        )
    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    if args.probe_rule:
        suite = suite.model_copy(update={"probe_rule": args.probe_rule})
    tmp = Path(tempfile.mkdtemp())
    cache = args.cache or tmp / "cache"
    static = suite.probes.get("static_retain")
    static_max = static.max_excess if static is not None else DEPENDENT_MAX
    # --rows: the tables of an earlier run's --json, nothing gated again
    rows: list[dict[str, Any]] = json.loads(args.rows.read_text()) if args.rows else []
    started = time.perf_counter()
    for request in [] if args.rows else args.requests:
        raw = study(args.problem, request, cache, tmp / request)
        if args.samples is not None:
            problem = raw["problem"]
            raw["problem"] = {**problem, "params": {**problem.get("params", {}), "num_samples": args.samples}}
        e = load_study_values(parse_study(raw))
        ctx = ValidationContext(*e)
        contexts = {"ensemble": ctx}
        if "bank" in args.references:
            left_out = bank_file(e, tmp / f"bank-{request}.txt")
            bank = load_study_values(parse_study(bank_study(raw, left_out)))
            contexts["bank"] = ValidationContext(*bank)
        neighbours = val_neighbours(ctx)
        planted_damage = damage_meter(e, ctx, neighbours)
        val_damage = damage_meter(e, ctx, e.inputs.sets.val)
        static_damage = damage_meter(e, ctx, e.inputs.scored["retain"])
        scales = {
            str(k): v
            for k, v in measure_rate_scales(
                e.references.original_model(), e.inputs.setup, e.inputs.config.problem.seed
            ).items()
        }
        for seed in range(args.first_seed, args.seeds):
            kinds = tuple(args.kinds)
            built = models(args.problem, request, e, ctx, seed, kinds, neighbours, scales, args.natural_span)
            for (kind, model), mode in itertools.product(built.items(), args.references):
                report = validate(contexts[mode], Candidate(model, f"{kind} seed {seed}"), suite)
                failed = [r.name for r in report.results if r.status in ("fail", "error")]
                # Attack verdicts without the retrains' seed band, to report both rules from one run.
                unbanded = [
                    r.name
                    for r in report.results
                    if r.name.startswith("attack/")
                    and r.status == "pass"
                    and (r.value or 0.0) > (r.threshold or 0.0)
                ]
                damage = planted_damage(model) if kind in DAMAGING else None
                rows.append(
                    {
                        "mode": mode,
                        "request": request,
                        "kind": kind,
                        "seed": seed,
                        "planted_damage": damage,
                        # every model's damage on all of `val` (no probe reads it): a benign
                        # model that fails should show none, a planted fault some
                        "val_damage": val_damage(model),
                        # what the static retain probe sees (natural models: masked or not)
                        "static_damage": static_damage(model) if kind in NATURAL else None,
                        "verdict": report.verdict,
                        "failed": failed,
                        # why each check failed (its worst task, estimate, interval and band)
                        # and every attack check's (the attacked scores of a plant that passes)
                        "messages": {
                            r.name: r.message
                            for r in report.results
                            if r.name in failed or r.name.startswith("attack/")
                        },
                        "failed_without_attack_band": failed + unbanded,
                    }
                )
                if args.json:  # after every model: a run stopped early keeps what it measured
                    args.json.write_text(json.dumps(rows, indent=1))
                planted = "" if damage is None else f"(planted damage {damage:.3f}) "
                print(
                    f"{mode:8} {request:6} {kind:16} seed {seed}: {report.verdict:15} {planted}"
                    f"{', '.join(failed)}",
                    flush=True,
                )
    # an earlier run's rows carry their own modes and requests; the problem is not in them
    source = f"{args.rows}" if args.rows else args.problem
    modes = list(dict.fromkeys(r["mode"] for r in rows)) if args.rows else args.references
    requests = list(dict.fromkeys(r["request"] for r in rows)) if args.rows else args.requests
    print(
        f"\n{source}: {len(rows)} verdicts in {time.perf_counter() - started:.0f} s with "
        f"{args.suite.name} (probe_rule {suite.probe_rule})"
    )
    for mode in modes:
        print(f"\nreference mode {mode}: {MODE_COST[mode]:g} retrain(s) per request")
        print_table([r for r in rows if r["mode"] == mode], requests, rows, static_max)


#: What each mode's references cost per request, in retrains (module docstring).
MODE_COST = {"ensemble": 5.0, "bank": 5.0 / STREAM_SIZE}


def _key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["request"], row["kind"], row["seed"]


def print_table(
    rows: list[dict[str, Any]], requests: list[str], every: list[dict[str, Any]], static_max: float
) -> None:
    """One mode's detection and false-alarm table, with its agreement with the gold verdicts."""
    gold = {_key(r): r["verdict"] == "pass" for r in every if r["mode"] == "ensemble"}
    print("| request | model | kind | n | rate | agrees with gold | checks that fired (count) |")
    print("|---|---|---|---|---|---|---|")
    for request in requests:
        for kind in dict.fromkeys(r["kind"] for r in rows if r["request"] == request):
            group = [r for r in rows if r["request"] == request and r["kind"] == kind]
            benign = kind in BENIGN
            flagged = sum(r["verdict"] != "pass" for r in group)
            rate = flagged / len(group)
            label = "false alarms" if benign else "detected"
            fired = Counter(name for r in group for name in r["failed"])
            judged = [r for r in group if _key(r) in gold]
            agree = sum(gold[_key(r)] == (r["verdict"] == "pass") for r in judged)
            agreement = f"{agree}/{len(judged)}" if judged else "—"
            extra = ""
            if kind == "quantization_fragile":
                caught = sum("attack/quantization_4bit" in r["failed"] for r in group)
                extra = f"; the 4-bit quantization check fired {caught}/{len(group)}"
            if kind in DAMAGING:
                named = sum(r["verdict"] == "masked collapse" for r in group)
                extra = f"; named masked collapse {named}/{len(group)}"
                faults = [r for r in group if r["planted_damage"] >= DAMAGE_FLOOR]
                extra += (
                    f"; with planted damage ≥ {DAMAGE_FLOOR:g}: {len(faults)} models, caught "
                    f"{sum(r['verdict'] != 'pass' for r in faults)}, named masked collapse "
                    f"{sum(r['verdict'] == 'masked collapse' for r in faults)}"
                )
            if kind in NATURAL:
                extra += "; " + natural_summary(group, static_max)
            if benign:
                # a benign model's truth, measured where no check looks: its loss on all of `val`
                # beyond the ensemble's mean (worst task), of every model and of the flagged ones
                losses = sorted(r["val_damage"] for r in group)
                flagged_losses = [f"{r['val_damage']:.3f}" for r in group if r["verdict"] != "pass"]
                extra += f"; val damage median {losses[len(losses) // 2]:.3f}, max {losses[-1]:.3f}"
                extra += f" (flagged: {', '.join(flagged_losses) or 'none'})"
            checks = ", ".join(f"{n} ({c})" for n, c in fired.most_common())
            unbanded = sum(bool(r["failed_without_attack_band"]) for r in group)
            extra += f"; without the attack seed band {unbanded}/{len(group)}"
            share = f"{flagged}/{len(group)} = {rate:.0%}{extra}"
            print(f"| {request} | {kind} | {label} | {len(group)} | {share} | {agreement} | {checks} |")
        natural = [r for r in rows if r["request"] == request and r["kind"] in NATURAL]
        if natural:
            pooled = natural_summary(natural, static_max)
            print(f"| {request} | every natural model | pooled | {len(natural)} | {pooled} | | |")


def natural_summary(group: list[dict[str, Any]], static_max: float) -> str:
    """Detection on the damaged natural models, naming on the masked ones (damaged while the
    static retain set's damage is within the suite's ``static_max``), and how many of those
    with no damage anywhere measured failed (on forget quality or an attack, then)."""
    damaged = [r for r in group if r["planted_damage"] >= DAMAGE_FLOOR]
    masked = [r for r in damaged if r["static_damage"] <= static_max]
    undamaged = [
        r
        for r in group
        if r["planted_damage"] < DEPENDENT_MAX
        and r["val_damage"] < DEPENDENT_MAX
        and r["static_damage"] <= static_max
    ]
    return (
        f"damaged (neighbour damage ≥ {DAMAGE_FLOOR:g}) {len(damaged)}, caught "
        f"{sum(r['verdict'] != 'pass' for r in damaged)}; masked (and static damage ≤ {static_max:g}) "
        f"{len(masked)}, named masked collapse {sum(r['verdict'] == 'masked collapse' for r in masked)}; "
        f"undamaged (neighbour and val < {DEPENDENT_MAX:g}, static ≤ {static_max:g}) {len(undamaged)}, "
        f"failed {sum(r['verdict'] != 'pass' for r in undamaged)}"
    )


if __name__ == "__main__":
    main()
