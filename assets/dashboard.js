// barkeep dashboard: reads the JSON API of `barkeep serve` and draws the
// tasks, alerts, quality, run log, quarantine and a candlestick chart of
// the bars (with the live partial bar). No network but this server.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
const COLORS = { up: "#26a69a", down: "#ef5350", poor: "#f5a623", partial: "#7e8cf0" };
const $ = (id) => document.getElementById(id);
const check = { tasks: 0, bars: 0, pixels: 0, errors: [] };

async function api(path) {
  const res = await fetch(path, { headers, cache: "no-store" });
  const body = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) throw new Error(path.split("?")[0] + ": " + (body.error || res.status));
  return body;
}

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const time = (t) => (t ? t.replace("T", " ").replace(/:\d\d(\.\d+)?(Z|\+00:00)$/, "") : "—");
function dur(s) {
  if (s == null) return "—";
  if (s === 0) return "0";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 7200) return (s / 60).toFixed(0) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}
// Minutes as seconds; a cursor ahead of the newest 1m bar is no lag.
const min = (m) => (m == null ? null : Math.max(0, m) * 60);

// A task's trouble, by the thresholds `barkeep alerts` uses by default:
// "bad" (hard_failed, a streak, no success for an hour), "warn" (a complete
// bucket left unaggregated for an hour, transient retries), or "".
function trouble(t) {
  if (t.status === "hard_failed" || t.hard_fail_streak > 0) return "bad";
  if (t.is_mandatory && t.enabled && t.minutes_since_success > 60) return "bad";
  if (t.enabled && t.behind_minutes > 60) return "warn";
  if (t.transient_fail_streak > 0) return "warn";
  return "";
}

let tasks = [];
const TASK_ROWS = 500;

function renderTasks() {
  const sym = $("f-symbol").value.trim().toUpperCase();
  const status = $("f-status").value;
  const badOnly = $("f-bad").checked;
  const rows = tasks.filter((t) => (!sym || t.symbol.includes(sym)) && (!status || t.status === status) && (!badOnly || trouble(t)));
  // A table of thousands of rows makes every refresh slow to draw: show the
  // first TASK_ROWS matches and say how many more the filter would reveal.
  const shown = rows.slice(0, TASK_ROWS);
  $("task-count").textContent = rows.length + (rows.length !== tasks.length ? " of " + tasks.length : "") +
    (shown.length < rows.length ? ` (first ${shown.length} shown; filter to see the rest)` : "");
  const html = shown.map((t) => {
    const k = trouble(t);
    return `<tr class="${k}"><td>${esc(t.symbol)}</td><td>${t.timeframe}</td><td><span class="status ${esc(t.status)}">${esc(t.status)}${t.enabled ? "" : " (off)"}</span></td>` +
      `<td>${time(t.cursor)}</td><td>${dur(min(t.lag_minutes))}</td><td>${dur(min(t.behind_minutes))}</td><td>${dur(min(t.minutes_since_success))}</td>` +
      `<td>${t.hard_fail_streak}${t.transient_fail_streak ? " / " + t.transient_fail_streak + "t" : ""}</td><td>${t.total_runs}</td><td>${t.total_bars_created}</td>` +
      `<td>${time(t.next_run_at)}</td><td class="err">${esc(t.last_error)}</td></tr>`;
  }).join("");
  $("tasks").tBodies[0].innerHTML = html || `<tr><td colspan="12" class="muted">no task matches</td></tr>`;
  check.tasks = shown.length;
}

function renderTiles(health, alerts, quarantine) {
  const st = health.tasks || {};
  const total = Object.values(st).reduce((a, b) => a + b, 0);
  const tiles = [
    ["tasks", total, ""],
    ["running", st.running || 0, ""],
    ["hard_failed", st.hard_failed || 0, st.hard_failed ? "bad" : ""],
    ["alerts", alerts.alerts.length, alerts.severity === "critical" ? "bad" : alerts.severity === "warning" ? "warn" : ""],
    ["quarantined rows", quarantine.rows, quarantine.rows ? "warn" : ""],
    ["newest 1m bar", time(health.newest_1m), ""],
  ];
  $("tiles").innerHTML = tiles.map(([name, v, k]) => `<div class="tile ${k}"><b>${esc(v)}</b><span>${esc(name)}</span></div>`).join("");
  const pill = $("overall");
  pill.className = "pill " + alerts.severity;
  pill.textContent = alerts.severity === "ok" ? "all good" : alerts.severity;
}

function renderAlerts(a) {
  $("alert-count").textContent = a.alerts.length;
  $("alerts").innerHTML = a.alerts.length
    ? a.alerts.slice(0, 200).map((x) => `<li class="${x.severity}"><b>${esc(x.kind)}</b> ${esc(x.symbol)} ${esc(x.timeframe)} — ${esc(x.message)}</li>`).join("")
    : `<li class="none">no alert condition is met</li>`;
}

