"""The HTML of the jobtracker's status site, rendered from ``views`` dicts.

Pure functions from plain data to text: ``web`` serves them. Everything
that comes from users or workers (file names, paths, errors, tracebacks,
logs, host names) goes through ``esc``; the pages load no inline script or
style, so the site's Content-Security-Policy forbids any (a second line of
defence). A live page re-fetches itself every second (``static/pytxmr.js``)
and swaps its ``<main>``; ``data-live="0"`` stops that once a job ended.
"""

from __future__ import annotations

import html
import time
from typing import Any, Iterable
from urllib.parse import quote

from .sizes import format_size
from .wire import AWAITED_MAPS

MAP_COLOUR = "#4e79a7"
REDUCE_COLOUR = "#f28e2b"
FAILED_COLOUR = "#e15759"
KILLED_COLOUR = "#bab0ac"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


def fmt_time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + "Z"


def fmt_secs(secs: float | None) -> str:
    if secs is None:
        return ""
    if secs < 60:
        return f"{secs:.2f}s"
    minutes, s = divmod(int(secs), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{s:02d}s"


def page(title: str, body: str, live: bool) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title>"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<link rel=\"stylesheet\" href=\"/static/pytxmr.css\">"
        + ("<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>" if live else "")
        + "<script src=\"/static/pytxmr.js\" defer></script></head>"
        f"<body data-live=\"{1 if live else 0}\">"
        "<header><a href=\"/\">pytxmr jobtracker</a></header>"
        f"<main>{body}</main></body></html>\n"
    )


