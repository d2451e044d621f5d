"""Training data: the synthesized pairs as tensors, with edges, class indices and augmentation.

Each item is one pair from `data/pairs/<split>` (see the synthesize stage), resized to the training
resolution, with:

    image       (3, H, W) float [0, 1]   I, the photo with the pasted object
    background  (3, H, W) float [0, 1]   I_G, the ground truth
    mask        (1, H, W) float {0, 1}   M_G, 1 = pasted object
    seg         (H, W) long              segmentation of I, contiguous classes (0 = unlabeled)
    bg_seg      (H, W) long              segmentation of I_G
    edges       (1, H, W) float {0, 1}   Canny edges of I (the inpainter's known edges)
    bg_edges    (1, H, W) float {0, 1}   Canny edges of I_G (the edge inpainter's target)
    sdf         (1, H, W) float [-1, 1]  signed distance map phi of M_G, when `sdf_normalization` is set
                                         (joint training's MEL; computed here, in the loader workers,
                                         rather than per step on the training device)
    offsets     (2, H, W) float          each thing pixel's offset (dy, dx) in px to the center of its
                                         instance in I (from the pair's instance maps; without them, the
                                         pasted object's pixels only), and
    offset_weight (1, H, W) float {0, 1} where that target is known (components.instances), when
                                         `offsets` is set (the segmenter's offset head)

With `background_share` > 0, that share of the training items shows the bare background I_G with its
own segmentation and an empty mask: the segmenter also sees scenes with nothing pasted, many of them
without any person, so it learns that a scene need not contain a target.

With `mask_source="random"` the object is ignored: the photo is the background itself and the hole a
free-form brush mask with a ratio drawn over the evaluation buckets (the paper's random-mask
pretraining, Tables II and III). With `object_pairs` = N, the object-mask items come from the first N
pairs only, repeated to the split's length (item i shows pair i mod N, with item i's own random draws):
a smaller object-mask training set for as many updates (the paper's Table III).

Augmentation (albumentations: flip, brightness/contrast) applies the same draw to I and I_G and to
every mask, so I == I_G outside M_G still holds. Every random draw of
item i in epoch e comes from the seed (seed, e, i), so an item can be reproduced alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from components.coco import CROWD
from components.instances import center_offsets, pasted_offsets
from components.masks import SdfNormalization, canny_edges, free_form_mask, signed_distance, to_gray

MaskSource = Literal["object", "random"]


@dataclass(frozen=True)
class PairsConfig:
    root: str  # data/pairs
    image_size: int
    class_ids: tuple[int, ...]  # COCO category ids; contiguous class i + 1 is class_ids[i]
    bucket_edges: tuple[float, ...]
    canny_sigma: float = 2.0
    seed: int = 0
    sdf_normalization: SdfNormalization | None = None  # set: items carry phi of M_G as "sdf"
    background_share: float = 0.0  # training items shown as the bare I_G (its own labels, an empty mask)
    offsets: bool = False  # items carry the offset head's target
    labels_cover_mask: bool = False  # S labels the pasted object on all of M_G (summary.json: label_alpha <= 0.1)


def read_categories(pairs_root: str | Path) -> list[dict]:
    """The category list written by the synthesize stage (things and stuff, sorted by id)."""
    summary = Path(pairs_root) / "summary.json"
    if not summary.is_file():
        raise FileNotFoundError(f"no pairs at {pairs_root}: {summary} is missing (run `dvc repro synthesize`)")
    return json.loads(summary.read_text())["categories"]


class PairsDataset(Dataset):
    def __init__(self, config: PairsConfig, split: str, augment: bool, mask_source: MaskSource = "object",
                 object_pairs: int | None = None):
        import albumentations as A  # on use: its import may look for updates unless told not to

        manifest = Path(config.root) / split / "manifest.jsonl"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (run `dvc repro synthesize`)")
        self.records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        self.config, self.split, self.augment, self.mask_source = config, split, augment, mask_source
        if object_pairs is not None and not 0 < object_pairs <= len(self.records):
            raise ValueError(f"object_pairs is {object_pairs}, but the {split} split of {config.root} has "
                             f"{len(self.records)} pairs (pretrain_inpainter.object_pairs: 1 to "
                             f"{len(self.records)}, or null)")
        self.object_pairs = object_pairs
        self.epoch = 0
        self.lut = np.zeros(256, np.int64)  # COCO id -> contiguous class
        for index, category_id in enumerate(config.class_ids):
            self.lut[category_id] = index + 1
        self.transform = A.Compose(
            [A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(0.1, 0.1, p=0.5)],
            additional_targets={"background": "image", "seg": "mask", "bg_seg": "mask", "instances": "mask"},
        )

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _read_raw(self, name: str, kind: Literal["rgb", "labels", "mask"]) -> np.ndarray:
        path = Path(self.config.root) / self.split / name
        array = cv2.imread(str(path), cv2.IMREAD_COLOR if kind == "rgb" else cv2.IMREAD_UNCHANGED)
        if array is None:
            raise FileNotFoundError(f"pair file missing or unreadable: {path}")
        return array

    def _resize_mask(self, mask: np.ndarray) -> np.ndarray:
        """A (h, w) bool or {0, 1} mask at the working resolution, kept wherever it has any weight."""
        size = self.config.image_size
        if mask.shape[:2] == (size, size):
            return mask.astype(np.uint8)
        smooth = cv2.INTER_AREA if mask.shape[0] > size else cv2.INTER_LINEAR
        return (cv2.resize(mask.astype(np.float32), (size, size), interpolation=smooth) > 0).astype(np.uint8)

    def _read(self, name: str, kind: Literal["rgb", "labels", "mask"]) -> np.ndarray:
        """A pair file at the working resolution. Images are area-/linearly resized; label maps take the
        nearest label; the mask is resized like the images and kept wherever it has any weight, so it
        still covers every pixel where the resized I and I_G differ."""
        array = self._read_raw(name, kind)
        size = self.config.image_size
        if kind == "mask":
            array = self._resize_mask(array > 127)
        elif array.shape[:2] != (size, size):
            smooth = cv2.INTER_AREA if array.shape[0] > size else cv2.INTER_LINEAR
            interp = cv2.INTER_NEAREST if kind == "labels" else smooth
            array = cv2.resize(array, (size, size), interpolation=interp)
        return np.ascontiguousarray(array[..., ::-1]) if kind == "rgb" else array

    def _pasted_object(self, files: dict, known: bool) -> tuple[np.ndarray, int | None]:
        """Where S of I labels the pasted object, at the working resolution, and its number in the instance
        map (None without one). Labels that cover all of M_G (synthesize.label_alpha 0.1: every pixel the
        paste changed) are resized like M_G (any weight), so that they still cover it; labels of the
        object's core alone (0.5) are resized as labels are (nearest)."""
        if known:
            instances = self._read_raw(files["instances"], "labels")
            number = int(instances[instances != CROWD].max(initial=0))
            pasted = instances == number
        else:
            pasted = self._read_raw(files["segs"], "labels") != self._read_raw(files["bg_segs"], "labels")
            number = None
        if self.config.labels_cover_mask:
            return self._resize_mask(pasted), number
        size = self.config.image_size
        nearest = cv2.resize(pasted.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        return nearest, number

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        source = index % self.object_pairs if self.object_pairs and self.mask_source == "object" else index
        files = self.records[source]["files"]
        rng = np.random.default_rng([self.config.seed, self.epoch, index])
        background = self._read(files["backgrounds"], "rgb")
        bg_seg = self._read(files["bg_segs"], "labels")
        known = self.config.offsets and "instances" in files  # the pair keeps its instance maps
        instances = self._read(files["bg_instances"], "labels") if known else np.zeros(bg_seg.shape, np.uint16)
        if self.mask_source == "random":
            edges = self.config.bucket_edges
            bucket = int(rng.integers(len(edges) - 1))
            lo, hi = max(edges[bucket], 0.01), edges[bucket + 1]
            image, seg = background.copy(), bg_seg.copy()
            mask = free_form_mask(rng, self.config.image_size, target_ratio=(lo, hi)).astype(np.uint8)
        elif self.augment and self.config.background_share > 0 and rng.random() < self.config.background_share:
            # the background alone: a scene with nothing pasted on it (some with no target object at all)
            image, seg, mask = background.copy(), bg_seg.copy(), np.zeros(bg_seg.shape, np.uint8)
        else:
            image = self._read(files["images"], "rgb")
            mask = self._read(files["masks"], "mask")
            pasted, number = self._pasted_object(files, known)
            category = self.records[source]["object"]["category_id"]
            labelled = (pasted > 0) & (mask > 0)
            seg = np.where(labelled, category, bg_seg).astype(bg_seg.dtype)  # S == S_G outside M_G
            if known:  # I's instances: the background's, the pasted object one more
                instances = np.where(labelled, number, instances).astype(instances.dtype)
        if self.augment:
            self.transform.set_random_seed(int(rng.integers(2**31)))
            out = self.transform(image=image, background=background, mask=mask, seg=seg, bg_seg=bg_seg,
                                 instances=instances)
            image, background, mask, seg, bg_seg, instances = (
                out[k] for k in ("image", "background", "mask", "seg", "bg_seg", "instances"))
        sigma = self.config.canny_sigma
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255,
            "background": torch.from_numpy(np.ascontiguousarray(background)).permute(2, 0, 1).float() / 255,
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).float()[None],
            "seg": torch.from_numpy(self.lut[seg]),
            "bg_seg": torch.from_numpy(self.lut[bg_seg]),
            "edges": torch.from_numpy(canny_edges(to_gray(np.ascontiguousarray(image)), sigma))[None],
            "bg_edges": torch.from_numpy(canny_edges(to_gray(np.ascontiguousarray(background)), sigma))[None],
        }
        if self.config.sdf_normalization is not None:
            item["sdf"] = torch.from_numpy(signed_distance(mask > 0, self.config.sdf_normalization))[None]
        if self.config.offsets:
            if known:  # every thing instance of I, supervised but on crowds
                target, weight = center_offsets(instances, CROWD)
            else:  # the pasted object's pixels only (M_G's: the labels at label_alpha 0.1)
                target, weight = pasted_offsets((mask > 0) & (self.mask_source == "object"))
            item["offsets"], item["offset_weight"] = torch.from_numpy(target), torch.from_numpy(weight)[None]
        return item


