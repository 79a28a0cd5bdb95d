"""The tumour-board page end to end: serve it, choose a patient in headless Chromium, click, read what renders."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from fastapi.testclient import TestClient

from client.tumour_board.board import open_board_site, patients_from_records
from client.tumour_board.run_bundle import load_run
from client.tumour_board.web import CSP, LOCALHOST, create_app
from shared.vocabulary import CancerType, regimens_for
from tests.browser import ChromiumSession, find_chromium
from tests.client.board_run import SITE, breast_patient, make_run


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    run_dir, _ = make_run(tmp_path_factory.mktemp("board-web"), rounds=2)
    bundle = load_run(run_dir, last_rounds=2)
    site = open_board_site(bundle, SITE)
    patients = patients_from_records(
        [breast_patient(patient_id="pt-breast"),
         breast_patient(patient_id="pt-lung", sex="male", cancer_type="nsclc", histology="nsclc_squamous",
                        er_positive=None, her2_positive=None, tumour_size_mm=390)], "board.json")
    return create_app(bundle, site, patients, top_k=4, shap_samples=8)


def test_api_refuses_unknown_patient_and_sets_csp(app) -> None:
    client = TestClient(app)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "pt-breast" in page.text and "pt-lung" in page.text and "http" not in page.text.split("<body>")[1]
    missing = client.get("/api/compare/nobody")
    assert missing.status_code == 404 and "no patient 'nobody'" in missing.json()["detail"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_click_through_a_patient_in_chromium(app) -> None:
    if find_chromium() is None:
        pytest.skip("no Chromium installed")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOCALHOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.1)
        with ChromiumSession(timeout=120) as browser:
            browser.open(f"http://{LOCALHOST}:{port}/")
            assert browser.evaluate("document.querySelectorAll('#patient option').length") == 2
            browser.evaluate("document.getElementById('patient').value = 'pt-lung'")
            browser.evaluate("document.getElementById('compare').click()")
            state = browser.wait_for("document.body.dataset.state === 'busy' ? '' : document.body.dataset.state",
                                     timeout=240)
            assert state == "done", browser.evaluate("document.getElementById('status').textContent")
            rows = browser.evaluate("Array.from(document.querySelectorAll('tr.regimen-row')).map("
                                    "r => Array.from(r.cells).map(c => c.textContent))")
            expected = [r.code for r in regimens_for(CancerType.NSCLC)]
            assert [row[0] for row in rows] == expected
            for row in rows:
                value, interval = row[1].split(" (")
                lower, upper = (float(x) for x in interval.rstrip(")").split("–"))
                assert 0 <= lower <= float(value) <= upper <= 1
                assert row[2] and row[3] and "=" in row[4]
            images = browser.images()
            survival = [i for i in images if i["className"] == "survival-plot"]
            drivers = [i for i in images if i["className"] == "drivers-plot"]
            assert len(survival) == 2 and len(drivers) == len(expected)
            assert all(i["decoded"] and i["inline"] and i["naturalWidth"] > 100 for i in images), images
            flagged = browser.evaluate("Array.from(document.querySelectorAll('#ood tr.flag')).map("
                                       "r => r.cells[0].textContent)")
            assert "tumour_size_mm" in flagged
            assert browser.evaluate("document.querySelectorAll('#subgroups tr').length") > 1
            assert "not causal" in browser.evaluate("document.body.textContent")
            assert "NOT a confidence interval" in browser.evaluate("document.getElementById('range-note').textContent")
            assert browser.errors == []
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()

