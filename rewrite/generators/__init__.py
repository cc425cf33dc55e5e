"""Generator adapters: one small interface over any `nn.Module` image generator.

Importing the package registers the edit sites of the model families it ships (StyleGAN2's modulated
convs) with `rewrite.core.site.make_site`.
"""

from rewrite.generators import stylegan2_site  # noqa: F401  (registers ModulatedConvSite)
from rewrite.generators.base import GeneratorAdapter

__all__ = ["GeneratorAdapter"]
