"""Diffusion bridge samplers (DIS, DBS, CMCD) for unnormalized densities, their losses, metrics and training."""
