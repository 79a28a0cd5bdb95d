"""The tumour-board page: choose a patient, compare the regimens, see the curves, drivers and limits.

FastAPI on uvicorn, bound to 127.0.0.1 only (the page shows patient data; it is for the board's screen at the
site, never for the network). No external assets: the script and style are served by the app itself, plots are
inline PNGs drawn by matplotlib, and the Content-Security-Policy forbids loading anything from elsewhere.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from matplotlib.figure import Figure

from client.tumour_board.board import ASSOCIATIONAL_NOTICE, REGIMEN_FILLED, BoardSite, PatientComparison, compare_patient
from client.tumour_board.run_bundle import RunBundle
from shared.plots import COLOURS, figure_to_data_uri

LOCALHOST = "127.0.0.1"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def survival_plot(comparison: PatientComparison, endpoint: str) -> str:
    """Mean survival curve per regimen with the ensemble's envelope shaded; the 0.5 line marks the median."""
    title = {"pfs": "Progression-free survival", "os": "Overall survival"}[endpoint]
    figure = Figure(figsize=(6.0, 3.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    times = np.concatenate([[0.0], comparison.time_grid_days])
    for index, row in enumerate(comparison.regimens):
        prediction = getattr(row, endpoint)
        colour = COLOURS[index % len(COLOURS)]
        axes.step(times, [1.0, *prediction.survival], where="post", color=colour, label=row.regimen)
        axes.fill_between(times, [1.0, *prediction.lower], [1.0, *prediction.upper], step="post", color=colour,
                          alpha=0.15, linewidth=0)
    axes.axhline(0.5, color="#7f7f7f", linestyle=":", linewidth=1)
    axes.set(xlabel="days from start of regimen", ylabel="probability", ylim=(0, 1.02), title=title)
    axes.legend(fontsize=7, loc="upper right")
    return figure_to_data_uri(figure)


def drivers_plot(comparison: PatientComparison, regimen_index: int) -> str:
    """Signed SHAP drivers of one regimen's three outputs (right = pushes the output up)."""
    row = comparison.regimens[regimen_index]
    figure = Figure(figsize=(9.0, 2.6), dpi=100, layout="constrained")
    for position, (output, label) in enumerate((("response", "response probability"),
                                                ("pfs", "expected PFS days"), ("os", "expected OS days")), start=1):
        axes = figure.add_subplot(1, 3, position)
        drivers = row.drivers[output][::-1]
        axes.barh([f"{d.field} = {d.patient_value}" for d in drivers], [d.shap for d in drivers],
                  color=["#548235" if d.shap >= 0 else "#c00000" for d in drivers])
        axes.axvline(0, color="#404040", linewidth=0.8)
        axes.tick_params(axis="y", labelsize=7)
        axes.set_title(f"{row.regimen}: {label}", fontsize=8)
    return figure_to_data_uri(figure)


def _page(patients: pd.DataFrame, site: BoardSite, bundle: RunBundle) -> str:
    options = "\n".join(
        f'<option value="{html.escape(str(p.patient_id))}">{html.escape(str(p.patient_id))} — '
        f'{html.escape(str(p.cancer_type))}, stage {html.escape(str(p.stage_group))}, age {p.age_years:g}</option>'
        for p in patients.itertuples())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>OncoFed tumour board — {html.escape(site.site_id)}</title>
<link rel="stylesheet" href="/board.css"></head>
<body>
<h1>Tumour board: regimen comparison</h1>
<p class="meta">Site {html.escape(site.site_id)} · run {html.escape(bundle.run_dir.name)} ·
{len(bundle.members)} global models in the ensemble (ranges are their spread)</p>
<p class="notice">{html.escape(ASSOCIATIONAL_NOTICE)}</p>
<label for="patient">Patient</label> <select id="patient">{options}</select>
<button id="compare" type="button">Compare regimens</button>
<p id="status"></p>
<div id="result"></div>
<script src="/board.js"></script>
</body></html>"""


CSS = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a1a1a;max-width:1200px}
.notice{background:#fff4e5;border-left:4px solid #c55a11;padding:.5rem .8rem}
.meta{color:#555}table{border-collapse:collapse;margin:.8rem 0}
td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}.flag{color:#c00000}img{max-width:100%}
.plots{display:flex;flex-wrap:wrap;gap:1rem}"""

SCRIPT = """"use strict";
function cell(row, text) { var td = document.createElement("td"); td.textContent = text; row.appendChild(td); }
function heading(parent, text) { var h = document.createElement("h2"); h.textContent = text; parent.appendChild(h); }
function image(parent, src, alt, cls) {
  var img = document.createElement("img"); img.src = src; img.alt = alt; img.className = cls; parent.appendChild(img);
}
function median(m, horizon) {
  if (m.value === null) { return "> " + horizon + " (not reached)"; }
  var lower = m.lower === null ? "not reached" : Math.round(m.lower);
  var upper = m.upper === null ? "> " + horizon : Math.round(m.upper);
  return Math.round(m.value) + " (" + lower + "–" + upper + ")";
}
function table(parent, id, headers) {
  var t = document.createElement("table"); t.id = id; var head = document.createElement("tr");
  headers.forEach(function (h) { var th = document.createElement("th"); th.textContent = h; head.appendChild(th); });
  t.appendChild(head); parent.appendChild(t); return t;
}
function render(data) {
  var c = data.comparison, out = document.getElementById("result"); out.textContent = "";
  heading(out, "Patient " + c.patient_id + " (" + c.cancer_type + ")");
  var note = document.createElement("p"); note.className = "meta"; note.id = "range-note";
  note.textContent = c.range_note; out.appendChild(note);
  var t = table(out, "regimens", ["regimen", "response probability (range)", "median PFS days (range)",
                                  "median OS days (range)", "top driver of response"]);
  c.regimens.forEach(function (r) {
    var row = document.createElement("tr"); row.className = "regimen-row"; row.dataset.regimen = r.regimen;
    var p = r.response_probability, d = r.drivers.response[0];
    cell(row, r.regimen + (r.given_in_record ? " (given)" : ""));
    cell(row, p.value.toFixed(2) + " (" + p.lower.toFixed(2) + "–" + p.upper.toFixed(2) + ")");
    cell(row, median(r.pfs.median_days, c.horizon_days)); cell(row, median(r.os.median_days, c.horizon_days));
    cell(row, d.field + " = " + d.patient_value + " (" + (d.shap >= 0 ? "+" : "") + d.shap.toFixed(3) + ")");
    t.appendChild(row);
  });
  heading(out, "Survival curves (shaded: ensemble range)");
  var plots = document.createElement("div"); plots.className = "plots"; out.appendChild(plots);
  image(plots, data.plots.pfs, "PFS curves", "survival-plot"); image(plots, data.plots.os, "OS curves", "survival-plot");
  heading(out, "What drove each prediction (SHAP against this site's training patients)");
  data.plots.drivers.forEach(function (src, i) { image(out, src, "drivers " + c.regimens[i].regimen, "drivers-plot"); });
  heading(out, "Outside the training distribution");
  if (c.out_of_distribution.length === 0) {
    var ok = document.createElement("p"); ok.id = "ood-none"; ok.textContent = "No field flagged."; out.appendChild(ok);
  } else {
    var f = table(out, "ood", ["field", "value", "flag", "how far"]);
    c.out_of_distribution.forEach(function (o) {
      var row = document.createElement("tr"); row.className = "flag";
      [o.field, o.value, o.kind, o.detail].forEach(function (v) { cell(row, v); }); f.appendChild(row);
    });
  }
  heading(out, "How the model did on this patient's subgroups (validation)");
  var s = table(out, "subgroups", ["source", "subgroup", "n", "response AUC", "PFS C-index", "OS C-index"]);
  c.subgroup_performance.forEach(function (g) {
    var row = document.createElement("tr");
    [g.source, g.group + ": " + g.level, g.n === null ? "—" : String(g.n), g.response_auc, g.pfs_cindex,
     g.os_cindex].forEach(function (v) { cell(row, v); });
    s.appendChild(row);
  });
}
document.getElementById("compare").addEventListener("click", function () {
  var id = document.getElementById("patient").value, status = document.getElementById("status");
  status.textContent = "Comparing regimens for " + id + "…"; document.body.dataset.state = "busy";
  fetch("/api/compare/" + encodeURIComponent(id)).then(function (response) {
    if (!response.ok) { return response.json().then(function (e) { throw new Error(e.detail); }); }
    return response.json();
  }).then(function (data) {
    render(data); status.textContent = ""; document.body.dataset.state = "done";
  }).catch(function (error) {
    status.textContent = "Comparison failed: " + error.message; document.body.dataset.state = "error";
  });
});
"""


def create_app(bundle: RunBundle, site: BoardSite, patients: pd.DataFrame, top_k: int = 5,
               shap_samples: int = 100) -> FastAPI:
    """The page's app; comparisons are computed on request and kept for the life of the app."""
    app = FastAPI(title="OncoFed tumour board", docs_url=None, redoc_url=None, openapi_url=None)
    by_id = {str(row["patient_id"]): row for _, row in patients.iterrows()}
    filled = patients.attrs.get(REGIMEN_FILLED, set())
    computed: dict[str, dict] = {}
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(_page(patients, site, bundle), headers=headers)

    @app.get("/board.js")
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers=headers)

    @app.get("/board.css")
    def style() -> Response:
        return Response(CSS, media_type="text/css", headers=headers)

    @app.get("/api/compare/{patient_id}")
    def compare(patient_id: str) -> JSONResponse:
        if patient_id not in by_id:
            raise HTTPException(status_code=404, detail=f"no patient {patient_id!r} in this page's patient list")
        if patient_id not in computed:
            comparison = compare_patient(bundle, by_id[patient_id], site.background, site_id=site.site_id,
                                         site_report=site.report, regimen_recorded=patient_id not in filled,
                                         top_k=top_k, shap_samples=shap_samples, seed=bundle.config.seed)
            computed[patient_id] = {
                "comparison": comparison.model_dump(mode="json"),
                "plots": {"pfs": survival_plot(comparison, "pfs"), "os": survival_plot(comparison, "os"),
                          "drivers": [drivers_plot(comparison, i) for i in range(len(comparison.regimens))]}}
        return JSONResponse(computed[patient_id], headers=headers)

    return app


def serve(bundle: RunBundle, site: BoardSite, patients: pd.DataFrame, port: int = 8765, top_k: int = 5,
          shap_samples: int = 100) -> None:
    """Serve on 127.0.0.1:port until interrupted; never on another interface."""
    print(f"tumour board for site {site.site_id}: http://{LOCALHOST}:{port}/ (Ctrl+C to stop)")
    uvicorn.run(create_app(bundle, site, patients, top_k, shap_samples), host=LOCALHOST, port=port,
                log_level="warning")
