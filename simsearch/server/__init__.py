"""``simsearch serve``: the HTTP API and web page (``app``), the resident search state
(``engine``), the process and its files (``process``, ``run``), the stdlib-only thin client that
``simsearch query`` uses (``client``), and cached thumbnails (``thumbnails``).

This file imports nothing: the thin client must start without numpy, psycopg or onnxruntime.
"""
