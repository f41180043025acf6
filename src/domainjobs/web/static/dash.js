/* domainjobs dashboard: confirmation dialogs, uPlot charts fed by /api/dashboard/trends,
   and live refresh of the overview's [data-live] sections. No framework, no build step. */
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";
  var page = document.body.getAttribute("data-page");
  window.dashCharts = [];

  // -- confirmation: <form data-confirm="question"> opens the dialog, then posts ----------
  var dialog = document.getElementById("confirm");
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (!question || form.getAttribute("data-confirmed") === "1") return;
    event.preventDefault();
    if (!dialog || typeof dialog.showModal !== "function") {
      if (window.confirm(question)) send(form);
      return;
    }
    dialog.querySelector(".question").textContent = question;
    dialog.onclose = function () {
      if (dialog.returnValue === "ok") send(form);
    };
    dialog.returnValue = "";
    dialog.showModal();
  });
  function send(form) {
    var flag = document.createElement("input");
    flag.type = "hidden"; flag.name = "confirmed"; flag.value = "1";
    form.appendChild(flag);
    form.setAttribute("data-confirmed", "1");
    form.submit();
  }

  // -- charts ----------------------------------------------------------------------------
  var palette = ["#4f6bed", "#1f9d55", "#c77c02", "#9b59b6", "#0ea5a4", "#e4572e", "#6b7280", "#d946ef"];
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function fmtMs(v) {
    if (v == null) return "–";
    if (v < 1000) return Math.round(v) + " ms";
    if (v < 60000) return (v / 1000).toFixed(1) + " s";
    return (v / 60000).toFixed(1) + " min";
  }
  function fmtRate(v) { return v == null ? "–" : (Math.round(v * 10) / 10).toString(); }

  function shape(kind, payload) {
    var x = payload.x.map(function (t) { return t; });
    var series = [], data = [x];
    if (kind === "throughput") {
      var done = x.map(function () { return 0; }), failed = x.map(function () { return 0; });
      payload.series.forEach(function (s) {
        s.done.forEach(function (v, i) { done[i] += v; });
        s.failed.forEach(function (v, i) { failed[i] += v + s.retried[i]; });
      });
      data.push(done, failed);
      series.push({ label: "done", stroke: css("--ok"), fill: "color-mix(in srgb, " + css("--ok") + " 12%, transparent)", width: 2 });
      series.push({ label: "failed + retried", stroke: css("--bad"), width: 2 });
      return { data: data, series: series, fmt: fmtRate };
    }
    payload.series.forEach(function (s, i) {
      var values = kind === "failed"
        ? s.failed.map(function (v, j) { return v + s.retried[j]; })
        : s[kind];
      data.push(values);
      series.push({ label: s.name, stroke: palette[i % palette.length], width: 2, spanGaps: kind === "wait" });
    });
    return { data: data, series: series, fmt: kind === "wait" ? fmtMs : fmtRate };
  }

  function hasData(data) {
    for (var i = 1; i < data.length; i++) {
      for (var j = 0; j < data[i].length; j++) if (data[i][j]) return true;
    }
    return false;
  }

  function chartHeight() { return window.matchMedia("(max-width: 600px)").matches ? 180 : 200; }

  var cache = {};
  function load(win, by) {
    var key = win + "/" + by;
    if (!cache[key]) {
      cache[key] = fetch(base + "/api/dashboard/trends?window=" + encodeURIComponent(win) + "&by=" + encodeURIComponent(by), { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
      setTimeout(function () { delete cache[key]; }, 2000);
    }
    return cache[key];
  }

  function draw(el) {
    var kind = el.getAttribute("data-chart"), win = el.getAttribute("data-window") || "1h";
    var by = el.getAttribute("data-by") || "queue";
    return load(win, by).then(function (payload) {
      var shaped = shape(kind, payload);
      var empty = el.querySelector(".chart-empty");
      var any = hasData(shaped.data);
      if (!any && !empty) {
        empty = document.createElement("div");
        empty.className = "chart-empty";
        empty.textContent = payload.trends ? "No jobs ended in this window yet" : "This broker keeps no trend data";
        el.appendChild(empty);
      } else if (any && empty) {
        empty.remove();
      }
      if (el._plot && el._plot.series.length === shaped.series.length + 1) {
        el._plot.setData(shaped.data);
        el._plot.dashHasData = any;
        return;
      }
      if (el._plot) { el._plot.destroy(); }
      var grid = { stroke: css("--line"), width: 1 };
      var axis = { stroke: css("--muted"), grid: grid, ticks: { stroke: css("--line") }, font: "11px system-ui, sans-serif" };
      var opts = {
        width: Math.max(200, el.clientWidth),
        height: chartHeight(),
        scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max || 0, kind === "wait" ? 10 : 1) * 1.1]; } } },
        axes: [axis, Object.assign({}, axis, { size: 52, values: function (u, vals) { return vals.map(shaped.fmt); } })],
        series: [{ label: "time" }].concat(shaped.series.map(function (s) {
          return Object.assign({ points: { show: false }, value: function (u, v) { return shaped.fmt(v); } }, s);
        })),
        legend: { live: true },
        cursor: { points: { size: 6 } }
      };
      el._plot = new uPlot(opts, shaped.data, el);
      el._plot.dashKind = kind;
      el._plot.dashHasData = any;
      window.dashCharts.push(el._plot);
    }).catch(function () { /* the next refresh tries again */ });
  }

  var charts = Array.prototype.slice.call(document.querySelectorAll(".chart[data-chart]"));
  if (charts.length && window.uPlot) {
    charts.forEach(draw);
    setInterval(function () { charts.forEach(draw); }, 10000);
    var resize = function () {
      charts.forEach(function (el) { if (el._plot) el._plot.setSize({ width: Math.max(200, el.clientWidth), height: chartHeight() }); });
    };
    if (window.ResizeObserver) {
      var ro = new ResizeObserver(function () { window.requestAnimationFrame(resize); });
      charts.forEach(function (el) { ro.observe(el); });
    } else {
      window.addEventListener("resize", resize);
    }
  }

  // -- live sections of the overview: refetch the page, swap [data-live] blocks ------------
  if (page === "overview") {
    setInterval(function () {
      if (document.hidden || (dialog && dialog.open)) return;
      fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "dashboard" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          doc.querySelectorAll("[data-live]").forEach(function (fresh) {
            var old = document.querySelector('[data-live="' + fresh.getAttribute("data-live") + '"]');
            if (old && old.innerHTML !== fresh.innerHTML) old.innerHTML = fresh.innerHTML;
          });
        })
        .catch(function () {});
    }, 5000);
  }
})();
