"""Training: losses, the YAML config schema, checkpoints, validation, the trainer and its builder."""

from volsr.train.build import build_batches, build_critic, build_model, export_weights
from volsr.train.checkpoint import load_checkpoint, save_checkpoint
from volsr.train.config import TrainConfig, config_from_dict, load_config
from volsr.train.losses import WGANLosses, gradient_penalty, wgan_losses
from volsr.train.run import run_training
from volsr.train.trainer import Trainer, cosine_lr
from volsr.train.validation import VolumeValidator, prepare_case

__all__ = [
    "WGANLosses",
    "gradient_penalty",
    "wgan_losses",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "load_checkpoint",
    "save_checkpoint",
    "Trainer",
    "cosine_lr",
    "VolumeValidator",
    "prepare_case",
    "build_model",
    "build_critic",
    "build_batches",
    "export_weights",
    "run_training",
]
