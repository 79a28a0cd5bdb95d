"""The simulation engine's Grid looks for the sites' replies every few milliseconds, not every tenth of a second."""

from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from server.app import IN_MEMORY_PULL_INTERVAL_S, tune_grid


class OtherGrid:
    pull_interval = 3.0


def test_the_in_memory_grid_polls_often_and_other_grids_are_left_alone():
    grid = InMemoryGrid(LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()))
    assert grid.pull_interval == 0.1  # Flower's default, the attribute its send_and_receive sleeps between polls
    assert tune_grid(grid) is grid and grid.pull_interval == IN_MEMORY_PULL_INTERVAL_S < 0.1
    other = OtherGrid()
    assert tune_grid(other) is other and other.pull_interval == 3.0
