"""Supernet trainers on one shared loop (:mod:`stnas.train.base`): single path (one sampled architecture
per step; ST-NAS, SPOS), differentiable (first-order bilevel or one-level; DARTS, DrNAS, GOLD-NAS), and
the retraining of a standalone model."""
from stnas.train.base import Hook, Trainer
from stnas.train.differentiable import DifferentiableConfig, DifferentiableTrainer
from stnas.train.single_path import SinglePathTrainer

__all__ = ["DifferentiableConfig", "DifferentiableTrainer", "Hook", "SinglePathTrainer", "Trainer"]