// The quality report has one line per symbol and timeframe; the card sums
// them per timeframe.
function renderQuality(q) {
  $("quality-window").textContent = q.from ? `(since ${time(q.from)})` : "";
  const byTf = new Map();
  for (const l of q.lines) {
    const t = byTf.get(l.timeframe) || { timeframe: l.timeframe, bars: 0, good: 0, poor: 0, present: 0, expected: 0 };
    t.bars += l.total_bars; t.good += l.good_bars; t.poor += l.poor_bars;
    t.present += l.minutes_present; t.expected += l.minutes_expected;
    byTf.set(l.timeframe, t);
  }
  const pctOf = (a, b) => (b ? Math.round((1000 * a) / b) / 10 : null);
  const cell = (pct) => {
    if (pct == null) return "—";
    const cls = pct >= q.threshold_pct ? "" : pct >= 60 ? "low" : "bad";
    return `<span class="bar ${cls}" style="width:${Math.max(2, pct)}px"></span>${pct}%`;
  };
  $("quality").tBodies[0].innerHTML = [...byTf.values()].map((t) => {
    const pct = pctOf(t.good, t.bars);
    const cov = pctOf(t.present, t.expected);
    const low = (pct != null && pct < q.threshold_pct) || (cov != null && cov < q.threshold_pct);
    return `<tr class="${low ? "warn" : ""}"><td>${t.timeframe}</td><td>${t.bars}</td><td>${t.good}</td><td>${t.poor}</td><td>${cell(pct)}</td><td>${cell(cov)}</td></tr>`;
  }).join("") || `<tr><td colspan="6" class="muted">no bars yet</td></tr>`;
}

function renderRuns(runs) {
  $("runs").tBodies[0].innerHTML = runs.map((r) =>
    `<tr class="${r.status === "failed" ? "bad" : r.status === "transient" ? "warn" : ""}"><td>${time(r.finished_at)}</td><td>${esc(r.symbol)}</td><td>${r.timeframe}</td>` +
    `<td><span class="status ${esc(r.status)}">${esc(r.status)}</span></td><td>${dur(r.duration_seconds)}</td><td>${r.bars_created}</td><td>${r.bars_quality_poor}</td>` +
    `<td>${time(r.cursor_to)}</td><td>${esc(r.worker_id)}</td><td class="err">${esc(r.error)}</td></tr>`).join("") ||
    `<tr><td colspan="10" class="muted">no run logged yet</td></tr>`;
}

function renderQuarantine(q) {
  $("quarantine-count").textContent = q.rows;
  $("quarantine-files").textContent = q.rows ? `${q.rows} rows from ${q.files} file${q.files === 1 ? "" : "s"}; newest:` : "the quarantine is empty";
  $("quarantine-newest").innerHTML = q.newest.map((e) => `<li>${time(e.quarantined_at)} ${esc(e.file)}:${e.line} ${esc(e.symbol ?? "")} — ${esc(e.reason)}</li>`).join("");
}

// The chart.
let chart, candles, volume, chartKey = "";
function ensureChart() {
  if (chart) return;
  const LC = window.LightweightCharts;
  chart = LC.createChart($("chart"), {
    autoSize: true,
    layout: { background: { color: "#171e26" }, textColor: "#b4bfcc" },
    grid: { vertLines: { color: "#1f2832" }, horzLines: { color: "#1f2832" } },
    timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#26313d" },
    rightPriceScale: { borderColor: "#26313d" },
  });
  candles = chart.addSeries(LC.CandlestickSeries, {
    upColor: COLORS.up, downColor: COLORS.down, borderVisible: false,
    wickUpColor: COLORS.up, wickDownColor: COLORS.down, priceFormat: { type: "price", precision: 5, minMove: 0.00001 },
  });
  volume = chart.addSeries(LC.HistogramSeries, { priceFormat: { type: "volume" }, priceScaleId: "", lastValueVisible: false, priceLineVisible: false });
  volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  candles.priceScale().applyOptions({ scaleMargins: { top: 0.05, bottom: 0.25 } });
}

