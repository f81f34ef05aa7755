"""The sections of ``python -m bench.run``: one module each, with ``run(...) -> dict`` (the peer,
``peer_fer``, runs under the ``fer`` package's own Python instead, as ``-m bench.sections.peer_fer``)."""
