"""Embedding a raster: its plan (tiles, time, pixel-size check) and the resumable job itself.

:mod:`.plan` says before a job starts what it will cost and whether the raster suits the model;
:mod:`.job` reads tiles, runs the encoder and writes the store, resumable and cancellable, with
reading overlapped with inference.
"""
