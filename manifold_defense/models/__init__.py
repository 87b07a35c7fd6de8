"""Architectures (classifiers, generators, the encoder, the DDPM), the registry that names them for
the checkpoint format, the generator contract, and checkpoints themselves.

Room rule: imports only :mod:`manifold_defense.utils` (and torch, safetensors).

Example:
    >>> from manifold_defense.models import build
    >>> build("mlp", hidden=32).net[1].out_features
    32
"""

from __future__ import annotations

from .checkpoint import CheckpointError, checkpoint_paths, load_model, read_config, save_model
from .classifiers import MLP, LeNetSmall, LeNetWide, ModelA, ResNetSmall
from .ddpm import DDPM
from .generators import Encoder, WGANCritic, WGANGenerator
from .range_adapter import GeneratorContract, RangeAdapter, check_generator
from .residual_head import ResidualHead
from .registry import ARCHITECTURES, architecture_name, build, register_architecture
from .unet import UNetSmall

__all__ = ["ARCHITECTURES", "build", "architecture_name", "register_architecture", "MLP", "ModelA", "LeNetSmall", "LeNetWide", "ResNetSmall", "Encoder",
           "WGANCritic", "WGANGenerator", "RangeAdapter", "GeneratorContract", "check_generator", "UNetSmall", "DDPM", "ResidualHead",
           "CheckpointError", "checkpoint_paths", "load_model", "read_config", "save_model"]

for _name, _cls in {"model_a": ModelA, "lenet_small": LeNetSmall, "lenet_wide": LeNetWide, "resnet_small": ResNetSmall, "mlp": MLP, "wgan_generator": WGANGenerator,
                    "wgan_critic": WGANCritic, "encoder": Encoder, "range_adapter": RangeAdapter,
                    "unet_small": UNetSmall, "ddpm": DDPM, "residual_head": ResidualHead}.items():
    register_architecture(_name, _cls)
