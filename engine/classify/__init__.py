"""Land-use classification of an embedding store: zero-shot from prompts, few-shot from polygons.

:mod:`.spec` runs a request given as plain data; :mod:`.land_use` maps the store and writes the
class and confidence rasters, :mod:`.fit` fits the few-shot classifiers, :mod:`.prompts` turns
class prompts into prototypes and says how far zero-shot can be trusted, :mod:`.validation`
cross-validates few-shot maps by polygon and :mod:`.report` writes what it found.
"""
