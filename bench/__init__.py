"""Performance benchmarks of the engine and training (run with ``make bench``)."""
