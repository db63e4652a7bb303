"""Training: the recipe contract, losses, augmentations and the shared trainer."""
