"""Likeness: personalized text-to-image generation (DreamBooth) as gRPC services."""

__version__ = "0.1.0"
