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

    python benchmarks/feature_erasure.py --study STUDY.yaml [--sites input output] \
        [--suite SUITE.yaml] --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor, nn

from tune_unlearn.config.schema import read_yaml
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.methods._base import UnlearningSetup
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.trial.study_references import load_study_values
from tune_unlearn.validation import Candidate, ValidationContext, load_suite, validate

ROOT = Path(__file__).resolve().parents[1]
SITES = ("input", "output")
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
    layers = [m for m in model.backbone.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("the backbone has no nn.Linear layer to erase at")
    layer = layers[-1]
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "quickstart.yaml")
    parser.add_argument("--suite", type=Path, default=ROOT / "validators" / "release.yaml")
    parser.add_argument("--sites", nargs="+", choices=SITES, default=["input"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    experiment = load_study_values(parse_study(read_yaml(args.study)))
    model = experiment.references.original_model()
    lines = erase(model, experiment.inputs.setup, tuple(args.sites))
    context = ValidationContext(*experiment)
    report = validate(context, Candidate(model, "feature erasure", params=None), load_suite(args.suite))
    print(f"feature erasure: {args.study.name}, the forget set's indicator erased at {', '.join(args.sites)}")
    for line in lines:
        print(f"  {line}")
    for result in report.results:
        print(f"  {result.name}: {result.status}: {result.message}")
    print(f"verdict: {report.verdict}")


if __name__ == "__main__":
    main()
