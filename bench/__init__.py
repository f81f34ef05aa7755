"""fervid's benchmarks, a package: ``python -m bench.run`` runs its sections, the studies run alone.

* ``bench.run``: the benchmark (classifier, end-to-end pipeline, training step, the ``fer`` peer),
  whose sections are ``bench/sections/`` (``classifier``, ``pipeline``, ``training``, ``peer_fer``);
  ``common``, ``scenes`` and ``report`` are what they share.
* Studies, each its own command: ``bench.speedrun`` (time-to-accuracy of a training config over
  seeds), ``bench.realfaces`` (accuracy on real photos), ``bench.preprocessing`` (test-time
  preprocessing variants), ``bench.load_test`` (``fervid serve`` under load).

``python bench/run.py`` (and so on) still works: a file run re-runs itself as the module.
"""
