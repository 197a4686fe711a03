"""Sparse autoencoders: one class per architecture (training side) and the Accelerate trainer."""

from .architectures import ARCHITECTURES, make_sae
from .trainer import TrainConfig, Trainer, TrainingDiverged, train

__all__ = ["ARCHITECTURES", "TrainConfig", "Trainer", "TrainingDiverged", "make_sae", "train"]
