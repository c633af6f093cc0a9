"""The dense `scenes` problem: task scores against hand-worked cases, the renderer against
analytic geometry, batch norm under per-sample gradients, every method, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tune_unlearn.config.study_config import ConfigError, parse_study
from tune_unlearn.methods import METHODS
from tune_unlearn.problems import DepthTask, NormalsTask, ScenesProblem, SegmentationTask
from tune_unlearn.problems._scenes import (
    CAMERA_HEIGHT,
    intersect_room,
    intersect_sphere,
    ray_directions,
)
from tune_unlearn.trial.inputs import evaluate_scored, score
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values

from ..methods.helpers import step_gradients

TINY: dict[str, Any] = {"num_samples": 120, "image_size": 8, "channels": 2, "epochs": 1, "batch_size": 16}


def test_segmentation_scores_the_images_miou_over_classes_in_label_or_prediction() -> None:
    task = SegmentationTask("segmentation", num_classes=3)
    target = torch.tensor([[[0, 0], [1, 2]]])
    predicted = torch.tensor([[[0, 1], [1, 1]]])
    logits = 5.0 * nn.functional.one_hot(predicted, 3).permute(0, 3, 1, 2).float()
    # class 0: 1 of 2 pixels; class 1: 1 shared of 3 in the union; class 2: missed (0 of 1)
    assert task.per_sample_correct(logits, target).item() == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    assert task.reported_scores(logits, target)["pixel_accuracy"].item() == pytest.approx(0.5)
    # a class in neither the label nor the prediction does not count
    assert task.per_sample_correct(logits[:, :, :1, :1], target[:, :1, :1]).item() == 1.0
    assert task.output_shape((2, 2)) == (3, 2, 2)


def test_depth_scores_the_share_of_pixels_within_delta_and_reports_absolute_relative_error() -> None:
    task = DepthTask("depth")
    target = torch.tensor([[[1.0, 2.0], [4.0, 8.0]]])
    predicted = torch.tensor([[[1.2, 2.6], [3.3, 8.0]]])  # ratios 1.2, 1.3, 1.21, 1
    output = predicted.log().unsqueeze(1)
    assert task.per_sample_correct(output, target).item() == pytest.approx(0.75)
    abs_rel = (0.2 / 1 + 0.6 / 2 + 0.7 / 4 + 0) / 4
    assert task.reported_scores(output, target)["abs_rel"].item() == pytest.approx(abs_rel, rel=1e-5)
    assert task.per_sample_loss(output, target).item() == pytest.approx(
        sum(abs(math.log(p / t)) for p, t in [(1.2, 1), (2.6, 2), (3.3, 4), (8, 8)]) / 4, rel=1e-5
    )


def test_normals_score_the_share_within_30_degrees_and_report_the_angle_figures() -> None:
    task = NormalsTask("normals")
    angles = torch.tensor([0.0, 20.0, 25.0, 40.0])
    radians = torch.deg2rad(angles)
    # unnormalised predictions (length 2): only their direction counts
    predicted = 2 * torch.stack([radians.sin(), torch.zeros(4), radians.cos()]).view(1, 3, 2, 2)
    target = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert task.per_sample_correct(predicted, target).item() == pytest.approx(0.75)
    reported = task.reported_scores(predicted, target)
    assert reported["mean_angle"].item() == pytest.approx(21.25, abs=1e-3)
    assert reported["within_11_25"].item() == pytest.approx(0.25)
    assert reported["within_22_5"].item() == pytest.approx(0.5)
    assert task.per_sample_loss(predicted, target).item() == pytest.approx(
        float((1 - radians.cos()).mean()), abs=1e-6
    )


def test_room_planes_give_the_analytic_depth_and_normal() -> None:
    rays = ray_directions(16)
    depth, normal, surface = intersect_room(rays, torch.tensor([2.0]), torch.tensor([5.0]))
    floor = surface[0] == 0
    assert floor.any() and (surface[0] == 1).any() and (surface[0] == 2).any()
    # the floor y = −h: a ray (x, y, 1) meets it at z = −h / y
    assert torch.allclose(depth[0][floor], -CAMERA_HEIGHT / rays[..., 1][floor])
    assert torch.equal(normal[0][floor], torch.tensor([0.0, 1.0, 0.0]).expand(int(floor.sum()), 3))
    back = (surface[0] == 1) & (normal[0][..., 2] == -1.0)
    assert back.any() and torch.all(depth[0][back] == 5.0)
    # every hit is on the surface it names: the side walls at |x| = 2
    side = (surface[0] == 1) & (normal[0][..., 0] != 0)
    assert torch.allclose((rays[..., 0] * depth[0])[side].abs(), torch.tensor(2.0))


def test_a_sphere_gives_the_analytic_depth_and_normal() -> None:
    rays = ray_directions(32)
    centre, radius = torch.tensor([0.3, -0.2, 4.0]), torch.tensor(1.0)
    depth, normal = intersect_sphere(rays, centre, radius)
    hit = depth.isfinite()
    points = rays[hit] * depth[hit].unsqueeze(-1)
    # hits lie on the sphere, with the outward unit normal, and are the nearer root
    assert torch.allclose((points - centre).norm(dim=-1), radius.expand(len(points)), atol=1e-4)
    assert torch.allclose(normal[hit], (points - centre) / radius, atol=1e-4)
    assert torch.all((normal[hit] * rays[hit]).sum(-1) < 0)  # facing the camera
    # a ray misses exactly when the line passes farther than the radius from the centre
    unit = rays / rays.norm(dim=-1, keepdim=True)
    distance = torch.linalg.cross(unit, centre.expand_as(unit), dim=-1).norm(dim=-1)
    assert torch.equal(hit, distance <= radius)
    # the ray through the centre meets the sphere at |c| − r along it
    through = centre / centre[2]
    t, _ = intersect_sphere(through, centre, radius)
    assert t.item() == pytest.approx((centre.norm().item() - 1.0) / centre.norm().item() * 4.0, rel=1e-5)


def test_rendering_is_deterministic_and_labels_are_exact_maps() -> None:
    problem = ScenesProblem(num_samples=40, image_size=16)
    data, again = problem.load_data(), problem.load_data()
    assert torch.equal(data.inputs, again.inputs)
    assert data.inputs.shape == (40, 3, 16, 16) and data.inputs.min() >= 0 and data.inputs.max() <= 1
    assert data.labels["segmentation"].shape == (40, 16, 16)
    assert torch.allclose(data.labels["normals"].norm(dim=1), torch.ones(40, 16, 16), atol=1e-5)
    assert data.labels["depth"].min() > 1.0  # the nearest surface is a room's width away
    # has_<class> says exactly whether the class is visible
    for index, name in enumerate(problem.object_classes):
        visible = (data.labels["segmentation"] == 3 + index).flatten(1).any(dim=1)
        assert torch.equal(data.attributes[f"has_{name}"].bool(), visible)


def test_correlation_ties_a_scenes_objects_and_light_to_its_room() -> None:
    def tie(correlation: float) -> float:
        data = ScenesProblem(num_samples=400, image_size=8, correlation=correlation).load_data()
        return float((data.attributes["lighting"] == data.attributes["room"] % 3).float().mean())

    assert tie(1.0) == 1.0
    assert tie(0.0) < 0.5


@pytest.fixture(scope="module")
def scenes_values(tmp_path_factory: pytest.TempPathFactory) -> LoadedStudy:
    folder = tmp_path_factory.mktemp("scenes")
    raw = {
        "name": "scenes_test",
        "problem": {"name": "scenes", "params": TINY},
        "forget": {"mode": "partial", "target_tasks": ["segmentation"], "where": {"has_ball": 1}},
        "method": {"name": "graddiff"},
        "references": {"cache_dir": str(folder / "cache"), "retrain": {"seeds": 1}},
        "tracking": {"enabled": False},
        "device": "cpu",
        "output": str(folder / "out"),
    }
    return load_study_values(parse_study(raw))


def _batch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_references_train_batch_norm_statistics(scenes_values: LoadedStudy) -> None:
    norms = _batch_norms(scenes_values.references.original_model())
    assert norms and all(int(n.num_batches_tracked) > 0 for n in norms)
    assert any(not torch.equal(n.running_mean, torch.zeros_like(n.running_mean)) for n in norms)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_unlearns_on_scenes_with_batch_norm_statistics_frozen(
    scenes_values: LoadedStudy, name: str
) -> None:
    method = METHODS.get(name)(steps=2, batch_size=4)
    first, second = (
        scenes_values.references.original_model(),
        scenes_values.references.original_model(),
    )
    statistics = [(n.running_mean.clone(), n.running_var.clone()) for n in _batch_norms(first)]
    before = [p.detach().clone() for p in first.parameters()]
    method.unlearn(first, scenes_values.inputs.setup, seed=3)
    method.unlearn(second, scenes_values.inputs.setup, seed=3)
    assert any(not torch.equal(a, b) for a, b in zip(before, first.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    for (mean, var), norm in zip(statistics, _batch_norms(first), strict=True):
        assert torch.equal(mean, norm.running_mean) and torch.equal(var, norm.running_var)


def test_per_sample_gradients_under_batch_norm_are_each_samples_own(scenes_values: LoadedStudy) -> None:
    """In eval mode batch norm is a fixed affine map per channel, so a sample's gradient under
    ``vmap`` equals the gradient of that sample alone, with no coupling to the batch."""
    model = scenes_values.references.original_model()
    grads = step_gradients(scenes_values, model, batch=3)
    per_sample = grads.per_sample_forget()
    batch = grads.forget_batch
    assert batch is not None
    shared = [p for _, p in model.backbone.named_parameters()]
    task = scenes_values.inputs.problem.task("segmentation")
    model.eval()
    for row in range(3):
        output = model(batch.inputs[row : row + 1])["segmentation"]
        loss = task.per_sample_loss(output, batch.labels["segmentation"][row : row + 1]).sum()
        alone = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared)])
        assert torch.allclose(per_sample[row], alone, atol=1e-5, rtol=1e-4)


def _issues(
    tmp: Path, params: dict[str, Any] | None = None, where: dict[str, Any] | None = None
) -> list[str]:
    raw = {
        "name": "bad",
        "problem": {"name": "scenes", "params": {**TINY, **(params or {})}},
        "forget": {"mode": "partial", "target_tasks": ["segmentation"], "where": where or {"has_ball": 1}},
        "method": {"name": "graddiff"},
        "output": str(tmp / "out"),
    }
    with pytest.raises(ConfigError) as caught:
        parse_study(raw)
    return [f"{issue.path}: {issue.message}" for issue in caught.value.issues]


def test_bad_scene_parameters_and_selectors_are_named_at_their_path(tmp_path: Path) -> None:
    (message,) = _issues(tmp_path, params={"rooms": 3})
    assert message.startswith("problem.params") and "rooms" in message
    (message,) = _issues(tmp_path, params={"image_size": 15})
    assert message.startswith("problem.params") and "image_size must be even" in message
    # a selector naming an object class the scenes do not hold
    (message,) = _issues(tmp_path, params={"num_object_classes": 2}, where={"has_pillar": 1})
    assert message.startswith("forget.where.has_pillar") and "has_ball, has_box" in message
    (message,) = _issues(tmp_path, where={"room": 7})
    assert message.startswith("forget.where.room") and "0..2" in message
    (message,) = _issues(tmp_path, where={"segmentation": 3})
    assert message.startswith("forget.where.segmentation") and "per pixel" in message
    assert not (tmp_path / "out").exists()


def test_the_tiny_scenes_study_runs_as_written_and_the_gate_judges_its_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """studies/scenes_tiny.yaml end to end (references, trials, MLflow, the candidate), then
    the release gate on that candidate: every check reaches a verdict, none errors."""
    from tune_unlearn.cli import main

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)  # the study's relative paths (output, mlruns) land here
    monkeypatch.setenv("TUNE_UNLEARN_CACHE", str(tmp_path / "cache"))
    study = root / "studies" / "scenes_tiny.yaml"
    assert main([str(study), "--output", "out", "--threads", "1"]) == 0
    candidate = tmp_path / "out" / "models" / "candidate.pt"
    assert candidate.exists()
    suite = root / "validators" / "release.yaml"
    code = main(
        ["gate", str(study), "--suite", str(suite), "--candidate", str(candidate), "--output", "gate"]
    )
    assert code in (0, 1)
    document = json.loads((tmp_path / "gate" / "gate.json").read_text())
    statuses = {check["name"]: check["status"] for check in document["checks"]}
    assert "error" not in statuses.values(), statuses
    assert statuses["probe/shared_label"] == "skipped"  # no per-sample class to share
    assert {"probe/dependent_neighbors", "forget_quality/gap", "attack/relearn_forget"} <= set(statuses)


def test_a_trial_reports_the_dense_tasks_figures_beside_their_scores(scenes_values: LoadedStudy) -> None:
    model = scenes_values.references.original_model()
    metrics = score(scenes_values.inputs, "unlearned", evaluate_scored(scenes_values.inputs, model))
    for figure in (
        "segmentation/pixel_accuracy",
        "depth/abs_rel",
        "normals/mean_angle",
        "normals/within_22_5",
    ):
        value = metrics[f"reported/unlearned/val/{figure}"]
        assert value >= 0 and (figure == "normals/mean_angle" or figure == "depth/abs_rel" or value <= 1)
    # partial mode: the forget set's depth labels do not count, so it reports no depth figure
    assert "reported/unlearned/forget/depth/abs_rel" not in metrics
    # the reported figure is the mean of the per-sample one over the set, by the task's own rule
    forget = scenes_values.inputs.sets.forget
    data = scenes_values.inputs.data
    task = scenes_values.inputs.problem.task("segmentation")
    with torch.no_grad():
        rows = forget.indices[forget.mask[:, 0]]
        pixel = task.reported_scores(
            model(data.inputs[rows])["segmentation"], data.labels["segmentation"][rows]
        )
    assert metrics["reported/unlearned/forget/segmentation/pixel_accuracy"] == pytest.approx(
        float(pixel["pixel_accuracy"].mean()), abs=1e-6
    )
