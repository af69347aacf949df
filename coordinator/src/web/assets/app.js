// gantry's dashboard: the jobs and workers tables, and one job's view (live loss and evaluation
// curves, latest sample grid, ranks, attempts). Data: /api/* (JSON) and /api/events
// (server-sent events). No library, nothing fetched from elsewhere; curves are SVG.
'use strict';

const state = {
  jobs: new Map(), // id -> summary
  order: [], // ids, newest first
  total: 0,
  workers: [],
  current: null, // the job in view
  detail: null, // its last /api/jobs/{id}
  points: [], // [step, c_loss, c_wass_loss, c_gp, g_loss, images/s]
  evaluations: [],
  lastFetch: 0,
  fetching: false,
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '';
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (h > 0) return `${h} h ${String(m).padStart(2, '0')} min`;
  if (m > 0) return `${m} min ${String(s).padStart(2, '0')} s`;
  return `${s} s`;
}

function when(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function bytes(n) {
  if (!n) return 'unknown';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

function number(x, digits = 3) {
  if (x === null || x === undefined || !isFinite(x)) return '';
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

function stateBadge(s, id) {
  return el('span', { class: 'state', id, dataset: { state: s }, text: s });
}

function attemptsText(job) {
  const n = job.attempts.length;
  if (n === 0) return '0';
  const parts = [];
  if (job.restarts) parts.push(`${job.restarts} restart${job.restarts > 1 ? 's' : ''}`);
  if (job.preemptions) parts.push(`${job.preemptions} preempted`);
  return parts.length ? `${n} (${parts.join(', ')})` : String(n);
}

function attemptsTitle(job) {
  return job.attempts
    .filter((a) => a.reason)
    .map((a) => `attempt ${a.number}: ${a.reason}`)
    .join('\n');
}

function progress(job, stepId, barId) {
  const pct = job.steps ? Math.min(100, (100 * job.step) / job.steps) : 0;
  const bar = el('div', { id: barId });
  bar.style.width = `${pct}%`;
  return el('div', { class: 'progress' },
    el('div', { class: 'bar' }, bar),
    el('span', { class: 'step', id: stepId, dataset: { step: job.step, steps: job.steps }, text: `${job.step} / ${job.steps}` }));
}

// --- home: jobs and workers -------------------------------------------------------------

function renderJobs() {
  const body = $('#jobs tbody');
  const rows = state.order.map((id) => {
    const job = state.jobs.get(id);
    const row = el('tr', { class: 'link', dataset: { jobId: id, state: job.state } },
      el('td', {}, el('a', { href: `#/jobs/${id}`, text: id })),
      el('td', { text: job.name }),
      el('td', {}, stateBadge(job.state)),
      el('td', {}, progress(job)),
      el('td', { text: job.images_per_sec ? number(job.images_per_sec, 4) : '' }),
      el('td', { class: 'eta', text: job.state === 'RUNNING' ? duration(job.eta_seconds) : '' }),
      el('td', { class: 'attempts', title: attemptsTitle(job) || null, text: attemptsText(job) }),
      el('td', { class: 'why', text: job.reason }));
    row.addEventListener('click', (e) => { if (e.target.tagName !== 'A') location.hash = `#/jobs/${id}`; });
    return row;
  });
  body.replaceChildren(...rows);
  $('#jobs-empty').hidden = rows.length > 0;
  $('#jobs-count').textContent = state.total > rows.length ? `(${rows.length} of ${state.total})` : `(${rows.length})`;
}

function renderWorkers() {
  const rows = state.workers.map((w) => el('tr', { dataset: { workerId: w.id } },
    el('td', { text: w.id }),
    el('td', { text: w.hostname }),
    el('td', { text: w.device }),
    el('td', { text: bytes(w.memory_bytes) }),
    el('td', {}, w.job_id ? el('a', { href: `#/jobs/${w.job_id}`, text: w.job_id }) : (w.draining ? 'stopping' : 'idle')),
    el('td', { text: w.rank === null ? '' : `${w.rank} (attempt ${w.attempt})` }),
    el('td', { text: `${number(w.silent_seconds, 2)} s ago` })));
  $('#workers tbody').replaceChildren(...rows);
  $('#workers-empty').hidden = rows.length > 0;
  $('#workers-count').textContent = `(${rows.length})`;
}

// --- one job ------------------------------------------------------------------------------

function renderJobHead() {
  const job = state.jobs.get(state.current) || (state.detail && state.detail.job);
  if (!job) return;
  $('#job-view').dataset.jobId = job.id;
  $('#job-id').textContent = job.id;
  $('#job-name').textContent = job.name;
  const badge = $('#job-state');
  badge.textContent = job.state;
  badge.dataset.state = job.state;
  const step = $('#job-step');
  step.dataset.step = job.step;
  step.textContent = `step ${job.step} / ${job.steps}`;
  $('#job-bar').style.width = `${job.steps ? Math.min(100, (100 * job.step) / job.steps) : 0}%`;
  $('#job-speed').textContent = job.images_per_sec ? `${number(job.images_per_sec, 4)} images/s` : '';
  $('#job-eta').textContent = job.state === 'RUNNING' && job.eta_seconds ? `ETA ${duration(job.eta_seconds)}` : '';
  const t = job.timing;
  $('#job-timing').textContent = t
    ? `${number(t.step_seconds * 1e3, 3)} ms/step (loader ${number(t.loader_wait_seconds * 1e3, 2)} ms, collectives ${number(t.collective_seconds * 1e3, 2)} ms)`
    : '';
  $('#job-reason').textContent = job.reason;
  $('#job-output').textContent = job.output;
  $('#job-data').textContent = job.data;
  $('#job-config').textContent = `${job.workers} worker${job.workers > 1 ? 's' : ''}, ${job.device}, batch ${job.batch_size}, priority ${job.priority}, max_restarts ${job.max_restarts}`;
  renderAttempts(job);
}

function attemptEnd(job, a) {
  if (a.preempted) return `preempted: ${a.reason}`;
  if (a.reason) return a.reason;
  const last = a.number === job.attempts.length;
  return a.ended_ms && last ? job.state.toLowerCase() : '';
}

function renderAttempts(job) {
  const rows = job.attempts.slice().reverse().map((a) => el('tr', { dataset: { attempt: a.number } },
    el('td', { text: a.number }),
    el('td', { text: when(a.started_ms) }),
    el('td', { text: a.ended_ms ? when(a.ended_ms) : 'running' }),
    el('td', { text: a.resumed_from ? `step ${a.resumed_from}` : '' }),
    el('td', { text: a.workers.join(', ') }),
    el('td', { class: 'why', text: attemptEnd(job, a) })));
  $('#attempts tbody').replaceChildren(...rows);
}

function renderRanks() {
  const ranks = state.detail && state.detail.ranks;
  const body = $('#ranks tbody');
  if (!ranks || !ranks.ranks) { body.replaceChildren(); $('#ranks-attempt').textContent = ''; return; }
  $('#ranks-attempt').textContent = `attempt ${ranks.attempt}${ranks.ended ? ' (ended)' : ''}`;
  body.replaceChildren(...ranks.ranks.map((r) => {
    const live = state.workers.find((w) => w.id === r.worker_id);
    return el('tr', { dataset: { rank: r.rank, workerId: r.worker_id } },
      el('td', { text: r.rank }),
      el('td', { text: r.worker_id + (live ? '' : ' (gone)') }),
      el('td', { text: (live && live.hostname) || r.hostname || '' }),
      el('td', { text: (live && live.device) || r.device || '' }),
      el('td', { text: r.address || '' }));
  }));
}

function renderSample() {
  const sample = state.detail && state.detail.sample;
  const img = $('#sample-img');
  if (!sample) {
    img.hidden = true;
    $('#sample-none').hidden = false;
    $('#sample-step').textContent = '';
    return;
  }
  if (img.getAttribute('src') !== sample.url) img.src = sample.url;
  img.dataset.step = sample.step;
  img.hidden = false;
  $('#sample-none').hidden = true;
  $('#sample-step').textContent = `step ${sample.step}`;
}

function renderEvaluation() {
  const evals = state.evaluations;
  const none = evals.length === 0;
  $('#eval-none').hidden = !none;
  $('#eval-chart').hidden = none;
  $('#eval-classes').hidden = none;
  if (none) return;
  const pick = (key) => evals.map((e) => [e.step, e[key]]);
  chart($('#eval-chart'), [
    { name: 'accuracy', color: '#2f6fdf', values: pick('accuracy') },
    { name: 'label swap', color: '#d9822b', values: pick('label_swap') },
    { name: 'classifier (ceiling)', color: '#8a94a6', values: pick('classifier_accuracy'), dashed: true },
  ], { yMin: 0, yMax: 1, right: [{ name: 'Fréchet', color: '#9b3fb5', values: pick('frechet') }] });
  const latest = evals[evals.length - 1];
  $('#eval-classes tbody').replaceChildren(...latest.classes.map((c) => el('tr', {},
    el('td', { text: c.name }), el('td', { text: number(c.accuracy) }),
    el('td', { text: number(c.frechet) }), el('td', { text: number(c.classifier_accuracy) }))));
}

let drawPending = false;
function renderCurves() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    const p = state.points;
    const series = [
      { name: 'c_loss', color: '#2f6fdf', i: 1 },
      { name: 'c_wass_loss', color: '#1b9e77', i: 2 },
      { name: 'c_gp', color: '#d9822b', i: 3 },
      { name: 'g_loss', color: '#c2185b', i: 4 },
    ].map((s) => ({ name: s.name, color: s.color, values: p.map((row) => [row[0], row[s.i]]) }));
    chart($('#loss-chart'), series, { robust: true });
    const svg = $('#loss-chart svg');
    if (svg) svg.dataset.points = p.length;
  });
}

