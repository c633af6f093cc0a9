"""Can the forgotten knowledge be taken out of the backbone's features, in closed form?

"Where shapes' forgotten circles live" (benchmarks/RESULTS.md) found that every model derived
from the shapes original relearns the forgotten circles in six steps of the release gate's
attack, even with the target head retrained from scratch, because the original's backbone
keeps a direction that tells circles apart and the retrains' does not. This benchmark tries to
remove that direction: least-squares concept erasure (LEACE, Belrose et al. 2023) of "is this
sample in the forget set" at one linear layer of the backbone, baked into that layer's weights.

At the chosen site (the input or the output of the backbone's last ``nn.Linear``) the
activations ``x`` of a pool of train samples (the forget set and the retain set's samples) are
collected on the original in eval mode; with ``z`` the forget set's indicator, ``Σ`` the
activations' covariance and ``σ = Cov(x, z)``, the erasure is ``r(x) = x − M(x − a)`` with
``M = Σ^{1/2} u uᵀ Σ^{-1/2}``, ``u`` the unit vector along ``Σ^{-1/2} σ`` and ``a`` the mean of
the samples outside the forget set (they keep their mean; the forget set's mean moves onto it).
After it ``Cov(r(x), z) = 0``: no linear read-out of the site tells the forget set apart on
average. It is folded into the layer (``W ← W(I − M)``, ``b ← b + W M a`` at its input;
``W ← (I − M)W``, ``b ← (I − M)b + M a`` at its output), so the candidate keeps the original's
architecture and the attack fine-tunes every weight as it would any model. The study's release
suite then judges the candidate through the gate's code and each check's verdict is printed.

``--train STEPS`` trains the erasure in instead of folding it in: the whole model, from the
original, takes ``STEPS`` Adam steps (the problem's fine-tuning rate, the relearning attack's)
on the retain set's task losses plus ``--penalty`` times the squared covariance between the
forget set's indicator and the activations at each site (its input and output alike, divided
by their variance), on a batch drawn from the pool. With ``--conditional`` the indicator is
first residualised on the kept categorical tasks' one-hot labels over the pool (least squares),
so that what the forget set shares with a kept label (shapes' circles are mostly red) is not
erased with it. The steps, counted in samples, are printed in retrain units.

    python benchmarks/feature_erasure.py --study STUDY.yaml [--sites input output] \
        [--train STEPS --penalty P [--conditional]] [--suite SUITE.yaml] --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tune_unlearn.config.schema import read_yaml
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.methods._base import UnlearningSetup
from tune_unlearn.methods._gradients import ParameterLayout
from tune_unlearn.methods._shrink_perturb import shrink_and_perturb
from tune_unlearn.problems import MultiTaskModel, masked_task_losses
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values
from tune_unlearn.validation import Candidate, ValidationContext, load_suite, validate

ROOT = Path(__file__).resolve().parents[1]
SITES = ("input", "output", "features")
#: Eigenvalues of the covariance below this share of the largest are treated as zero (dead
#: ReLU units give exactly zero variance).
RANK_TOLERANCE = 1e-7


def erasure(x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """``(M, a)`` of the LEACE erasure of the binary concept ``z`` ``[N]`` from ``x`` ``[N, d]``
    (float64): ``r(x) = x − M(x − a)``, ``a`` the mean of the rows where ``z`` is false."""
    x, zf = x.double(), z.double()
    centred = x - x.mean(dim=0)
    covariance = centred.T @ centred / len(x)
    cross = centred.T @ (zf - zf.mean()) / len(x)
    values, vectors = torch.linalg.eigh(covariance)
    kept = values > values.max() * RANK_TOLERANCE
    basis, roots = vectors[:, kept], values[kept].sqrt()
    root = basis @ torch.diag(roots) @ basis.T
    inverse_root = basis @ torch.diag(1.0 / roots) @ basis.T
    whitened = inverse_root @ cross
    if not float(torch.linalg.vector_norm(whitened)) > 0:
        raise ValueError("the site's activations do not covary with the forget set: nothing to erase")
    unit = whitened / torch.linalg.vector_norm(whitened)
    return root @ torch.outer(unit, unit) @ inverse_root, x[~z].mean(dim=0)


@torch.no_grad()
def site_activations(model: MultiTaskModel, layer: nn.Linear, inputs: Tensor, site: str) -> Tensor:
    """The layer's input or output over ``inputs``, in batches, the model in eval mode."""
    captured: list[Tensor] = []

    def keep(_module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append((args[0] if site == "input" else output).detach())

    handle = layer.register_forward_hook(keep)
    try:
        for start in range(0, len(inputs), 512):
            model(inputs[start : start + 512])
    finally:
        handle.remove()
    return torch.cat(captured)


@torch.no_grad()
def erase(model: MultiTaskModel, setup: UnlearningSetup, sites: tuple[str, ...]) -> list[str]:
    """Erase the forget set's indicator at each site of the backbone's last ``nn.Linear``, in
    place (input first: the output is then measured on the erased layer). Returns one line per
    site: the share of the site's variance the erased direction carried."""
    layer = _last_linear(model)
    model.eval()
    rows = torch.cat([setup.forget.indices, setup.retain.indices]).unique()
    in_forget = torch.isin(rows, setup.forget.indices)
    inputs = setup.data.inputs[rows]
    lines = []
    for site in sites:
        x = site_activations(model, layer, inputs, site)
        m, anchor = erasure(x, in_forget)
        weight, bias = layer.weight.double(), layer.bias.double()
        eye = torch.eye(len(m), dtype=m.dtype, device=m.device)
        if site == "input":
            weight, bias = weight @ (eye - m), bias + weight @ m @ anchor
        else:
            weight, bias = (eye - m) @ weight, (eye - m) @ bias + m @ anchor
        layer.weight.copy_(weight.to(layer.weight.dtype))
        layer.bias.copy_(bias.to(layer.bias.dtype))
        centred = x.double() - x.double().mean(dim=0)
        moved = centred @ m.T
        share = float(moved.pow(2).sum() / centred.pow(2).sum())
        gap = x[in_forget].double().mean(0) - x[~in_forget].double().mean(0)
        lines.append(
            f"{site} of {layer}: {int(in_forget.sum())} forget / {len(rows)} samples, mean gap "
            f"{float(torch.linalg.vector_norm(gap)):.4g}, "
            f"erased direction's share of the variance {share:.4f}"
        )
    return lines


def _last_linear(model: MultiTaskModel) -> nn.Linear:
    layers = [m for m in model.backbone.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("the backbone has no nn.Linear layer to erase at")
    return layers[-1]


def pool_concept(setup: UnlearningSetup, conditional: bool) -> tuple[Tensor, Tensor]:
    """``(rows, concept)``: the pool's train rows and, per row, the forget set's indicator
    (centred), residualised on the kept categorical tasks' one-hot labels when ``conditional``."""
    rows = torch.cat([setup.forget.indices, setup.retain.indices]).unique()
    concept = torch.isin(rows, setup.forget.indices).double()
    columns = [torch.ones(len(rows), 1, dtype=torch.float64, device=rows.device)]
    if conditional:
        for task, target in zip(setup.tasks, setup.target.tolist(), strict=True):
            if task.categorical and not target:
                labels = setup.data.labels[task.name][rows].long()
                columns.append(torch.nn.functional.one_hot(labels, task.num_classes).double())
    design = torch.cat(columns, dim=1)
    fitted = design @ torch.linalg.lstsq(design, concept.unsqueeze(1)).solution
    return rows, concept - fitted.squeeze(1)


def squared_correlation(
    model: MultiTaskModel,
    setup: UnlearningSetup,
    rows: Tensor,
    concept: Tensor,
    sites: tuple[str, ...],
    captured: dict[str, Tensor],
) -> Tensor:
    """The penalty: summed over the sites, the squared covariance between the (centred) concept
    and the activations on ``rows``, over the activations' total variance and the concept's."""
    model(setup.data.inputs[rows])
    z = concept - concept.mean()
    total = torch.zeros((), device=rows.device)
    for site in sites:
        x = captured[site].flatten(1)
        centred = x - x.mean(dim=0)
        covariance = centred.T @ z / len(z)
        total = total + covariance.pow(2).sum() / (centred.pow(2).mean(dim=0).sum() * z.pow(2).mean()).clamp(
            min=1e-12
        )
    return total


def train_erasure(
    experiment: LoadedStudy,
    sites: tuple[str, ...],
    steps: int,
    penalty: float,
    conditional: bool,
    perturb: tuple[float, float] | None = None,
) -> tuple[MultiTaskModel, list[str]]:
    """The original (shrunk and perturbed first when ``perturb`` gives ``(shrink, noise)``)
    after ``steps`` Adam steps on the retain losses plus the covariance penalty (module
    docstring), and a line per 50 steps of what the penalty and losses read."""
    setup = experiment.inputs.setup
    model = experiment.references.original_model().eval()
    if perturb is not None:
        shrink_and_perturb(ParameterLayout(model), *perturb, torch.Generator().manual_seed(0))
    layer = _last_linear(model)
    rows, concept = pool_concept(setup, conditional)
    concept = concept.float()
    captured: dict[str, Tensor] = {}

    def keep(_module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        captured["input"], captured["output"] = args[0], output

    def keep_features(_module: nn.Module, _args: tuple[Tensor, ...], output: Tensor) -> None:
        captured["features"] = output

    handles = [layer.register_forward_hook(keep), model.backbone.register_forward_hook(keep_features)]
    optimiser = torch.optim.Adam(model.parameters(), lr=experiment.inputs.problem.finetune_lr())
    device = rows.device
    generator = torch.Generator(device=device).manual_seed(0)
    batch_size, lines, spent = 128, [], 0
    try:
        for step in range(steps):
            retain_positions = torch.randint(
                len(setup.retain), (batch_size,), generator=generator, device=device
            )
            retain = setup.batch(setup.retain, retain_positions)
            task_loss = masked_task_losses(model(retain.inputs), retain, setup.tasks).sum()
            logged = step % 50 == 0 or step == steps - 1
            drawn = torch.randint(len(rows), (2 * batch_size,), generator=generator, device=device)
            if penalty > 0:  # the pool batch is part of the step: counted
                erasure_loss = squared_correlation(model, setup, rows[drawn], concept[drawn], sites, captured)
                spent += 2 * batch_size
            elif logged:  # only read, for the log: not part of the step, not counted
                with torch.no_grad():
                    erasure_loss = squared_correlation(
                        model, setup, rows[drawn], concept[drawn], sites, captured
                    )
            else:
                erasure_loss = torch.zeros((), device=device)
            loss = task_loss + penalty * erasure_loss if penalty > 0 else task_loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            spent += batch_size
            if logged:
                lines.append(
                    f"step {step}: retain losses {float(task_loss.detach()):.4f}, "
                    f"squared correlation {float(erasure_loss.detach()):.5f}"
                )
    finally:
        for handle in handles:
            handle.remove()
    recipe = experiment.inputs.problem.recipe()
    retrain = recipe.steps(len(rows)) * recipe.batch_size
    lines.append(f"spent {spent} sample-gradients ({spent / retrain:.2f} × a retrain's {retrain})")
    return model.eval(), lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "quickstart.yaml")
    parser.add_argument("--suite", type=Path, default=ROOT / "validators" / "release.yaml")
    parser.add_argument("--sites", nargs="+", choices=SITES, default=["input"])
    parser.add_argument("--train", type=int, default=0, help="train the erasure in over this many steps")
    parser.add_argument("--penalty", type=float, default=10.0)
    parser.add_argument("--conditional", action="store_true")
    parser.add_argument(
        "--shrink-perturb",
        type=float,
        nargs=2,
        metavar=("SHRINK", "NOISE"),
        default=None,
        help="with --train: shrink every weight by SHRINK and add NOISE × its tensor's rms of noise first",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if "features" in args.sites and not args.train:
        parser.error(
            "--sites features (the backbone's output, after its activation) needs --train: "
            "only a linear layer's input or output can be folded into its weights"
        )
    if args.shrink_perturb is not None and not args.train:
        parser.error("--shrink-perturb needs --train (the perturbed model is then trained)")
    torch.set_num_threads(args.threads)
    experiment = load_study_values(parse_study(read_yaml(args.study)))
    if args.train:
        model, lines = train_erasure(
            experiment,
            tuple(args.sites),
            args.train,
            args.penalty,
            args.conditional,
            None if args.shrink_perturb is None else tuple(args.shrink_perturb),
        )
    else:
        model = experiment.references.original_model()
        lines = erase(model, experiment.inputs.setup, tuple(args.sites))
    context = ValidationContext(*experiment)
    report = validate(context, Candidate(model, "feature erasure", params=None), load_suite(args.suite))
    how = f"trained in over {args.train} steps, penalty {args.penalty:g}" if args.train else "folded in"
    if args.shrink_perturb:
        how += ", after shrink {:g} and perturb {:g}".format(*args.shrink_perturb)
    print(
        f"feature erasure: {args.study.name}, the forget set's indicator erased at {', '.join(args.sites)}"
        f" ({how}{', conditional on the kept labels' if args.conditional else ''})"
    )
    for line in lines:
        print(f"  {line}")
    for result in report.results:
        print(f"  {result.name}: {result.status}: {result.message}")
    print(f"verdict: {report.verdict}")
    print_relearning_curves(report.results)


def print_relearning_curves(results: list[Any]) -> None:
    """The forget-set score after each step of the relearning attack on the forget sample, the
    candidate's and each retrain's: how many steps apart the two come back."""
    for result in results:
        if result.name == "attack/relearn_forget" and "candidate_curve" in result.details:
            candidate = result.details["candidate_curve"]
            print("relearning curve (forget-set score after each attack step, 0 = before):")
            print("  candidate: " + " ".join(f"{v:.3f}" for v in candidate))
            for number, curve in enumerate(result.details.get("retrain_curves", [])):
                print(f"  retrain {number}: " + " ".join(f"{v:.3f}" for v in curve))


if __name__ == "__main__":
    main()
