"""Search over an embedding store: queries, the scoring core, heatmaps, hits, calibration, ANN.

A query (:mod:`.query`, built from plain data by :mod:`.spec`) is one vector in the shared
embedding space; :mod:`.scoring` scores every tile against it chunk by chunk, :mod:`.similarity`
(in memory) or :mod:`.streaming` (flat memory) turn the scores into a heatmap with percentiles
(:mod:`.calibration`), :mod:`.hits` into ranked places (exact) and :mod:`.ann` (approximate, at
10^7+ tiles). :mod:`.domain` says when a store lies outside the model's training domain, and
:mod:`.gps_field` scores coordinates alone.
"""
