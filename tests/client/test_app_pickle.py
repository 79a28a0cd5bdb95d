"""Flower's Ray engine ships the ClientApp with every message: it pickles as the call that builds it, small, and
the worker's copy has the same handlers, mods and run configuration."""

import pickle
from dataclasses import dataclass
from pathlib import Path

from ray import cloudpickle

from client.flower.app import build_client_app


@dataclass(frozen=True)
class PassThrough:
    """A mod as the benchmarks and tests add them: a picklable object."""

    folder: Path

    def __call__(self, message, context, call_next):
        return call_next(message, context)


def test_the_client_app_pickles_as_its_recipe_and_rebuilds_the_same_app(tmp_path: Path):
    overrides = {"num-rounds": 3, "data-dir": str(tmp_path)}
    app = build_client_app(overrides, [PassThrough(tmp_path)])
    shipped = cloudpickle.dumps(lambda: app)  # what the engine sends: a function returning the app
    assert len(shipped) < 8_000  # its closures by value were about 48 KB
    rebuilt = pickle.loads(shipped)()
    assert type(rebuilt) is type(app) and rebuilt is not app
    assert sorted(rebuilt._registered_funcs) == sorted(app._registered_funcs)
    assert len(rebuilt._mods) == len(app._mods) and PassThrough(tmp_path) in rebuilt._mods
    assert rebuilt._recipe == (overrides, [PassThrough(tmp_path)])  # the run's overrides travel with it