class WithBuckets(PairsDataset):
    """Held-out pairs with their mask-ratio bucket (from the manifest) in each item: the evaluations'."""

    def __getitem__(self, index: int) -> dict:
        return {**super().__getitem__(index), "bucket": self.records[index]["bucket"]}


class PairsDataModule(L.LightningDataModule):
    def __init__(self, config: PairsConfig, batch_size: int, num_workers: int, mask_source: MaskSource = "object",
                 object_pairs: int | None = None):
        super().__init__()
        self.config, self.batch_size, self.num_workers, self.mask_source = config, batch_size, num_workers, mask_source
        self.object_pairs = object_pairs  # the training split's object-mask items: its first N pairs (None: all)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = PairsDataset(self.config, "train", augment=True, mask_source=self.mask_source,
                                      object_pairs=self.object_pairs)
        self.val_set = PairsDataset(self.config, "val", augment=False, mask_source=self.mask_source)
        # the training loader drops the last partial batch: fewer pairs than one batch would train nothing
        if len(self.train_set) < self.batch_size:
            raise ValueError(f"the train split of {self.config.root} has {len(self.train_set)} pairs, fewer than "
                             f"one batch (batch_size {self.batch_size}): nothing would be trained; synthesize more "
                             "pairs (synthesize.pairs.train) or lower the stage's batch_size")
        if len(self.val_set) == 0:
            raise ValueError(f"the val split of {self.config.root} has no pairs: nothing to validate or to pick "
                             "the best checkpoint by (synthesize.pairs.val)")

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.config.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          generator=generator, drop_last=shuffle, persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


