"""Training: synthetic forgeries, processing histories, losses, augmentations, the trainer."""