async function fetchDetail() {
  const id = state.current;
  if (!id || state.fetching) return;
  state.fetching = true;
  state.lastFetch = Date.now();
  try {
    const response = await fetch(`/api/jobs/${encodeURIComponent(id)}`, { credentials: 'same-origin' });
    if (response.status === 401) { location.href = '/login'; return; }
    if (!response.ok) throw new Error(`${response.status}`);
    const detail = await response.json();
    if (state.current !== id) return;
    state.detail = detail;
    state.points = detail.points;
    state.evaluations = detail.evaluations;
    if (!state.jobs.has(id)) state.jobs.set(id, detail.job);
    const problems = $('#job-problems');
    problems.textContent = detail.problems.join('\n');
    problems.hidden = detail.problems.length === 0;
    renderJobHead();
    renderRanks();
    renderSample();
    renderCurves();
    renderEvaluation();
  } catch (e) {
    console.warn('job detail', e);
  } finally {
    state.fetching = false;
  }
}

// --- charts -------------------------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function quantile(sorted, q) {
  if (!sorted.length) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
  return sorted[i];
}

// Draws line series ([[x, y], ...]) into `box` as SVG: axes, ticks, grid, legend. `robust`
// scales y to the 1st..99th percentiles (a GAN's early spikes do not flatten the rest);
// `right` series get an axis of their own on the right.
function chart(box, series, options = {}) {
  const width = Math.max(200, box.clientWidth || 600), height = Math.max(120, box.clientHeight || 260);
  const hasRight = options.right && options.right.some((s) => s.values.length);
  const m = { left: 52, right: hasRight ? 52 : 14, top: 22, bottom: 24 };
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' });
  const xs = series.concat(options.right || []).flatMap((s) => s.values.map((v) => v[0]));
  if (!xs.length) {
    const t = svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle' });
    t.textContent = 'no steps yet';
    root.append(t);
    box.replaceChildren(root);
    return;
  }
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x1 === x0) x1 = x0 + 1;
  const yRange = (list, fixedMin, fixedMax, robust) => {
    const ys = list.flatMap((s) => s.values.map((v) => v[1])).filter((y) => isFinite(y)).sort((a, b) => a - b);
    let lo = fixedMin !== undefined ? fixedMin : (robust ? quantile(ys, 0.01) : ys[0]);
    let hi = fixedMax !== undefined ? fixedMax : (robust ? quantile(ys, 0.99) : ys[ys.length - 1]);
    if (lo === undefined) { lo = 0; hi = 1; }
    if (hi === lo) { hi += 0.5; lo -= 0.5; }
    const pad = fixedMin !== undefined ? 0 : (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  };
  const [y0, y1] = yRange(series, options.yMin, options.yMax, options.robust);
  const X = (x) => m.left + ((x - x0) / (x1 - x0)) * (width - m.left - m.right);
  const Y = (y, lo = y0, hi = y1) => height - m.bottom - ((y - lo) / (hi - lo)) * (height - m.top - m.bottom);
  const clipId = `clip-${box.id}`;
  const defs = svg('defs');
  const clip = svg('clipPath', { id: clipId });
  clip.append(svg('rect', { x: m.left, y: m.top, width: width - m.left - m.right, height: height - m.top - m.bottom }));
  defs.append(clip);
  root.append(defs);
  for (const t of niceTicks(y0, y1, 5)) {
    root.append(svg('line', { class: 'gridline', x1: m.left, x2: width - m.right, y1: Y(t), y2: Y(t) }));
    const label = svg('text', { x: m.left - 6, y: Y(t) + 4, 'text-anchor': 'end' });
    label.textContent = number(t, 3);
    root.append(label);
  }
  for (const t of niceTicks(x0, x1, 6).filter((t) => Number.isInteger(t))) {
    const label = svg('text', { x: X(t), y: height - 6, 'text-anchor': 'middle' });
    label.textContent = t;
    root.append(label);
  }
  root.append(svg('line', { class: 'axis', x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom }));
  root.append(svg('line', { class: 'axis', x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom }));
  const draw = (s, lo, hi) => {
    const pts = s.values.filter((v) => isFinite(v[1]));
    if (!pts.length) return;
    const d = pts.map((v, i) => `${i ? 'L' : 'M'}${X(v[0]).toFixed(1)},${Y(v[1], lo, hi).toFixed(1)}`).join('');
    const path = svg('path', { class: 'series', d, stroke: s.color, 'clip-path': `url(#${clipId})`, 'data-name': s.name });
    if (s.dashed) path.setAttribute('stroke-dasharray', '4 3');
    root.append(path);
    if (pts.length < 30) {
      for (const v of pts) root.append(svg('circle', { cx: X(v[0]), cy: Y(v[1], lo, hi), r: 2.5, fill: s.color }));
    }
  };
  series.forEach((s) => draw(s, y0, y1));
  if (hasRight) {
    const [r0, r1] = yRange(options.right);
    for (const t of niceTicks(r0, r1, 5)) {
      const label = svg('text', { x: width - m.right + 6, y: Y(t, r0, r1) + 4, 'text-anchor': 'start' });
      label.textContent = number(t, 3);
      root.append(label);
    }
    options.right.forEach((s) => draw(s, r0, r1));
  }
  let lx = m.left + 8;
  for (const s of series.concat(hasRight ? options.right : [])) {
    root.append(svg('rect', { x: lx, y: 6, width: 10, height: 10, fill: s.color }));
    const t = svg('text', { x: lx + 14, y: 15 });
    t.textContent = s.name;
    root.append(t);
    lx += 24 + 7 * s.name.length;
  }
  box.replaceChildren(root);
}

