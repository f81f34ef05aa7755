"""Old module names (fervid 0.1's flat layout) kept importable, with a DeprecationWarning.

``import fervid.engine`` gives :mod:`fervid.training.engine` itself (the same module object, so
attributes and monkeypatches are shared); new code imports the new names. Nothing in fervid
imports through these names: tests/test_architecture.py checks the layering on the real ones.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "fervid.io": "fervid.files", "fervid.cvlog": "fervid.opencv_log",
    "fervid.detect": "fervid.recognition.detect", "fervid.recognize": "fervid.recognition.recognize",
    "fervid.track": "fervid.recognition.track", "fervid.video": "fervid.recognition.video",
    "fervid.videowrite": "fervid.recognition.video_writer", "fervid.webcam": "fervid.recognition.camera",
    "fervid.draw": "fervid.recognition.draw", "fervid.timeline": "fervid.recognition.timeline",
    "fervid.batch": "fervid.recognition.image_files",
    "fervid.config": "fervid.training.config", "fervid.engine": "fervid.training.engine",
    "fervid.optim": "fervid.training.optim", "fervid.augment": "fervid.training.augment",
    "fervid.averaging": "fervid.training.weight_averaging", "fervid.distill": "fervid.training.distill",
    "fervid.checkpoint": "fervid.training.checkpoint", "fervid.carry": "fervid.training.carry",
    "fervid.evaluate": "fervid.analysis.evaluate", "fervid.ensemble": "fervid.analysis.predictors",
    "fervid.insight": "fervid.analysis.interpret", "fervid.visualize": "fervid.analysis.interpret_figures",
    "fervid.plots": "fervid.analysis.plots", "fervid.crossval": "fervid.analysis.crossval",
    "fervid.tune": "fervid.analysis.tune", "fervid.tune_report": "fervid.analysis.tune_report",
    "fervid.serve_errors": "fervid.serve.errors", "fervid.serve_schemas": "fervid.serve.schemas",
    "fervid.uploads": "fervid.serve.uploads",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and hands back the module under its new one."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        warnings.warn(f"{spec.name} is now {MOVED[spec.name]}; import it from there", DeprecationWarning,
                      stacklevel=2)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass  # already executed under its new name


def install() -> None:
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModules())  # before path finders: no stale file may shadow it
