"""Instances cut along the contact band (components.instances): touching objects become separate instances
that still cover every pixel of their class; the contact targets mark where instances touch."""

from __future__ import annotations

import numpy as np

from components.coco import CROWD
from components.instances import contact_target, instance_contacts, split_instances


def _two_touching(height: int = 20, width: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.zeros((height, width), np.int64)
    labels[4:16, 5:15] = 1  # left person
    labels[4:16, 15:25] = 1  # right person, touching it along x = 14 | 15
    left = np.zeros(labels.shape, bool)
    left[4:16, 5:15] = True
    return labels, left, (labels == 1) & ~left


def test_without_contact_touching_objects_are_one_component():
    labels, left, right = _two_touching()
    instances = split_instances(labels, [1])
    assert len(instances) == 1 and (instances[0][1] == (left | right)).all()


def test_a_contact_band_splits_them_and_every_pixel_stays_covered():
    labels, left, right = _two_touching()
    contact = np.zeros(labels.shape, np.float32)
    contact[4:16, 13:17] = 0.9  # the band: two pixels on either side of the contact line
    instances = split_instances(labels, [1], contact)
    assert len(instances) == 2
    masks = sorted((m for _, m in instances), key=lambda m: np.nonzero(m)[1].mean())
    assert (masks[0] | masks[1]).sum() == (left | right).sum() and not (masks[0] & masks[1]).any()
    for mask, truth in zip(masks, (left, right), strict=True):
        assert (mask & truth).sum() / (mask | truth).sum() > 0.9


def test_a_band_across_one_object_does_not_cut_off_slivers():
    """A band that only nicks an object (a sliver smaller than min_core beyond it) leaves it whole."""
    labels = np.zeros((20, 20), np.int64)
    labels[2:18, 4:16] = 1
    contact = np.zeros(labels.shape, np.float32)
    contact[2:18, 13:15] = 1.0  # leaves a 1-px column (16 px) on the far side
    assert len(split_instances(labels, [1], contact, min_core=20)) == 1
    assert len(split_instances(labels, [1], contact, min_core=4)) == 2


def test_contact_target_marks_both_sides_of_where_the_pasted_object_touches():
    labels, left, right = _two_touching()
    target, weight = contact_target(left, labels, thing_classes=[1], band=1)
    assert target[4:16, 14:16].all() and target.sum() == 12 * 2  # one px on either side of the contact line
    assert weight[left].all() and not weight[0, :].any()
    empty_target, empty_weight = contact_target(np.zeros_like(left), labels, [1], 1)
    assert not empty_target.any() and not empty_weight.any()
    far = np.zeros_like(labels)
    far[4:16, 5:15] = 1
    alone, _ = contact_target(left, far, [1], 1)
    assert not alone.any()


def test_instance_contacts_mark_every_touching_pair_and_nothing_inside_one_instance():
    labels, left, right = _two_touching()
    instances = np.zeros(labels.shape, np.uint16)
    instances[left], instances[right] = 1, 2
    instances[0:2, 0:4] = 3  # a ball far from both
    target, weight = instance_contacts(instances, band=1, crowd=CROWD)
    assert target[4:16, 14:16].all() and target.sum() == 12 * 2  # as contact_target: both sides of the line
    assert weight.min() == 1  # supervised everywhere
    whole = np.where(labels > 0, 1, 0).astype(np.uint16)  # the same pixels as one instance: no contact
    assert not instance_contacts(whole, band=1, crowd=CROWD)[0].any()
    assert not instance_contacts(instances, band=0, crowd=CROWD)[0].any()
    crowd = instances.copy()
    crowd[right] = CROWD  # a crowd: the left person's side of the contact is known, the crowd's is not
    target, weight = instance_contacts(crowd, band=1, crowd=CROWD)
    assert target[4:16, 14].all() and not target[right].any() and target.sum() == 12
    assert not weight[right].any() and weight[left].all() and weight[0, 0] == 1
