"""Where does a request's forgotten knowledge live: in the target heads, or in the backbone?

The candidate is the original with every target task's head re-initialised and retrained on
the retain set alone (Adam, the backbone frozen, eval mode): the head a retrain would have, on
the original's features. It never saw a forget label, so whatever of the forgotten knowledge
it shows comes from the backbone. The study's release suite then judges it through the gate's
code, in the study's reference mode, and each check's verdict is printed.

If it passes every check but the relearning attack, the attack brings the forgotten knowledge
back from the backbone's features alone, and no unlearning that leaves those features as they
are can pass the gate on this request, whatever it does to the heads (benchmarks/RESULTS.md,
"Where shapes' forgotten circles live").

    python benchmarks/head_reset.py --study STUDY.yaml [--steps 1500] [--suite SUITE.yaml] --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tune_unlearn.config.schema import read_yaml
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.problems import MultiTaskModel, masked_task_losses
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values
from tune_unlearn.validation import Candidate, ValidationContext, load_suite, validate

ROOT = Path(__file__).resolve().parents[1]


def head_reset(experiment: LoadedStudy, steps: int, batch_size: int, lr: float) -> MultiTaskModel:
    """The original with its target heads re-initialised, then trained on the retain set."""
    setup = experiment.inputs.setup
    model = experiment.references.original_model().eval()
    targets = [task.name for task, on in zip(setup.tasks, setup.target.tolist(), strict=True) if on]
    torch.manual_seed(0)
    for name in targets:
        for module in model.heads[name].modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    optimiser = torch.optim.Adam([p for name in targets for p in model.heads[name].parameters()], lr=lr)
    generator = torch.Generator(device=setup.retain.indices.device).manual_seed(0)
    for _ in range(steps):
        positions = torch.randint(
            len(setup.retain), (batch_size,), generator=generator, device=setup.retain.indices.device
        )
        batch = setup.batch(setup.retain, positions)
        loss = masked_task_losses(model(batch.inputs), batch, setup.tasks)[setup.target].sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "quickstart.yaml")
    parser.add_argument("--suite", type=Path, default=ROOT / "validators" / "release.yaml")
    parser.add_argument("--steps", type=int, default=1500, help="head-training steps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    experiment = load_study_values(parse_study(read_yaml(args.study)))
    model = head_reset(experiment, args.steps, args.batch_size, args.lr)
    context = ValidationContext(*experiment)
    report = validate(context, Candidate(model, "head reset", params=None), load_suite(args.suite))
    print(f"head reset: {args.study.name}, target heads retrained {args.steps} steps on the retain set")
    for result in report.results:
        print(f"  {result.name}: {result.status}: {result.message}")
    print(f"verdict: {report.verdict}")


if __name__ == "__main__":
    main()
