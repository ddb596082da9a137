"""``python -m engine``: the command-line front end (:mod:`.main` builds the parser).

Each command parses its flags into plain values and calls :mod:`engine.pipeline`, as the GUI and
Processing do: ``info`` and ``embed`` (:mod:`.embed`), ``heatmap``, ``hits``, ``index`` and
``classify`` (:mod:`.query`), ``models`` (:mod:`.models`).
"""
