// floor-agent dashboard: the live feeds (server-sent events).
// /events: new rows are inserted as they arrive. The overview and the wall: the server sends a
// `changed` note only when a state or an alert moved; the page refetches its tables alone
// (/overview/state), at most once every few seconds, never reloading itself. /alerts: a banner
// offers to reload when alerts arrive. No framework, no inline script (the CSP forbids it).
"use strict";

(function () {
  var status = document.querySelector("[data-testid=live-status]");
  if (!status || !window.EventSource) { return; }
  var stream = status.dataset.stream || "/events/stream";
  var feed = document.querySelector("table#feed tbody");
  var url = stream;
  if (feed) {
    var params = new URLSearchParams(window.location.search);
    params.delete("format");
    if (params.toString()) { url += "?" + params.toString(); }
  }
  var source = new EventSource(url);
  var MAX_ROWS = 500;

  function set(state) { status.textContent = state; status.className = "live " + state; }

  // --- /events: the feed ---------------------------------------------------------------------
  function cell(row, text, cls, link, title) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    if (title) { td.title = title; }
    if (link) {
      var a = document.createElement("a");
      a.href = link; a.textContent = text; td.appendChild(a);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
  }

  function dataText(data) {
    var parts = [];
    Object.keys(data || {}).forEach(function (k) {
      var v = data[k];
      parts.push(k + "=" + (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)));
    });
    return parts.join(" ").slice(0, 300);
  }

  // as timefmt.short_time: 2026-11-29T14:03:05.123456Z -> 11-29 14:03:05
  function shortTime(ts) {
    return /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/.test(ts)
      ? ts.slice(5, 10) + " " + ts.slice(11, 19) : ts;
  }

  function prepend(e) {
    var empty = feed.querySelector("tr.empty");
    if (empty) { empty.remove(); }
    var row = document.createElement("tr");
    row.dataset.testid = "event-row";
    row.dataset.agent = e.agent_id;
    row.dataset.seq = String(e.seq);
    row.dataset.kind = e.kind;
    row.dataset.severity = e.severity;
    row.className = "new";
    cell(row, shortTime(e.ts), "nowrap", "/events/" + encodeURIComponent(e.agent_id) + "/" + e.seq,
         e.ts);
    cell(row, e.agent_id, "nowrap");
    cell(row, String(e.seq), "nowrap");
    cell(row, e.kind, "nowrap");
    cell(row, e.severity, "sev-" + e.severity + " nowrap");
    cell(row, e.subject);
    cell(row, dataText(e.data), "data");
    cell(row, shortTime(e.ingested_at), "nowrap", null, e.ingested_at);  // received
    feed.insertBefore(row, feed.firstChild);
    while (feed.rows.length > MAX_ROWS) { feed.deleteRow(feed.rows.length - 1); }
  }

  // --- the overview and the wall: redraw the tables, throttled -------------------------------
  var state = document.getElementById("overview-state");
  var wall = !!document.body.dataset.wall;
  var MIN_GAP_MS = wall ? 3000 : 5000;   // at most one redraw per this, however busy the floor
  // heartbeat ages move without any event; camera pictures arrive without one
  var PERIODIC_MS = (state && Number(state.dataset.periodicMs)) || 30000;
  var lastDraw = Date.now();
  var timer = null;
  var fetching = false;

  function redraw() {
    timer = null;
    if (fetching) { schedule(); return; }
    fetching = true;
    lastDraw = Date.now();
    window.fetch(state.dataset.stateUrl, {credentials: "same-origin", cache: "no-store"})
      .then(function (answer) {
        if (answer.status === 401) { window.location.reload(); return null; }  // to the login
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          swap(html);
          document.body.dataset.redraws = String(Number(document.body.dataset.redraws || 0) + 1);
        }
      })
      .catch(function () { set("offline"); })
      .then(function () { fetching = false; });
  }

  // Swap in the redrawn part, keeping each picture whose address did not change (the camera
  // tiles: a picture is fetched again only when a newer one arrived, as its ?at= says).
  function swap(html) {
    var kept = {};
    state.querySelectorAll("img[src]").forEach(function (img) { kept[img.getAttribute("src")] = img; });
    var next = document.createElement("template");
    next.innerHTML = html;
    next.content.querySelectorAll("img[src]").forEach(function (img) {
      var old = kept[img.getAttribute("src")];
      if (old) { img.replaceWith(old); }
    });
    state.replaceChildren(next.content);
  }

  function schedule() {
    if (timer) { return; }  // one redraw pending covers every change until it runs
    var wait = Math.max(250, lastDraw + MIN_GAP_MS - Date.now());
    timer = window.setTimeout(redraw, wait);
  }

  if (state) {
    window.setInterval(function () {
      if (Date.now() - lastDraw >= PERIODIC_MS) { schedule(); }
    }, 5000);
  }

  // --- /alerts: offer to reload --------------------------------------------------------------
  var banner = document.querySelector("[data-testid=new-alerts]");
  var arrived = 0;

  function announce(alert) {
    arrived += 1;
    banner.querySelector(".what").textContent = arrived === 1
      ? "new alert: " + alert.kind + " (" + alert.severity + ") on " + (alert.agent_id || "-")
      : arrived + " new alerts, the latest " + alert.kind + " on " + (alert.agent_id || "-");
    banner.querySelector("a").href = window.location.pathname + window.location.search;
    banner.hidden = false;
  }

  source.addEventListener("open", function () { set("live"); });
  source.addEventListener("error", function () { set("offline"); });
  source.addEventListener("audit", function (msg) {
    set("live");
    if (feed) { prepend(JSON.parse(msg.data)); }
  });
  source.addEventListener("changed", function () {
    set("live");
    if (state) { schedule(); }
  });
  source.addEventListener("alert", function (msg) {
    set("live");
    if (banner) { announce(JSON.parse(msg.data)); }
  });
  source.addEventListener("lagged", function () {
    if (feed) { window.location.reload(); }
    if (state) { schedule(); }
  });
})();
