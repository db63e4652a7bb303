"""Torch building blocks shared by learned methods (encoders, frequency head, decoders)."""
