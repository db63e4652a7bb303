"""Numerical building blocks shared by the classical analyzers (DCT, wavelets, blocks)."""
