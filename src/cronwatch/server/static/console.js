// cronwatch console: small enhancements; every page works without them.
"use strict";
(function () {
  // Times: the viewer's zone in the text, UTC kept in the title (shown on hover).
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.textContent = d.toLocaleString(); }
    });
  }

  // Copy buttons: the text of the element named by data-copy.
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest && ev.target.closest("button[data-copy]");
    if (!b) { return; }
    var el = document.getElementById(b.getAttribute("data-copy"));
    if (!el || !navigator.clipboard) { return; }
    navigator.clipboard.writeText(el.textContent).then(function () {
      var was = b.textContent; b.textContent = "Copied";
      setTimeout(function () { b.textContent = was; }, 1500);
    });
  });

  // Live pages: on any event, fetch this page again and swap its live regions (the
  // server renders and escapes them; nothing of an event's data reaches the page).
  function live() {
    if (!document.body.hasAttribute("data-live") || !window.EventSource) { return; }
    var status = document.getElementById("live-status");
    // At most one refresh every 2 s, however busy the server: each is a whole page.
    var pending = null, busy = false, last = 0;
    function refresh() {
      pending = null;
      if (busy) { pending = setTimeout(refresh, 300); return; }
      busy = true; last = Date.now();
      fetch(location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var doc = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-region][id]").forEach(function (el) {
            var fresh = doc.getElementById(el.id);
            if (fresh) { el.innerHTML = fresh.innerHTML; localTimes(el); }
          });
          var count = doc.getElementById("count"), mine = document.getElementById("count");
          if (count && mine) { mine.textContent = count.textContent; }
          if (status) { status.textContent = "Updated " + new Date().toLocaleTimeString(); }
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }
    var es = new EventSource("/console/stream");
    function later() {
      if (!pending) { pending = setTimeout(refresh, Math.max(250, last + 2000 - Date.now())); }
    }
    ["run.started", "run.ok", "run.error", "run.log", "job.missed", "job.timeout",
     "job.recovered", "incident.opened", "incident.closed"].forEach(function (t) {
      es.addEventListener(t, later);
    });
    es.onmessage = later;
    es.onopen = function () { if (status) { status.textContent = "Live"; } };
  }

  // The job form: the schedule in words and its next five times as you type.
  function preview() {
    var sched = document.getElementById("f-schedule"), tz = document.getElementById("f-tz");
    var out = document.getElementById("schedule-preview");
    if (!sched || !out) { return; }
    var timer = null;
    function show(data) {
      out.textContent = "";
      if (!data.ok) {
        var e = document.createElement("span"); e.className = "error"; e.id = "schedule-error";
        e.textContent = data.error; out.appendChild(e); return;
      }
      var w = document.createElement("strong"); w.id = "schedule-words";
      w.textContent = data.words; out.appendChild(w);
      if (data.next.length) {
        var label = document.createElement("span"); label.textContent = " Next expected:";
        out.appendChild(label);
        var ol = document.createElement("ol"); ol.id = "schedule-next";
        data.next.forEach(function (n) {
          var li = document.createElement("li"), t = document.createElement("time");
          t.setAttribute("datetime", n.iso); t.title = n.utc;
          t.textContent = new Date(n.iso).toLocaleString();
          li.appendChild(t); ol.appendChild(li);
        });
        out.appendChild(ol);
      }
    }
    function ask() {
      var q = new URLSearchParams({schedule: sched.value, tz: tz ? tz.value : "UTC"});
      fetch("/schedule?" + q.toString(), {credentials: "same-origin"})
        .then(function (r) { return r.json(); }).then(show).catch(function () {});
    }
    function changed() { clearTimeout(timer); timer = setTimeout(ask, 200); }
    sched.addEventListener("input", changed);
    if (tz) { tz.addEventListener("input", changed); }
  }

  // Filters apply as they change (the Filter button stays for keyboards and no-JS).
  function filters() {
    var f = document.querySelector("form.filters");
    if (!f) { return; }
    f.querySelectorAll("select").forEach(function (s) {
      s.addEventListener("change", function () { f.submit(); });
    });
  }

  function start() { localTimes(document); live(); preview(); filters(); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else { start(); }
})();
