// Pythia report: the only script. Switches session timelines and, on live pages,
// refreshes the content from the server without reloading (scroll position kept).
(function () {
  "use strict";
  function wireTimelines(root) {
    root.querySelectorAll("select.timeline-pick").forEach(function (select) {
      select.addEventListener("change", function () {
        var box = select.closest("[data-section='timeline']");
        box.querySelectorAll("figure.session-timeline").forEach(function (fig) {
          fig.hidden = fig.getAttribute("data-index") !== select.value;
        });
      });
    });
  }
  function liveRefresh() {
    var body = document.body;
    var seconds = Number(body.getAttribute("data-refresh-s") || "0");
    if (!(seconds > 0)) return;
    var status = document.getElementById("live-status");
    function tick() {
      fetch(window.location.href, { headers: { "accept": "text/html" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (text) {
          var fresh = new DOMParser().parseFromString(text, "text/html");
          var next = fresh.querySelector("main");
          var current = document.querySelector("main");
          if (!next || !current) return;
          var picks = {};
          current.querySelectorAll("select.timeline-pick").forEach(function (s) {
            picks[s.getAttribute("data-workflow")] = s.value;
          });
          current.replaceWith(next);
          wireTimelines(next);
          next.querySelectorAll("select.timeline-pick").forEach(function (s) {
            var want = picks[s.getAttribute("data-workflow")];
            if (want !== undefined && s.querySelector("option[value='" + want + "']")) {
              s.value = want;
              s.dispatchEvent(new Event("change"));
            }
          });
          var stamp = fresh.getElementById("generated-at");
          var mine = document.getElementById("generated-at");
          if (stamp && mine) mine.textContent = stamp.textContent;
          if (status) { status.textContent = "live, refreshed every " + seconds + " s"; status.className = ""; }
          body.setAttribute("data-refreshes", String(Number(body.getAttribute("data-refreshes") || "0") + 1));
        })
        .catch(function (err) {
          if (status) { status.textContent = "stale: " + err.message; status.className = "stale"; }
        });
    }
    window.setInterval(tick, seconds * 1000);
  }
  wireTimelines(document);
  liveRefresh();
})();
