"""`scenes`: procedural indoor scenes with exact depth and surface normals, for dense
multi-task learning as on NYUv2 (segmentation, depth, normals) on a ResNet-style encoder with
batch norm.

Each scene is a room — floor, ceiling, two side walls and a back wall, as planes — holding one
to ``max_objects`` objects resting on the floor, each of one of ``num_object_classes`` classes:
``ball`` (a sphere), ``box`` (a cube), ``pillar`` (a capped vertical cylinder) and ``slab`` (a
low wide box). A pinhole camera at the origin looks along +z (y up). Every pixel's ray is
intersected with every surface analytically, so the label maps are exact by construction:

- ``segmentation``: the class of the nearest surface hit: 0 floor, 1 wall, 2 ceiling, then
  ``3 + k`` for object class ``k``;
- ``depth``: the hit point's z coordinate (z-depth, as NYUv2's depth maps);
- ``normals``: the surface's unit normal at the hit point, in camera coordinates, facing the
  camera.

The image is the scene shaded under one directional light (Lambertian, with ambient light):
textured floor (a checkerboard in world coordinates) and walls (stripes), objects of a random
colour, pixel noise. Shading carries the normals and texture scale carries depth, so the three
tasks share structure, as in real scenes.

Attributes, to select and probe by: ``room`` (the room type: its size, wall colour and texture
period), ``lighting`` (the light's direction: left, overhead, right) and ``has_<class>`` (1 when
an object of that class is visible). With ``correlation`` ρ a scene is, with probability ρ,
*typical* of its room: it holds an object of class ``room mod num_object_classes`` and is lit
as ``room mod 3``; otherwise its objects and light are drawn independently of the room.
Deterministic by ``seed``; rendered in chunks to bound memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tune_unlearn.problems._base import (
    MultiTaskData,
    MultiTaskModel,
    Problem,
    Schedule,
    TrainRecipe,
    schedule_named,
)
from tune_unlearn.problems._dense import DepthTask, NormalsTask, SegmentationTask

OBJECT_CLASSES = ("ball", "box", "pillar", "slab")
SURFACES = ("floor", "wall", "ceiling")
ROOMS = ("bedroom", "kitchen", "office", "hall")
LIGHTS = ("left", "overhead", "right")
CAMERA_HEIGHT = 1.2  # the floor is the plane y = −CAMERA_HEIGHT
CEILING = 1.3
FIELD_OF_VIEW = math.radians(60.0)
#: Per room type: half width, depth of the back wall, wall colour, texture period.
_ROOM_WIDTH = torch.tensor([1.8, 2.2, 2.6, 3.0])
_ROOM_DEPTH = torch.tensor([4.5, 5.5, 6.5, 7.5])
_WALL_COLOUR = torch.tensor([[0.75, 0.65, 0.55], [0.60, 0.70, 0.75], [0.70, 0.70, 0.62], [0.62, 0.58, 0.70]])
_PERIOD = torch.tensor([0.5, 0.7, 0.4, 0.6])
_LIGHT = torch.tensor([[-0.6, 0.7, -0.4], [0.0, 1.0, -0.3], [0.6, 0.7, -0.4]])
_AMBIENT = 0.35
_OBJECT_COLOUR = torch.tensor([[0.85, 0.2, 0.15], [0.2, 0.45, 0.85], [0.9, 0.8, 0.2], [0.3, 0.75, 0.3]])
_INF = float("inf")


def ray_directions(size: int, field_of_view: float = FIELD_OF_VIEW) -> Tensor:
    """``[size, size, 3]`` ray directions through pixel centres, scaled so that z = 1: the ray
    parameter ``t`` of a hit is then its z-depth."""
    half = math.tan(field_of_view / 2)
    grid = ((torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1) * half
    x = grid.view(1, size).expand(size, size)
    y = -grid.view(size, 1).expand(size, size)  # row 0 is the top of the image
    return torch.stack([x, y, torch.ones(size, size)], dim=-1)


def intersect_sphere(rays: Tensor, centre: Tensor, radius: Tensor) -> tuple[Tensor, Tensor]:
    """Ray parameter of the first hit (``inf`` where none) and the outward unit normal there,
    for rays ``[..., 3]`` from the origin and spheres ``centre [..., 3]``, ``radius [...]``
    (broadcast against the rays)."""
    a = (rays * rays).sum(-1)
    b = -2 * (rays * centre).sum(-1)
    c = (centre * centre).sum(-1) - radius.square()
    disc = b.square() - 4 * a * c
    t = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
    t = torch.where((disc >= 0) & (t > 0), t, torch.full_like(t, _INF))
    normal = F.normalize(rays * t.clamp(max=1e6).unsqueeze(-1) - centre, dim=-1)
    return t, normal


def intersect_box(rays: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """First hit of axis-aligned boxes ``[low, high]`` (each ``[..., 3]``), by slabs; the
    normal is that of the face entered."""
    t1, t2 = low / rays, high / rays
    near = torch.minimum(t1, t2)
    entry, axis = near.max(dim=-1)
    exit_ = torch.maximum(t1, t2).min(dim=-1).values
    t = torch.where((exit_ >= entry) & (entry > 0), entry, torch.full_like(entry, _INF))
    direction = rays.expand_as(near).gather(-1, axis.unsqueeze(-1)).squeeze(-1)
    normal = F.one_hot(axis, 3).float() * -direction.sign().unsqueeze(-1)
    return t, normal


def intersect_cylinder(rays: Tensor, base: Tensor, radius: Tensor, height: Tensor) -> tuple[Tensor, Tensor]:
    """First hit of vertical cylinders standing on ``base [..., 3]`` (the centre of the bottom
    disc), with their top cap; the side's normal is horizontal, the cap's points up."""
    rx, ry, rz = rays.unbind(-1)
    cx, cy, cz = base.unbind(-1)
    a = rx.square() + rz.square()
    b = -2 * (rx * cx + rz * cz)
    c = cx.square() + cz.square() - radius.square()
    disc = b.square() - 4 * a * c
    side = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
    y = side * ry
    side = torch.where((disc >= 0) & (side > 0) & (y >= cy) & (y <= cy + height), side, _INF)
    top = (cy + height) / ry
    inside = (top * rx - cx).square() + (top * rz - cz).square() <= radius.square()
    top = torch.where((top > 0) & inside, top, _INF)
    t = torch.minimum(side, top)
    hit = rays * side.clamp(max=1e6).unsqueeze(-1) - base
    side_normal = F.normalize(hit * torch.tensor([1.0, 0.0, 1.0]), dim=-1)
    up = torch.zeros_like(side_normal)
    up[..., 1] = 1.0
    normal = torch.where((top < side).unsqueeze(-1), up, side_normal)
    return t, normal


def intersect_room(rays: Tensor, half_width: Tensor, depth: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest room surface for rays ``[S, S, 3]`` in rooms ``half_width [n]``, ``depth [n]``:
    ray parameter ``[n, S, S]``, normal ``[n, S, S, 3]`` and surface index (0 floor, 1 wall,
    2 ceiling). Every ray from inside the room hits one."""
    rx, ry, _ = rays.unbind(-1)
    n = len(half_width)
    w, d = half_width.view(n, 1, 1), depth.view(n, 1, 1)
    rx, ry = rx.expand(n, -1, -1), ry.expand(n, -1, -1)
    candidates = torch.stack(
        [
            torch.where(ry < 0, -CAMERA_HEIGHT / ry, _INF),  # floor
            torch.where(ry > 0, CEILING / ry, _INF),  # ceiling
            torch.where(rx < 0, -w / rx, _INF),  # left wall
            torch.where(rx > 0, w / rx, _INF),  # right wall
            d.expand_as(rx),  # back wall: rays have z = 1
        ]
    )
    t, which = candidates.min(dim=0)
    normals = torch.tensor(
        [[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
    )
    surface = torch.tensor([0, 2, 1, 1, 1])[which]
    return t, normals[which], surface


@dataclass
class ScenesProblem(Problem):
    """Rendered indoor scenes; segmentation, depth and normals on a ResNet encoder with batch
    norm and one decoder per task."""

    #: The default size: one retrain takes about two minutes on two CPU cores (RESULTS.md), so
    #: that retraining is visibly dear; studies/scenes_tiny.yaml holds the test size.
    num_samples: int = 2000
    image_size: int = 32
    num_object_classes: int = 3
    num_rooms: int = 3
    max_objects: int = 3
    correlation: float = 0.5
    noise: float = 0.03
    seed: int = 0
    #: Encoder width: the stem's channels; the two downsampling stages double them.
    channels: int = 16
    #: Residual blocks per encoder stage.
    blocks: int = 1
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 32
    schedule: Schedule = "cosine"

    def __post_init__(self) -> None:
        schedule_named(self.schedule)
        if not 1 <= self.num_object_classes <= len(OBJECT_CLASSES):
            raise ValueError(
                f"num_object_classes must be in 1..{len(OBJECT_CLASSES)}, got {self.num_object_classes}"
            )
        if not 1 <= self.num_rooms <= len(ROOMS):
            raise ValueError(f"num_rooms must be in 1..{len(ROOMS)}, got {self.num_rooms}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be at least 1, got {self.max_objects}")
        if not 0.0 <= self.correlation <= 1.0:
            raise ValueError(f"correlation must be in [0, 1], got {self.correlation}")
        if self.image_size < 8 or self.image_size % 2:
            raise ValueError(
                "image_size must be even and at least 8 (the encoder halves it, the decoders "
                f"double it back), got {self.image_size}"
            )
        if self.channels < 1 or self.blocks < 1:
            raise ValueError(f"channels and blocks must be at least 1, got {self.channels}, {self.blocks}")
        if self.num_samples < 10:
            raise ValueError(f"num_samples must be at least 10, got {self.num_samples}")
        self.object_classes = OBJECT_CLASSES[: self.num_object_classes]
        self.tasks = (
            SegmentationTask("segmentation", num_classes=len(SURFACES) + self.num_object_classes),
            DepthTask("depth"),
            NormalsTask("normals"),
        )
        self.attributes = ("room", "lighting", *(f"has_{name}" for name in self.object_classes))
        self.attribute_levels = {
            "room": self.num_rooms,
            "lighting": len(LIGHTS),
            **{f"has_{name}": 2 for name in self.object_classes},
        }

    def _layouts(self, generator: torch.Generator) -> dict[str, Tensor]:
        """Every scene's room, light and objects (class, position, size), drawn up front so the
        data do not depend on the rendering chunk size."""
        n, k = self.num_samples, self.max_objects
        room = torch.randint(self.num_rooms, (n,), generator=generator)
        typical = torch.rand(n, generator=generator) < self.correlation
        lighting = torch.where(
            typical, room % len(LIGHTS), torch.randint(len(LIGHTS), (n,), generator=generator)
        )
        count = torch.randint(1, k + 1, (n,), generator=generator)
        kind = torch.randint(self.num_object_classes, (n, k), generator=generator)
        kind[:, 0] = torch.where(typical, room % self.num_object_classes, kind[:, 0])
        present = torch.arange(k).view(1, k) < count.view(n, 1)
        half_width, depth = _ROOM_WIDTH[room], _ROOM_DEPTH[room]
        margin = 0.5
        x = (torch.rand(n, k, generator=generator) * 2 - 1) * (half_width.view(n, 1) - margin)
        z = 2.0 + torch.rand(n, k, generator=generator) * (depth.view(n, 1) - 2.5 - margin)
        size = 0.35 + 0.35 * torch.rand(n, k, generator=generator)
        # Each class has its own hue (as real objects have typical materials), varied per object.
        colour = 0.7 * _OBJECT_COLOUR[kind] + 0.3 * torch.rand(n, k, 3, generator=generator)
        return {
            "room": room,
            "lighting": lighting,
            "kind": kind,
            "present": present,
            "x": x,
            "z": z,
            "size": size,
            "colour": colour,
            "noise_seed": torch.randint(2**31 - 1, (n,), generator=generator),
        }

    def render(self, layout: dict[str, Tensor], rows: slice) -> dict[str, Tensor]:
        """Image ``[n, 3, S, S]``, segmentation ``[n, S, S]``, depth ``[n, S, S]`` and normals
        ``[n, 3, S, S]`` of the scenes at ``rows``."""
        rays = ray_directions(self.image_size)
        room = layout["room"][rows]
        n = len(room)
        t, normal, label = intersect_room(rays, _ROOM_WIDTH[room], _ROOM_DEPTH[room])
        albedo = self._room_albedo(rays, t, label, room)
        for slot in range(self.max_objects):
            kind = layout["kind"][rows, slot]
            present = layout["present"][rows, slot]
            hit_t, hit_normal = self._object(
                rays, kind, layout["x"][rows, slot], layout["z"][rows, slot], layout["size"][rows, slot]
            )
            nearer = present.view(n, 1, 1) & (hit_t < t)
            t = torch.where(nearer, hit_t, t)
            normal = torch.where(nearer.unsqueeze(-1), hit_normal, normal)
            label = torch.where(nearer, len(SURFACES) + kind.view(n, 1, 1), label)
            albedo = torch.where(nearer.unsqueeze(-1), layout["colour"][rows, slot].view(n, 1, 1, 3), albedo)
        light = F.normalize(_LIGHT[layout["lighting"][rows]], dim=-1).view(n, 1, 1, 3)
        shade = _AMBIENT + (1 - _AMBIENT) * (normal * light).sum(-1).clamp(min=0)
        image = albedo * shade.unsqueeze(-1)
        noise = torch.stack(
            [
                torch.randn(
                    self.image_size, self.image_size, 3, generator=torch.Generator().manual_seed(int(s))
                )
                for s in layout["noise_seed"][rows]
            ]
        )
        image = (image + self.noise * noise).clamp(0.0, 1.0)
        return {
            "image": image.permute(0, 3, 1, 2).contiguous(),
            "segmentation": label,
            "depth": t,
            "normals": normal.permute(0, 3, 1, 2).contiguous(),
        }

    def _room_albedo(self, rays: Tensor, t: Tensor, surface: Tensor, room: Tensor) -> Tensor:
        """Floor checkerboard and wall stripes in world coordinates, a plain ceiling."""
        n = len(room)
        points = rays.unsqueeze(0) * t.unsqueeze(-1)
        period = _PERIOD[room].view(n, 1, 1)
        checker = ((points[..., 0] / period).floor() + (points[..., 2] / period).floor()) % 2
        stripes = ((points[..., 0] + points[..., 2] + points[..., 1]) / period).floor() % 2
        floor = (0.35 + 0.3 * checker).unsqueeze(-1).expand(-1, -1, -1, 3)
        wall = _WALL_COLOUR[room].view(n, 1, 1, 3) * (0.85 + 0.15 * stripes).unsqueeze(-1)
        ceiling = torch.full_like(wall, 0.9)
        return torch.where(
            (surface == 0).unsqueeze(-1), floor, torch.where((surface == 1).unsqueeze(-1), wall, ceiling)
        )

    def _object(
        self, rays: Tensor, kind: Tensor, x: Tensor, z: Tensor, size: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Each scene's object in one slot, whatever its class: every class's intersection,
        then the one of the object's class (cheap at these sizes, and branch-free)."""
        n = len(kind)
        floor = -CAMERA_HEIGHT
        r = rays.unsqueeze(0)

        def grid(v: Tensor) -> Tensor:
            return v.view(n, 1, 1)

        centre = torch.stack([x, floor + size, z], dim=-1).view(n, 1, 1, 3)
        ball = intersect_sphere(r, centre, grid(size))
        cube = torch.stack([size, 2 * size, size], dim=-1).view(n, 1, 1, 3)
        bottom = torch.stack([x, torch.full_like(x, floor), z], dim=-1).view(n, 1, 1, 3)
        box = intersect_box(
            r, bottom - cube * torch.tensor([1.0, 0.0, 1.0]), bottom + cube * torch.tensor([1.0, 1.0, 1.0])
        )
        pillar = intersect_cylinder(r, bottom, grid(0.6 * size), grid(4 * size))
        flat = torch.stack([2 * size, 0.6 * size, 1.4 * size], dim=-1).view(n, 1, 1, 3)
        slab = intersect_box(r, bottom - flat * torch.tensor([1.0, 0.0, 1.0]), bottom + flat)
        shapes = (ball, box, pillar, slab)[: self.num_object_classes]
        t = torch.stack([s[0] for s in shapes])
        normals = torch.stack([s[1] for s in shapes])
        pick = kind.view(1, n, 1, 1).expand(1, n, *t.shape[2:])
        chosen_t = t.gather(0, pick).squeeze(0)
        chosen_normal = normals.gather(0, pick.unsqueeze(-1).expand(1, *normals.shape[1:])).squeeze(0)
        return chosen_t, chosen_normal

    def load_data(self) -> MultiTaskData:
        layout = self._layouts(torch.Generator().manual_seed(self.seed))
        n, size = self.num_samples, self.image_size
        images = torch.empty(n, 3, size, size)
        segmentation = torch.empty(n, size, size, dtype=torch.long)
        depth = torch.empty(n, size, size)
        normals = torch.empty(n, 3, size, size)
        chunk = max(1, 2**16 // (size * size))  # bounded memory at any size
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            part = self.render(layout, rows)
            images[rows], segmentation[rows] = part["image"], part["segmentation"]
            depth[rows], normals[rows] = part["depth"], part["normals"]
        visible = F.one_hot(segmentation.flatten(1), len(SURFACES) + self.num_object_classes).amax(dim=1)
        attributes = {"room": layout["room"], "lighting": layout["lighting"]}
        for index, name in enumerate(self.object_classes):
            attributes[f"has_{name}"] = visible[:, len(SURFACES) + index]
        return MultiTaskData(
            inputs=images,
            labels={"segmentation": segmentation, "depth": depth, "normals": normals},
            attributes=attributes,
        )

    def build_model(self) -> MultiTaskModel:
        c = self.channels
        encoder = Encoder(c, self.blocks)
        heads = {task.name: Decoder(4 * c, c, task.output_shape((1, 1))[0]) for task in self.tasks}
        return MultiTaskModel(encoder, heads)

    def recipe(self) -> TrainRecipe:
        return TrainRecipe(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, schedule=self.schedule)

    def finetune_lr(self) -> float:
        """A tenth of the training rate: at the training rate itself one Adam step of the
        relearning attack on 16 scenes wrecks every honest retrain's segmentation (forget-set
        score 0.6 to 0.05–0.29), so the attack's calibration can run one step only and a
        suppressed class goes unseen; at a tenth the retrains hold for all 10 steps
        (benchmarks/RESULTS.md, "Gate power on scenes")."""
        return self.lr / 10


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3×3 convolutions with batch norm and a residual connection
    (a strided 1×1 convolution where the shape changes), as torchvision's ``BasicBlock``;
    ``dilation`` widens the second stage's view without losing resolution, as DeepLab's
    dilated ResNets do for dense prediction."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            inputs, outputs, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Encoder(nn.Sequential):
    """A ResNet-style encoder: a 3×3 stem, then three stages of ``blocks`` basic blocks at
    ``c``, ``2c`` and ``4c`` channels; the second halves the resolution, the third is dilated
    instead of strided (output stride 2, as dense-prediction backbones keep small objects):
    ``[4c, S/2, S/2]``.

    Written here rather than taken from torchvision: its ResNets fix the widths at 64–512, and
    the test size needs a few channels."""

    def __init__(self, channels: int, blocks: int) -> None:
        c = channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        for inputs, outputs, stride, dilation in ((c, c, 1, 1), (c, 2 * c, 2, 1), (2 * c, 4 * c, 1, 2)):
            layers.append(BasicBlock(inputs, outputs, stride, dilation))
            layers.extend(BasicBlock(outputs, outputs, dilation=dilation) for _ in range(blocks - 1))
        super().__init__(*layers)


class Decoder(nn.Module):
    """One task's head: a 3×3 convolution on the shared features, bilinear upsampling back to
    the input's resolution, a 3×3 convolution and a 1×1 projection to the task's channels."""

    def __init__(self, features: int, width: int, outputs: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(features, width, 3, padding=1)
        self.refine = nn.Conv2d(width, width, 3, padding=1)
        self.project = nn.Conv2d(width, outputs, 1)

    def forward(self, features: Tensor) -> Tensor:
        x = F.relu(self.reduce(features))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.project(F.relu(self.refine(x)))  # type: ignore[no-any-return]