def pairs_config(
    pairs_root: str, image_size: int, canny_sigma: float, seed: int, sdf_normalization: SdfNormalization | None = None,
    offsets: bool = False,
) -> tuple[PairsConfig, list[dict], list[int]]:
    """The dataset config for `pairs_root`, its categories, and the contiguous indices of the target classes."""
    summary_path = Path(pairs_root) / "summary.json"
    categories = read_categories(pairs_root)
    summary = json.loads(summary_path.read_text())
    class_ids = tuple(c["id"] for c in categories)
    targets = [class_ids.index(cid) + 1 for cid in summary["target_category_ids"]]
    cover = bool(summary.get("labels_cover_mask", False))  # every pixel the paste changed is labelled
    config = PairsConfig(root=pairs_root, image_size=image_size, class_ids=class_ids,
                         bucket_edges=tuple(summary["bucket_edges"]), canny_sigma=canny_sigma, seed=seed,
                         sdf_normalization=sdf_normalization, offsets=offsets,
                         labels_cover_mask=cover)
    return config, categories, targets


class EpochSetter(L.Callback):
    """Tells the training set the epoch (its per-item seeds) and, for the first `random_epochs`, to use
    free-form masks instead of the pasted objects."""

    def __init__(self, random_epochs: int = 0):
        self.random_epochs = random_epochs

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        dataset = trainer.datamodule.train_set
        dataset.set_epoch(trainer.current_epoch)
        dataset.mask_source = "random" if trainer.current_epoch < self.random_epochs else "object"


class RandomPairs(Dataset):
    """Random tensors shaped like `PairsDataset` items (a rectangle hole, its phi): for benchmarks and
    device tests that must not read data. Item i is the same for any worker (seeded by i)."""

    def __init__(self, size: int, length: int, num_classes: int):
        self.size, self.length, self.num_classes = size, length, num_classes
        mask = np.zeros((size, size), bool)
        mask[size // 4 : size // 2, size // 4 : 3 * size // 4] = True
        self.mask = torch.from_numpy(mask).float()[None]
        self.sdf = torch.from_numpy(signed_distance(mask))[None]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        s, k = self.size, self.num_classes
        return {"image": torch.rand(3, s, s, generator=g), "background": torch.rand(3, s, s, generator=g),
                "mask": self.mask, "sdf": self.sdf,
                "seg": torch.randint(0, k, (s, s), generator=g), "bg_seg": torch.randint(0, k, (s, s), generator=g),
                "edges": (torch.rand(1, s, s, generator=g) > 0.9).float(),
                "bg_edges": (torch.rand(1, s, s, generator=g) > 0.9).float()}
