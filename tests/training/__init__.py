"""Tests of the training package (towers, loss, trainer, DDP, export, evaluation)."""
