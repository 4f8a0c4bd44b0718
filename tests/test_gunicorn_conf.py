"""The gunicorn configuration: gunicorn finds its hooks, and a worker's startup heap is frozen once the app is built."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.app.base import Application

from service.web import gunicorn_conf


class _ConfigOnly(Application):  # type: ignore[misc]
    """gunicorn's own loader for `-c python:…`, without parsing this process's arguments or loading an app."""

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        return None

    def load_config(self) -> None:
        self.load_config_from_module_name_or_filename("python:service.web.gunicorn_conf")

    def load(self) -> Any:
        raise AssertionError("not loaded in this test")


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Put frozen objects back under the collector after the test (a test process must not keep them frozen)."""
    yield
    gc.unfreeze()


def test_gunicorn_runs_the_hooks() -> None:
    # A misspelt hook is not an error for gunicorn: it is silently never called. Load the file as gunicorn does.
    cfg = _ConfigOnly().cfg
    for hook in ("on_starting", "post_fork", "post_worker_init", "worker_exit"):
        assert cfg.settings[hook].get() is getattr(gunicorn_conf, hook), hook
    assert cfg.worker_class_str == "gthread"


@pytest.mark.usefixtures("unfrozen")
def test_post_worker_init_freezes_what_the_worker_has_built() -> None:
    built = [{"row": i} for i in range(5_000)]  # stands in for the model, Flask and the imported modules
    before = gc.get_freeze_count()
    gunicorn_conf.post_worker_init(worker=None)
    assert gc.get_freeze_count() >= before + len(built)
    walked = {id(obj) for obj in gc.get_objects()}  # what a collection would look at
    assert id(built) not in walked and id(built[0]) not in walked
    created_later = [{"request": 1}]
    assert id(created_later) in {id(obj) for obj in gc.get_objects()}  # new objects are collected as before
