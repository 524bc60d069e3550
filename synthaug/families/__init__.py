"""Generator families: what differs between FLUX.1 and FLUX.2 [klein], behind one interface.

`lora`, `generate`, `pretrain` and `flow` call a `GeneratorFamily` and name no diffusers
pipeline class. A family knows how to load its pipeline and transformer (and checks that a
folder or hub id holds that pipeline), build its tiny stand-in, encode prompts, map VAE
latents into the transformer's space and back, run the transformer on one flow-matching
batch, save its LoRA, and sample. Adding a family means adding one module here and one
entry in `FAMILIES`.
"""

from __future__ import annotations

from synthaug.families.base import FAMILIES, FamilyMismatchError, GeneratorFamily, text_layers
from synthaug.families.flux1 import Flux1
from synthaug.families.flux2_klein import Flux2Klein

__all__ = ["FAMILIES", "FamilyMismatchError", "GeneratorFamily", "family_named", "text_layers"]


def family_named(name: str) -> GeneratorFamily:
    """The family of `generator.family`."""
    return FAMILIES[name]


FAMILIES.update({family.name: family for family in (Flux1(), Flux2Klein())})