// --- live updates -------------------------------------------------------------------------

function onJobs(data) {
  const before = state.current && state.jobs.get(state.current);
  state.jobs = new Map(data.jobs.map((j) => [j.id, j]));
  if (before && !state.jobs.has(before.id)) state.jobs.set(before.id, before);
  state.order = data.jobs.map((j) => j.id);
  state.total = data.total;
  renderJobs();
  if (state.current) {
    const now = state.jobs.get(state.current);
    renderJobHead();
    // A new state, or a while since: read the curves' file and the sample grid again.
    const stale = now && now.state === 'RUNNING' && Date.now() - state.lastFetch > 15000;
    if (now && (!before || before.state !== now.state || stale)) fetchDetail();
  }
}

function onMetrics(data) {
  if (data.job_id !== state.current) return;
  for (const point of data.points) {
    // A restarted attempt replays steps after its checkpoint: they replace the old ones.
    while (state.points.length && state.points[state.points.length - 1][0] >= point[0]) state.points.pop();
    state.points.push(point);
  }
  if (state.points.length > 3000) {
    state.points = state.points.filter((_, i) => i % 2 === 0 || i === state.points.length - 1);
  }
  renderCurves();
}

function connect() {
  const conn = $('#conn');
  const events = new EventSource('/api/events');
  events.onopen = () => { conn.dataset.state = 'live'; conn.textContent = 'live'; };
  events.onerror = async () => {
    conn.dataset.state = 'reconnecting';
    conn.textContent = 'reconnecting';
    if (events.readyState === EventSource.CLOSED) {
      // Refused (a session that expired) or gone: find out which.
      const probe = await fetch('/api/workers', { credentials: 'same-origin' }).catch(() => null);
      if (probe && probe.status === 401) { location.href = '/login'; return; }
      setTimeout(connect, 2000);
    }
  };
  events.addEventListener('jobs', (e) => onJobs(JSON.parse(e.data)));
  events.addEventListener('workers', (e) => {
    state.workers = JSON.parse(e.data).workers;
    renderWorkers();
    if (state.current) renderRanks();
  });
  events.addEventListener('metrics', (e) => onMetrics(JSON.parse(e.data)));
  events.addEventListener('evaluation', (e) => {
    const data = JSON.parse(e.data);
    if (data.job_id !== state.current) return;
    state.evaluations = state.evaluations.filter((x) => x.step < data.evaluation.step).concat([data.evaluation]);
    renderEvaluation();
  });
  events.addEventListener('checkpoint', (e) => {
    if (JSON.parse(e.data).job_id === state.current) fetchDetail();
  });
  events.addEventListener('lagged', () => { if (state.current) fetchDetail(); });
}

function route() {
  const match = location.hash.match(/^#\/jobs\/([\w.-]+)$/);
  const id = match ? match[1] : null;
  $('#home').hidden = !!id;
  $('#job-view').hidden = !id;
  if (id !== state.current) {
    state.current = id;
    state.detail = null;
    state.points = [];
    state.evaluations = [];
    $('#sample-img').removeAttribute('src');
    if (id) {
      document.title = `${id} · gantry`;
      renderJobHead();
      fetchDetail();
    } else {
      document.title = 'gantry';
    }
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('resize', () => { if (state.current) { renderCurves(); renderEvaluation(); } });
route();
connect();
