// floor-agent dashboard: the live feed (server-sent events) and the wall display's refresh.
// No framework, no inline script (the page's Content-Security-Policy forbids it).
"use strict";

(function () {
  var status = document.querySelector("[data-testid=live-status]");
  if (!status || !window.EventSource) { return; }
  var feed = document.querySelector("table#feed tbody");
  var params = new URLSearchParams(window.location.search);
  params.delete("format");
  params.delete("wall");
  var url = "/events/stream" + (feed && params.toString() ? "?" + params.toString() : "");
  var source = new EventSource(url);
  var reloadTimer = null;
  var MAX_ROWS = 500;

  function set(state) { status.textContent = state; status.className = "live " + state; }

  function cell(row, text, cls, link) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
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
    cell(row, e.ts, null, "/events/" + encodeURIComponent(e.agent_id) + "/" + e.seq);
    cell(row, e.agent_id);
    cell(row, String(e.seq));
    cell(row, e.kind);
    cell(row, e.severity, "sev-" + e.severity);
    cell(row, e.subject);
    cell(row, dataText(e.data));
    feed.insertBefore(row, feed.firstChild);
    while (feed.rows.length > MAX_ROWS) { feed.deleteRow(feed.rows.length - 1); }
  }

  source.addEventListener("open", function () { set("live"); });
  source.addEventListener("error", function () { set("offline"); });
  source.addEventListener("audit", function (msg) {
    set("live");
    if (feed) {
      prepend(JSON.parse(msg.data));
    } else if (!reloadTimer) {
      // overview and wall display: redraw from the store (the wall soon, a desk less often)
      var wait = document.body.dataset.wall ? 1500 : 10000;
      reloadTimer = window.setTimeout(function () { window.location.reload(); }, wait);
    }
  });
  source.addEventListener("lagged", function () {
    if (feed) { window.location.reload(); }
  });
})();
