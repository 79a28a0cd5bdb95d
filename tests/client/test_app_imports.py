"""A deployed SuperNode imports the ClientApp afresh for every message, so importing it must not load what only
some messages need: reports, SHAP, plots, metrics libraries, OMOP readers and the export checker load on first use.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.deploy.harness import REPO

# packages a training message does not need; each is imported by a handler or a reader on first use
ON_FIRST_USE = ("sklearn", "sksurv", "lifelines", "shap", "matplotlib", "scipy", "sqlalchemy", "duckdb", "pandera",
                "opacus")
NEEDED = ("torch", "flwr", "numpy", "pandas")


def _top_level_modules(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_the_client_app_loads_no_package_that_only_some_messages_need():
    loaded = _top_level_modules("import client.flower.app")
    assert set(NEEDED) <= loaded
    assert loaded.isdisjoint(ON_FIRST_USE), sorted(loaded & set(ON_FIRST_USE))


def test_the_check_can_fail_when_a_listed_package_is_imported():
    assert "pandera" in _top_level_modules("import client.flower.app, shared.export_schema")
