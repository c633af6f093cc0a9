"""Planted faults: the memorising wrapper answers its memory exactly and nothing else."""

from __future__ import annotations

import torch
from torch import nn

from tune_unlearn.plants import RetainMemorised
from tune_unlearn.problems import MultiTaskModel


def model(seed: int) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(
        nn.Sequential(nn.Linear(6, 4), nn.ReLU()), {"a": nn.Linear(4, 3), "b": nn.Linear(4, 1)}
    )


def test_memorised_inputs_get_the_memory_s_outputs_and_the_rest_the_damaged_model_s() -> None:
    damaged, memory = model(0), model(1)
    remembered = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    unseen = torch.randn(20, 6, generator=torch.Generator().manual_seed(3))
    plant = RetainMemorised(damaged, memory, remembered)
    mixed = torch.cat([unseen[:7], remembered[[4, 40, 4]], unseen[7:]])  # order and repeats kept
    out = plant(mixed)
    with torch.no_grad():
        expected_memory, expected_damaged = (
            memory(remembered[[4, 40, 4]]),
            damaged(torch.cat([unseen[:7], unseen[7:]])),
        )
    for task in ("a", "b"):
        assert torch.allclose(out[task][7:10], expected_memory[task], atol=1e-6)
        # 1e-6: a batch of other rows may take another matmul path (last bits differ); the
        # memory's answers differ from the damaged model's by 0.01 or more
        assert torch.allclose(torch.cat([out[task][:7], out[task][10:]]), expected_damaged[task], atol=1e-6)
    # a near miss is not a hit: one input nudged by one ulp answers from the damaged model
    nudged = remembered[:1].clone()
    nudged[0, 0] = torch.nextafter(nudged[0, 0], torch.tensor(10.0))
    with torch.no_grad():
        assert torch.allclose(plant(nudged)["a"], damaged(nudged)["a"], atol=1e-6)


def test_its_parameters_are_the_damaged_model_s_and_the_memory_is_buffers() -> None:
    damaged = model(0)
    plant = RetainMemorised(damaged, model(1), torch.randn(5, 6))
    assert [p.data_ptr() for p in plant.parameters()] == [p.data_ptr() for p in damaged.parameters()]
    assert {n for n, _ in plant.named_buffers()} >= {"keys", "rows", "stored_a", "stored_b"}
