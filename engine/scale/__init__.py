"""Embedding at scale: blocks of a tile grid as Dask tasks, written into a Zarr store.

:mod:`.distributed` submits the job, :mod:`.worker` is what runs in each worker process,
:mod:`.cluster` owns or joins the Dask cluster and :mod:`.security` decides who may talk to it.
The results equal a single-process embedding of the same grid.
"""
