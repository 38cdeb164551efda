"""Plain ``nn.Module`` networks (no diffusion logic): the 1D Efficient U-Net and its presets."""

from n2m.training.networks.presets import PRESETS, build_network, count_parameters, network_config
from n2m.training.networks.unet1d import UNet1D, UNetConfig

__all__ = ["PRESETS", "UNet1D", "UNetConfig", "build_network", "count_parameters", "network_config"]
