"""The live gateway: OpenAI and SGLang routes, the replica pool, metrics, OTLP ingest,
and the live driver of a policy bundle (``driver.py``: routing, priority, warms, KV events).

Entry points: :func:`pythia_server.gateway.app.build_app` (ASGI) and the ``serve``
command in :mod:`pythia_server.gateway.command`. Nothing is imported here so that
``pythia-server --help`` and the SDK stay light.
"""
