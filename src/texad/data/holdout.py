"""The share of a class's training images held out for validation (``validation.holdout``): how many, which ones,
and the identity that every model trained on the rest carries.

- **How many**: ``max(min_holdout, ceil(holdout * n))`` of a class's ``n`` training images when ``holdout > 0``;
  none when it is 0 (the validation split then validates on the training images themselves). At least
  :data:`MIN_TRAIN` images must remain to train on, else a :class:`HoldoutError` names the class, the count and the
  key.
- **Which**: the images whose SHA-256 of ``<seed>/<class>/<file name>`` is smallest; a function of the seed, the
  class and the file names alone (not of the file system's order), and adding an image moves at most one other.
- **Identity**: a model trained on the rest is another model than one trained on every image, so its identity
  hash holds :meth:`Holdout.identity` (and every identity stays as it was with ``holdout: 0``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

__all__ = ["MIN_TRAIN", "Holdout", "HoldoutError", "choose_held_out", "held_out_count", "holdout_identity"]

#: The fewest training images a class keeps after its held-out share (per-pixel statistics and a batch-norm batch
#: need two).
MIN_TRAIN = 2


class HoldoutError(ValueError):
    """A class with too few training images for ``validation.holdout``; the message names the class, the count and
    the key."""


def held_out_count(fraction: float, minimum: int, n_train: int, where: str) -> int:
    """How many of ``n_train`` training images ``validation.holdout`` = ``fraction`` (with ``min_holdout`` =
    ``minimum``) holds out of the class ``where`` (e.g. ``synthetic/wood``); 0 when ``fraction`` is 0."""
    if fraction == 0:
        return 0
    count = max(int(minimum), math.ceil(fraction * n_train))
    if n_train - count < MIN_TRAIN:
        raise HoldoutError(
            f"class {where} has {n_train} training image(s): validation.holdout {fraction:g} holds out {count} "
            f"(validation.min_holdout {minimum}), which leaves {max(n_train - count, 0)} to train on; at least "
            f"{MIN_TRAIN} must remain. Lower validation.holdout or validation.min_holdout (holdout 0 validates on "
            "the training images themselves), or add training images"
        )
    return count


@dataclass(frozen=True)
class Holdout:
    """``validation.holdout`` > 0 with ``min_holdout`` and ``seed`` (key for key): which training images a model did
    not see."""

    holdout: float
    min_holdout: int
    seed: int

    @classmethod
    def from_config(cls, config: Mapping) -> Holdout | None:
        """From a validated (partial) config: None when it holds no ``validation`` block (a job given none trains
        and runs on the class folder it is given, whole) or when ``holdout`` is 0."""
        block = config.get("validation")
        if block is None or block["holdout"] == 0:
            return None
        return cls(float(block["holdout"]), int(block["min_holdout"]), int(block["seed"]))

    @classmethod
    def from_identity(cls, identity: Mapping | None) -> Holdout | None:
        """The inverse of :meth:`identity` (what model files and results record); None stays None."""
        return None if identity is None else cls(**identity)

    def identity(self) -> dict:
        """What a model identity and a result record: the three keys, as the config names them."""
        return asdict(self)

    def to_config(self) -> dict:
        """The part of a config that gives this holdout (a train or run job's settings carry it)."""
        return {"validation": self.identity()}

    def count(self, n_train: int, where: str) -> int:
        """How many of ``n_train`` images are held out (:func:`held_out_count`)."""
        return held_out_count(self.holdout, self.min_holdout, n_train, where)

    def choose(self, names: Sequence[str], class_name: str, where: str | None = None) -> list[str]:
        """The held-out ones of a class's training image file ``names``, sorted by name."""
        return choose_held_out(names, self.holdout, self.min_holdout, self.seed, class_name, where)


def choose_held_out(
    names: Sequence[str], fraction: float, minimum: int, seed: int, class_name: str, where: str | None = None
) -> list[str]:
    """The held-out ones of the training image file ``names`` of ``class_name`` (sorted by name): the
    :func:`held_out_count` names of smallest SHA-256 of ``<seed>/<class>/<name>``; [] when ``fraction`` is 0."""
    names = sorted(set(names))
    count = held_out_count(fraction, minimum, len(names), where or class_name)

    def rank(name: str) -> str:
        return hashlib.sha256(f"{int(seed)}/{class_name}/{name}".encode()).hexdigest()

    return sorted(sorted(names, key=rank)[:count])


def holdout_identity(holdout: Holdout | None) -> dict:
    """What a model identity adds for a holdout: ``{"holdout": {...}}``, or nothing (every identity of a model
    trained on all of train/good stays as it was before holdouts existed)."""
    return {} if holdout is None else {"holdout": holdout.identity()}
