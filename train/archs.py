"""`train --list-archs`: the architectures on offer, and whether their ImageNet weights load
offline (already in torchvision's or the Hugging Face cache, or shipped by a package)."""

from __future__ import annotations

import logging

from .backbones import timm_zoo, torchvision_zoo

log = logging.getLogger(__name__)
TIMM_SHOWN = ("convnext_tiny", "vit_base_patch16_224", "eva02_base_patch14_448",
              "swinv2_tiny_window8_256", "efficientnet_lite0", "tf_efficientnet_lite0")


def arch_lines() -> list[str]:
    """One line per architecture: name, family, `on disk` or `download` for its weights."""
    lines = ["torchvision (--arch NAME; --weights imagenet downloads once into the torch hub "
             "cache):"]
    for name in torchvision_zoo.available():
        state = "on disk" if torchvision_zoo.weights_on_disk(name) else "download"
        lines.append(f"  {name:<28} imagenet weights: {state}")
    if not timm_zoo.installed():
        lines.append("timm (--arch timm:NAME): not installed, pip install 'booru-tagger[timm]'")
        return lines
    names = timm_zoo.available()
    lines.append(f"timm (--arch timm:NAME, {len(names)} architectures; imagenet from the "
                 "Hugging Face hub, or --weights FOLDER offline); for example:")
    cached = timm_zoo.cached_architectures()
    for name in [n for n in names if n in TIMM_SHOWN or n in cached]:
        state = "on disk" if timm_zoo.weights_on_disk(name) else "download"
        lines.append(f"  timm:{name:<23} imagenet weights: {state}")
    lines.append("  ... every name of timm.list_models()")
    return lines


def print_archs() -> None:
    """Print `arch_lines()`."""
    print("\n".join(arch_lines()))
