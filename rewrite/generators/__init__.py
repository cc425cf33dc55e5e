"""Generator adapters: one small interface over any `nn.Module` image generator."""

from rewrite.generators.base import GeneratorAdapter

__all__ = ["GeneratorAdapter"]