async function renderChart() {
  const symbol = $("symbol").value;
  if (!symbol) { $("chart-info").textContent = "no symbol registered"; return; }
  const tf = $("timeframe").value;
  const partial = $("partial").checked;
  const page = await api(`/api/bars?symbol=${encodeURIComponent(symbol)}&timeframe=${tf}&limit=1500&partial=${partial}`);
  ensureChart();
  const poor = (b) => b.quality_score != null && b.quality_score <= 0;
  const color = (b) => (b.is_partial ? COLORS.partial : poor(b) ? COLORS.poor : null);
  candles.setData(page.bars.map((b) => {
    const c = color(b);
    const d = { time: Date.parse(b.ts_utc) / 1000, open: b.open, high: b.high, low: b.low, close: b.close };
    return c ? { ...d, color: c, wickColor: c } : d;
  }));
  volume.setData(page.bars.map((b) => ({
    time: Date.parse(b.ts_utc) / 1000, value: b.vol,
    color: b.is_partial ? "rgba(126,140,240,.6)" : poor(b) ? "rgba(245,166,35,.55)" : b.close >= b.open ? "rgba(38,166,154,.45)" : "rgba(239,83,80,.45)",
  })));
  const key = symbol + "/" + tf;
  if (key !== chartKey) { chart.timeScale().fitContent(); chartKey = key; }
  const last = page.bars[page.bars.length - 1];
  const nPoor = page.bars.filter(poor).length;
  $("chart-info").textContent = `${page.count} bars (${page.calendar} calendar)` + (nPoor ? `, ${nPoor} of quality ≤ 0` : "") +
    (last ? `, last ${time(last.ts_utc)}${last.is_partial ? " (partial, " + last.source_candles + "/" + last.expected_candles + " " + last.source_timeframe + ")" : ""}` : "");
  check.bars = page.count;
  requestAnimationFrame(() => requestAnimationFrame(countPixels));
}

// Self-check for tests and monitoring of the page itself: how many pixels of
// candle colours the chart's canvases hold.
function countPixels() {
  let n = 0;
  const want = [COLORS.up, COLORS.down, COLORS.poor, COLORS.partial].map((h) => [1, 3, 5].map((i) => parseInt(h.substr(i, 2), 16)));
  for (const canvas of $("chart").querySelectorAll("canvas")) {
    if (!canvas.width || !canvas.height) continue;
    let data;
    try { data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data; } catch (e) { continue; }
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] < 200) continue;
      for (const [r, g, b] of want) {
        if (Math.abs(data[i] - r) < 8 && Math.abs(data[i + 1] - g) < 8 && Math.abs(data[i + 2] - b) < 8) { n++; break; }
      }
    }
  }
  check.pixels = n;
  writeCheck(true);
}

function writeCheck(ready) {
  const el = $("selfcheck");
  el.dataset.taskRows = check.tasks;
  el.dataset.bars = check.bars;
  el.dataset.candlePixels = check.pixels;
  el.dataset.errors = check.errors.join(" | ");
  if (ready) el.dataset.ready = "1";
  el.textContent = `selfcheck tasks=${check.tasks} bars=${check.bars} pixels=${check.pixels} ready=${el.dataset.ready || 0} errors=${check.errors.length}`;
}

async function loadSymbols() {
  const symbols = await api("/api/symbols");
  const sel = $("symbol");
  const wanted = params.get("symbol") || sel.value;
  sel.innerHTML = symbols.map((s) => `<option ${s.symbol === wanted ? "selected" : ""}>${esc(s.symbol)}</option>`).join("");
  const tf = params.get("timeframe");
  if (tf) $("timeframe").value = tf;
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  check.errors = [];
  const guard = (p) => p.catch((e) => { check.errors.push(e.message); return null; });
  try {
    const [health, alerts, taskList, quality, runs, quarantine] = await Promise.all([
      guard(api("/api/health")), guard(api("/api/alerts")), guard(api("/api/tasks")),
      guard(api("/api/quality")), guard(api("/api/runs?limit=50")), guard(api("/api/quarantine")),
    ]);
    if (taskList) { tasks = taskList; renderTasks(); }
    if (alerts) renderAlerts(alerts);
    if (health && alerts && quarantine) renderTiles(health, alerts, quarantine);
    if (quality) renderQuality(quality);
    if (runs) renderRuns(runs);
    if (quarantine) renderQuarantine(quarantine);
    await guard(renderChart());
    $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC" + (check.errors.length ? " — " + check.errors.join("; ") : "");
  } finally {
    refreshing = false;
    writeCheck(false);
  }
}

let timer;
function schedule() {
  clearInterval(timer);
  if ($("auto").checked) timer = setInterval(refresh, Number($("every").value) * 1000);
}

async function start() {
  try { await loadSymbols(); } catch (e) { check.errors.push(e.message); }
  for (const id of ["f-symbol", "f-status", "f-bad"]) $(id).addEventListener("input", renderTasks);
  for (const id of ["symbol", "timeframe", "partial"]) $(id).addEventListener("change", () => renderChart().catch((e) => { check.errors.push(e.message); writeCheck(false); }));
  $("auto").addEventListener("change", schedule);
  $("every").addEventListener("change", schedule);
  await refresh();
  schedule();
}
start();