def _table(headers: Iterable[str], rows: list[str], empty: str, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    if not rows:
        return f"<p class=\"empty\">{esc(empty)}</p>"
    return (f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _progress(p: dict[str, Any] | None) -> str:
    if not p:
        return ""
    # The bar counts running tasks' own progress too; the figures, tasks done.
    percent = p.get("percent", 100.0 * p["done"] / p["total"] if p["total"] else 100.0)
    return (f"<progress max=\"100\" value=\"{percent:.1f}\"></progress> "
            f"{p['done']}/{p['total']}"
            + (f" <span class=\"run\">({p['running']} running)</span>" if p["running"] else "")
            + (f" <span class=\"run\" title=\"{esc(AWAITED_MAPS)}\">({p['awaited']} awaited)"
               f"</span>" if p.get("awaited") else ""))


def _state(state: str) -> str:
    return f"<span class=\"state {esc(state)}\">{esc(state)}</span>"


def jobs_table(jobs: list[dict[str, Any]]) -> str:
    rows = []
    for j in reversed(jobs):  # newest first
        rows.append(
            f"<tr data-job=\"{esc(j['job_id'])}\"><td><a href=\"{esc(url('jobs', j['job_id']))}\">"
            f"{esc(j['job_id'])}</a></td><td>{esc(j.get('owner', ''))}</td>"
            f"<td class=\"path\">{esc(j['filename'])}</td><td>{_state(j['state'])}</td><td>{_progress(j.get('maps'))}</td>"
            f"<td>{_progress(j.get('reduces'))}</td><td>{esc(j.get('failed_attempts', ''))}</td>"
            f"<td>{esc(fmt_time(j['submitted']))}</td><td>{esc(fmt_secs(j['elapsed']))}</td></tr>")
    return _table(["job", "owner", "file", "state", "maps", "reduces", "failed attempts", "submitted",
                   "duration"], rows, "No jobs yet.", "jobs")


def workers_table(workers: list[dict[str, Any]]) -> str:
    rows = []
    for w in workers:
        running = ", ".join(w["running"][:8]) + (" …" if len(w["running"]) > 8 else "")
        age = (fmt_secs(w["heartbeat_age"]) + " ago" if w["alive"]
               else "drained" if w.get("drained") else "lost")
        if w.get("draining"):
            age += ", draining"
        rows.append(
            f"<tr class=\"{'alive' if w['alive'] else 'lost'}\"><td>{esc(w['wid'])}</td>"
            f"<td>{esc(w['host'])}</td><td>{esc(w['shuffle_port'])}</td><td>{esc(w['slots'])}</td>"
            f"<td title=\"{esc(running)}\">{len(w['running'])}</td>"
            f"<td>{esc(shuffle_memory_text(w))}</td><td>{esc(age)}</td>"
            f"<td>{esc(w['failures'])}</td></tr>")
    return _table(["wid", "host", "shuffle port", "slots", "running attempts",
                   "shuffle memory", "last heartbeat", "failed attempts"], rows,
                  "No tasktrackers.", "workers")


def shuffle_memory_text(w: dict[str, Any]) -> str:
    """Fetched runs a worker holds in RAM, of its budget."""
    budget = w["shuffle_memory_budget"]
    if budget is None:
        return "-"
    if budget == 0:
        return "off"
    return f"{format_size(w['shuffle_memory_used'])} of {format_size(budget)}"


def cluster_page(workers: list[dict[str, Any]], jobs: list[dict[str, Any]], now: float) -> str:
    alive = [w for w in workers if w["alive"]]
    body = (
        f"<h1>Cluster</h1><p class=\"summary\">{len(alive)} tasktrackers, "
        f"{sum(w['slots'] for w in alive)} slots, "
        f"{sum(len(w['running']) for w in alive)} attempts running; "
        f"{sum(j['state'] == 'running' for j in jobs)} jobs running. "
        f"<span class=\"now\">{esc(fmt_time(now))}</span></p>"
        f"<h2>Tasktrackers</h2>{workers_table(workers)}"
        f"<h2>Jobs</h2>{jobs_table(jobs)}"
        "<p class=\"api\">JSON: <a href=\"/api/workers\">/api/workers</a> "
        "<a href=\"/api/jobs\">/api/jobs</a></p>"
    )
    return page("pytxmr cluster", body, live=True)


def counters_table(counters: dict[str, dict[str, int]]) -> str:
    rows = []
    for group in sorted(counters):
        for name in sorted(counters[group]):
            rows.append(f"<tr><td>{esc(group)}</td><td>{esc(name)}</td>"
                        f"<td class=\"num\">{counters[group][name]:,}</td></tr>")
    return _table(["group", "counter", "value"], rows, "No counters yet.", "counters")


def _error(error: dict[str, Any] | None, ident: str) -> str:
    if not error:
        return ""
    text = f"{error.get('type', '')}: {error.get('message', '')}"
    tb = error.get("traceback") or ""
    if not tb:
        return f"<span class=\"error\">{esc(text)}</span>"
    return (f"<details id=\"{esc(ident)}\"><summary class=\"error\">{esc(text)}</summary>"
            f"<pre class=\"traceback\">{esc(tb)}</pre></details>")


def _step_of(view: dict[str, Any], attempt: dict[str, Any]) -> str:
    """`` (step 2)`` beside a task of a multi-step job."""
    if view.get("steps", 1) <= 1:
        return ""
    step = attempt["id"].rsplit("_", 2)[0].rpartition("-s")[2]
    return f" (step {esc(step if step.isdigit() else 1)})"


def attempts_table(view: dict[str, Any]) -> str:
    """The attempts of a page view (``views.page_view``): all of them, or
    those that did not succeed first when there are too many to list."""
    rows = []
    t0 = view["submitted"]
    for a in view["attempts"]:
        log = (f"<a href=\"{esc(url('jobs', view['job_id'], 'attempts', a['id'], 'log'))}\">"
               "log</a>" if a.get("has_log") else "")
        # No worker: restored from the journal (see tasklog.format_logs).
        host = a.get("host") or ("" if a["wid"] else "before the jobtracker restarted")
        rows.append(
            f"<tr class=\"{esc(a['kind'])} {esc(a['state'])}\"><td>{esc(a['id'])}</td>"
            f"<td>{esc(a['kind'])} {esc(a['index'])}{_step_of(view, a)}</td>"
            f"<td>{esc(a['wid'])} <span class=\"host\">{esc(host)}</span></td>"
            f"<td>{_state(a['state'])}</td><td>+{esc(fmt_secs(a['started'] - t0))}</td>"
            f"<td>{esc(fmt_secs(a['duration']))}</td>"
            f"<td>{_error(a.get('error'), 'err-' + a['id'])}</td><td>{log}</td></tr>")
    more = view.get("attempts_total", len(rows)) - len(rows)
    note = (f"<p class=\"note\">The first {len(rows)} of {len(rows) + more} attempts, "
            "those that did not succeed first; every attempt is in "
            f"<a href=\"{esc(url('api', 'jobs', view['job_id']))}\">the JSON</a>.</p>"
            if more > 0 else "")
    return _table(["attempt", "task", "worker", "state", "start", "duration", "error", ""],
                  rows, "No attempts yet.", "attempts") + note


def _nice_step(span: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                 7200, 14400, 28800, 86400):
        if span / step <= 10:
            return step
    return span / 10


def timeline_svg(view: dict[str, Any], now: float) -> str:
    """The attempts of a job on a time axis, one band per worker (a lane
    per concurrent attempt): maps and reduces in different colours, so the
    overlap of the map phase, the shuffle and the reduces shows. A job with
    more attempts than a page lists gets ``concurrency_svg`` instead."""
    if view.get("concurrency"):
        return concurrency_svg(view)
    attempts = view["attempts"]
    if not attempts:
        return "<p class=\"empty\">No attempts yet.</p>"
    t0 = view["submitted"]
    t1 = view["finished"] if view.get("finished") is not None else now
    t1 = max([t1] + [a["finished"] or now for a in attempts])
    span = max(t1 - t0, 1e-3)
    lane_h, gap, top = 12, 2, 24
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for a in sorted(attempts, key=lambda a: a["started"]):
        by_worker.setdefault(a["wid"], []).append(a)

    def wkey(wid: str) -> tuple[int, str]:
        digits = "".join(c for c in wid if c.isdigit())
        return (int(digits) if digits else 0, wid)

    parts: list[str] = []
    y = top
    for wid in sorted(by_worker, key=wkey):
        lanes: list[float] = []  # end time of each lane's last attempt
        placed = []
        for a in by_worker[wid]:
            end = a["finished"] if a["finished"] is not None else now
            for i, lane_end in enumerate(lanes):
                if lane_end <= a["started"]:
                    lanes[i] = end
                    break
            else:
                i = len(lanes)
                lanes.append(end)
            placed.append((a, i, end))
        band = len(lanes) * (lane_h + gap)
        parts.append(f"<text class=\"wid\" x=\"4\" y=\"{y + band / 2 + 4:.1f}\">{esc(wid)}</text>"
                     f"<line class=\"band\" x1=\"0\" x2=\"{_LEFT + _WIDTH}\" "
                     f"y1=\"{y + band + 1:.1f}\" y2=\"{y + band + 1:.1f}\" stroke=\"#ddd\"/>")
        for a, lane, end in placed:
            colour = MAP_COLOUR if a["kind"] == "map" else REDUCE_COLOUR
            if a["state"] == "failed":
                colour = FAILED_COLOUR
            elif a["state"] == "killed":
                colour = KILLED_COLOUR
            x0, x1 = _x(a["started"], t0, span), _x(end, t0, span)
            tip = (f"{a['id']} ({a['kind']} {a['index']}) {a['state']} "
                   f"{fmt_secs(end - a['started'])}")
            parts.append(
                f"<rect class=\"bar {esc(a['kind'])} {esc(a['state'])}\" x=\"{x0:.1f}\" "
                f"y=\"{y + lane * (lane_h + gap):.1f}\" width=\"{max(x1 - x0, 1.5):.1f}\" "
                f"height=\"{lane_h}\" fill=\"{colour}\""
                + (" fill-opacity=\"0.6\" stroke=\"#333\" stroke-dasharray=\"2,2\""
                   if a["state"] == "running" else " stroke=\"#fff\" stroke-width=\"1\"")
                + f"><title>{esc(tip)}</title></rect>")
        y += band + 4
    return _chart(parts, t0, span, top, y, "timeline of the job's attempts per worker")


_LEFT, _WIDTH = 90, 900  # the time axis of the charts, in SVG units
_SERIES = (("map", MAP_COLOUR), ("reduce", REDUCE_COLOUR), ("failed", FAILED_COLOUR),
           ("killed", KILLED_COLOUR))


def _x(t: float, t0: float, span: float) -> float:
    return _LEFT + _WIDTH * (t - t0) / span


def _chart(parts: list[str], t0: float, span: float, top: float, bottom: float,
           label: str, series: tuple[tuple[str, str], ...] = _SERIES) -> str:
    """``parts`` (drawn from ``top`` to ``bottom``) on a time axis from
    ``t0``, with the legend of the ``series``' colours."""
    step = _nice_step(span)
    ticks = []
    t = 0.0
    while t <= span + 1e-9:
        xt = _x(t0 + t, t0, span)
        text = fmt_secs(t) if step < 1 or t < 60 else fmt_secs(t).replace(".00s", "s")
        ticks.append(f"<line x1=\"{xt:.1f}\" x2=\"{xt:.1f}\" y1=\"{top - 4}\" y2=\"{bottom}\" "
                     f"stroke=\"#eee\"/><text class=\"tick\" x=\"{xt:.1f}\" y=\"{top - 8}\" "
                     f"text-anchor=\"middle\">{esc(text)}</text>")
        t += step
    legend_y = bottom + 16
    legend = "".join(
        f"<rect x=\"{_LEFT + i * 110}\" y=\"{legend_y - 10}\" width=\"12\" height=\"12\" "
        f"fill=\"{c}\"/><text x=\"{_LEFT + i * 110 + 16}\" y=\"{legend_y}\">{n}</text>"
        for i, (n, c) in enumerate(series))
    height = legend_y + 8
    return (f"<svg id=\"timeline\" class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" "
            f"viewBox=\"0 0 {_LEFT + _WIDTH + 10} {height}\" width=\"100%\" "
            f"preserveAspectRatio=\"xMinYMin meet\" role=\"img\" "
            f"aria-label=\"{esc(label)}\">"
            + "".join(ticks) + "".join(parts) + legend + "</svg>")


def concurrency_svg(view: dict[str, Any]) -> str:
    """A job too big to draw attempt by attempt: how many of its maps and
    reduces ran at each moment (``views.concurrency``), stacked."""
    c = view["concurrency"]
    t0, span, slices = c["start"], max(c["end"] - c["start"], 1e-3), c["samples"]
    levels = [c["series"][name] for name, _ in _SERIES[:2]]
    peak = max(max(map(sum, zip(*levels)), default=0.0), 1.0)
    top, height = 24, 200
    scale, w = height / peak, _WIDTH / slices

    def edge(heights: list[float]) -> list[str]:
        return [f"{_LEFT + (k + half) * w:.1f},{top + height - h * scale:.1f}"
                for k, h in enumerate(heights) for half in (0, 1)]

    parts = [f"<text class=\"tick\" x=\"{_LEFT - 6}\" y=\"{top + 4}\" text-anchor=\"end\">"
             f"{peak:.0f}</text><text class=\"tick\" x=\"{_LEFT - 6}\" y=\"{top + height}\" "
             f"text-anchor=\"end\">0</text>"]
    base = [0.0] * slices
    for (name, colour), series in zip(_SERIES[:2], levels):
        if not any(series):
            continue
        upper = [b + h for b, h in zip(base, series)]
        points = edge(upper) + edge(base)[::-1]
        parts.append(f"<polygon class=\"area {name}\" fill=\"{colour}\" "
                     f"points=\"{' '.join(points)}\"><title>{name}</title></polygon>")
        base = upper
    note = (f"<p class=\"note\">{view['attempts_total']} attempts, too many to draw one by "
            f"one: how many ran, counted every {fmt_secs(span / slices)}; "
            f"{peak:.0f} at most.</p>")
    return note + _chart(parts, t0, span, top, top + height,
                         "running attempts of the job over time", _SERIES[:2])


def job_page(view: dict[str, Any], now: float) -> str:
    live = view["state"] == "running"
    err = view.get("error")
    phases = view.get("phases") or {}
    phase_text = "; ".join(
        f"{name} phase {fmt_secs(p['seconds'])} (+{fmt_secs(p['start'] - view['submitted'])}"
        f" to +{fmt_secs(p['end'] - view['submitted'])})"
        for name, p in phases.items() if p)
    facts = [
        ("state", _state(view["state"])),
        ("owner", esc(view.get("owner", ""))),
        ("file", f"<span class=\"path\">{esc(view['filename'])}</span>"),
        ("inputs", "<br>".join(f"<span class=\"path\">{esc(p)}</span>"
                               for p in view.get("inputs") or [])),
        ("output", f"<span class=\"path\">{esc(view['output'])}</span>"),
        ("functions", f"{esc(view.get('map_name', 'map'))} / "
                      f"{esc(view.get('reduce_name', 'reduce'))}"),
        ("arguments", "<br>".join(f"<span class=\"path\">{esc(k)}={esc(v)}</span>"
                                  for k, v in sorted((view.get("args") or {}).items()))
         or "none"),
        ("step", esc(f"{view.get('step', 1)} of {view.get('steps', 1)}")
         + (" (maps and reduces below are this step's)" if live else "")),
        ("maps", _progress(view.get("maps")) or esc(view["num_maps"])),
        ("reduces", _progress(view.get("reduces")) or esc(view["num_reducers"])),
        ("failed attempts", esc(view.get("failed_attempts", 0))),
        ("submitted", esc(fmt_time(view["submitted"]))),
        ("finished", esc(fmt_time(view.get("finished")))),
        ("duration", esc(fmt_secs(view["elapsed"]))),
        ("phases", esc(phase_text)),
    ]
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    error = (f"<h2>Error</h2><div class=\"job-error\">{_error(err, 'job-error')}</div>"
             if err else "")
    job_id = view["job_id"]
    body = (
        f"<h1>Job <span id=\"job-id\">{esc(job_id)}</span></h1>"
        f"<table class=\"facts\">{rows}</table>{error}"
        f"<h2>Timeline</h2>{timeline_svg(view, now)}"
        f"<h2>Counters</h2>{counters_table(view.get('counters') or {})}"
        f"<h2>Attempts</h2>{attempts_table(view)}"
        f"<p class=\"api\">JSON: <a href=\"{esc(url('api', 'jobs', job_id))}\">"
        f"{esc(url('api', 'jobs', job_id))}</a></p>"
    )
    return page(f"pytxmr {job_id}", body, live=live)


def log_page(job_id: str, attempt_id: str, text: str | None) -> str:
    body = (f"<h1>Log of <a href=\"{esc(url('jobs', job_id))}\">{esc(job_id)}</a> "
            f"attempt {esc(attempt_id)}</h1>"
            + (f"<pre class=\"log\">{esc(text)}</pre>" if text else
               "<p class=\"empty\">This attempt printed nothing (or its log is no longer "
               "kept).</p>"))
    return page(f"pytxmr log {attempt_id}", body, live=False)


def error_page(title: str, why: str) -> str:
    return page(f"pytxmr: {title.lower()}", f"<h1>{esc(title)}</h1><p>{esc(why)}</p>",
                live=False)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#2d3e50;padding:8px 16px}header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:8px 16px}h1{font-size:20px}h2{font-size:16px;margin-top:20px}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f0f0f0}.num{text-align:right}
.facts th{width:9em}.path{font-family:monospace}
.state{padding:1px 6px;border-radius:3px;background:#eee}.state.succeeded{background:#cfe8cf}
.state.failed{background:#f5c6c6}.state.running{background:#d6e4f5}.state.killed{background:#ddd}
pre{background:#f4f4f4;padding:8px;overflow:auto;max-height:40em;white-space:pre-wrap}
.error{color:#a00}.host,.run,.now,.note{color:#777}tr.lost{color:#999}
svg.timeline{background:#fff;border:1px solid #ddd;max-width:1000px;font-size:11px}
progress{width:7em;vertical-align:middle}
"""

JS = """
(function () {
  "use strict";
  function openDetails() {
    return Array.from(document.querySelectorAll("details[open]"))
      .map(function (d) { return d.id; });
  }
  function tick() {
    if (document.body.dataset.live !== "1") { return; }
    var open = openDetails();
    fetch(location.href, {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.querySelector("main");
        if (!fresh) { return; }
        document.querySelector("main").replaceWith(document.adoptNode(fresh));
        open.forEach(function (id) {
          var d = id && document.getElementById(id);
          if (d) { d.open = true; }
        });
        document.body.dataset.live = doc.body.dataset.live;
      })
      .catch(function () {})
      .finally(function () { setTimeout(tick, 1000); });
  }
  setTimeout(tick, 1000);
})();
"""
