// Web console of the tracker emulator: tables of the DPS and hub state, a
// live telemetry view (server-sent events) with temperature and pressure
// charts and the GPS route as inline SVG, and the operator actions.
// Plain browser JavaScript, no build step and no outside resources.
'use strict';

(() => {
  const NS = 'http://www.w3.org/2000/svg';
  const MAX_POINTS = 5000; // per device, in the browser
  const MAX_EVENTS = 200;
  const MAX_RESULTS = 50;
  const RECENT_EVENTS = 40;

  const S = {
    csrf: '',
    state: null,
    series: new Map(), // device ID -> {pts: [], seqs: Set}
    selected: null,
    tSeq: 0,
    eSeq: 0,
    es: null,
    events: [],
    shipPick: new Map(), // device ID -> shipment chosen in the detail panel
    renderTimer: 0,
    refreshTimer: 0,
  };

  const $ = (id) => document.getElementById(id);

  // ---- helpers -------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) e.append(c);
    return e;
  }

  function svg(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'text') e.textContent = v;
      else e.setAttribute(k, String(v));
    }
    if (parent) parent.appendChild(e);
    return e;
  }

  const pad2 = (n) => String(n).padStart(2, '0');

  function fmtTime(t, withDate) {
    const d = t instanceof Date ? t : new Date(t);
    if (isNaN(d)) return '';
    const hms = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
    return withDate ? `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${hms}` : hms;
  }

  function isZeroTime(t) {
    return !t || t.startsWith('0001-01-01');
  }

  function ago(t, now) {
    if (isZeroTime(t)) return 'never';
    const s = Math.max(0, Math.round((now - new Date(t)) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function fmtNum(v, digits) {
    return v === undefined || v === null ? '–' : v.toFixed(digits);
  }

  function fmtDuration(ms) {
    const s = Math.round(ms / 1000);
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  // ---- API -----------------------------------------------------------

  class LoggedOut extends Error {}

  async function api(path, opts) {
    const o = Object.assign({ credentials: 'same-origin', headers: {} }, opts || {});
    if (o.method && o.method !== 'GET') {
      o.headers['Content-Type'] = 'application/json';
      o.headers['X-CSRF-Token'] = S.csrf;
    }
    const resp = await fetch('api/' + path, o);
    let body = null;
    try { body = await resp.json(); } catch (_) { body = null; }
    if (resp.status === 401 && path !== 'login') {
      showLogin(S.csrf ? 'Your session ended; log in again.' : '');
      throw new LoggedOut('logged out');
    }
    if (!resp.ok) {
      const msg = body && body.error ? body.error : `${resp.status} ${resp.statusText}`;
      const err = new Error(msg);
      err.status = resp.status;
      err.body = body;
      throw err;
    }
    return body;
  }

  // ---- login ---------------------------------------------------------

  function showLogin(msg) {
    if (S.es) { S.es.close(); S.es = null; }
    setLive(false);
    $('app').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = msg || '';
    $('credential').focus();
  }

  async function login(ev) {
    ev.preventDefault();
    $('login-error').textContent = '';
    try {
      const r = await api('login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ credential: $('credential').value.trim() }),
      });
      S.csrf = r.csrf;
      $('credential').value = '';
      await start();
    } catch (e) {
      $('login-error').textContent = e.message;
    }
  }

  async function logout() {
    try { await api('logout', { method: 'POST', body: '{}' }); } catch (_) { /* shown below */ }
    showLogin('Logged out.');
  }

  // ---- state ---------------------------------------------------------

  function seriesOf(id) {
    let s = S.series.get(id);
    if (!s) {
      s = { pts: [], seqs: new Set() };
      S.series.set(id, s);
    }
    return s;
  }

  // addPoints merges records into a device's series, in capture-time order,
  // skipping records already there (a resumed stream may repeat some).
  function addPoints(id, pts) {
    const s = seriesOf(id);
    let added = false;
    for (const p of pts) {
      if (s.seqs.has(p.seq)) continue;
      s.seqs.add(p.seq);
      p.time = new Date(p.t).getTime();
      let i = s.pts.length;
      while (i > 0 && s.pts[i - 1].time > p.time) i--;
      s.pts.splice(i, 0, p);
      added = true;
    }
    while (s.pts.length > MAX_POINTS) s.seqs.delete(s.pts.shift().seq);
    return added;
  }

  async function loadState() {
    S.state = await api('state');
    $('hub').textContent = `hub ${S.state.hub} · ID scope ${S.state.idScope}`;
    if (!S.selected && S.state.devices.length) {
      const first = S.state.devices.find((d) => d.connectionState === 'Connected') || S.state.devices[0];
      S.selected = first.deviceId;
    }
    renderTables();
    renderDevices();
    renderDetail();
  }

  function scheduleRefresh() {
    if (S.refreshTimer) return;
    S.refreshTimer = setTimeout(async () => {
      S.refreshTimer = 0;
      try { await loadState(); } catch (e) { if (!(e instanceof LoggedOut)) result('refresh', '', false, e.message); }
    }, 400);
  }

  function scheduleRender() {
    if (S.renderTimer) return;
    S.renderTimer = setTimeout(() => {
      S.renderTimer = 0;
      renderDevices();
      renderDetail();
    }, 250);
  }

  async function start() {
    const sess = await api('session');
    S.csrf = sess.csrf;
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = false;
    S.series.clear();
    const tel = await api('telemetry');
    for (const [id, pts] of Object.entries(tel.devices)) addPoints(id, pts);
    S.tSeq = tel.seq;
    await loadState();
    // The stream starts with the last few events, for the event list.
    S.eSeq = Math.max(0, S.state.eventSeq - RECENT_EVENTS);
    openStream();
  }

  // ---- live stream ---------------------------------------------------

  function setLive(on) {
    const l = $('live');
    l.textContent = on ? 'live' : 'offline';
    l.className = 'live ' + (on ? 'on' : 'off');
  }

  function openStream() {
    if (S.es) S.es.close();
    const es = new EventSource(`api/stream?after=${S.tSeq}&events=${S.eSeq}`);
    S.es = es;
    es.onopen = () => setLive(true);
    es.onerror = async () => {
      setLive(false);
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream: find out whether the session ended.
        try { await api('session'); setTimeout(openStream, 2000); } catch (_) { /* login shown */ }
      }
    };
    es.addEventListener('telemetry', (ev) => {
      const m = JSON.parse(ev.data);
      S.tSeq = Math.max(S.tSeq, m.seq);
      const known = S.state && S.state.devices.find((d) => d.deviceId === m.deviceId);
      if (known) {
        known.messages++;
        known.lastActivity = m.enqueued;
      }
      if (addPoints(m.deviceId, m.points || [])) scheduleRender();
    });
    es.addEventListener('change', (ev) => {
      const e = JSON.parse(ev.data);
      S.eSeq = Math.max(S.eSeq, e.seq);
      S.events.unshift(e);
      if (S.events.length > MAX_EVENTS) S.events.length = MAX_EVENTS;
      renderEvents();
      scheduleRefresh();
    });
    es.addEventListener('logout', () => showLogin('Your session ended; log in again.'));
  }

  // ---- tables --------------------------------------------------------

  // syncRows keeps a tbody's rows in step with items, updating rows in
  // place so that buttons under the pointer stay where they are.
  function syncRows(tbody, items, key, build, update) {
    const have = new Map();
    for (const tr of Array.from(tbody.rows)) have.set(tr.dataset.id, tr);
    const want = items.map(key);
    const wanted = new Set(want);
    let order = Array.from(tbody.rows).map((tr) => tr.dataset.id).join('\n') !== want.join('\n');
    for (const [id, tr] of have) if (!wanted.has(id)) tr.remove();
    items.forEach((it, i) => {
      let tr = have.get(want[i]);
      if (!tr) {
        tr = build(it);
        tr.dataset.id = want[i];
        order = true;
      }
      update(tr, it);
      if (order) tbody.appendChild(tr);
    });
    if (!items.length) {
      tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: tbody.parentElement.tHead.rows[0].cells.length, text: 'none' })));
    } else {
      for (const tr of Array.from(tbody.querySelectorAll('tr.empty'))) tr.remove();
    }
  }

  function setCells(tr, values) {
    values.forEach((v, i) => {
      const td = tr.cells[i];
      const text = v && typeof v === 'object' ? v.text : v;
      if (td.textContent !== String(text)) td.textContent = text;
      if (v && typeof v === 'object') {
        td.className = v.cls || '';
        if (v.title) td.title = v.title;
      }
    });
  }

  function plainRow(n) {
    return () => {
      const tr = el('tr');
      for (let i = 0; i < n; i++) tr.append(el('td'));
      return tr;
    };
  }

  function statusCell(s) {
    return { text: s || '–', cls: 'status ' + (s || '') };
  }

  function renderTables() {
    const st = S.state;
    syncRows($('groups').tBodies[0], st.groups, (g) => g.id, plainRow(6), (tr, g) => setCells(tr, [
      g.id, statusCell(g.status), g.signer || '–',
      g.signerExpires ? fmtTime(g.signerExpires, true) : '–', { text: g.registrations, cls: 'num' },
      g.updated ? fmtTime(g.updated, true) : '–',
    ]));
    syncRows($('enrollments').tBodies[0], st.enrollments, (e) => e.registrationId, plainRow(5), (tr, e) => setCells(tr, [
      e.registrationId, statusCell(e.status), e.subject || '–',
      { text: e.thumbprint ? e.thumbprint.slice(0, 16) + '…' : '–', cls: 'mono', title: e.thumbprint },
      e.updated ? fmtTime(e.updated, true) : '–',
    ]));
    syncRows($('registrations').tBodies[0], st.registrations, (r) => r.registrationId, plainRow(7), (tr, r) => setCells(tr, [
      r.registrationId, r.deviceId || '–', { text: r.status, cls: 'status ' + r.status, title: r.error || '' },
      r.substatus || '–', r.enrollment || '–', r.assignedHub || '–', r.updated ? fmtTime(r.updated, true) : '–',
    ]));
  }

  // band returns the temperature band in force for a device: the one set
  // in this browser, else the one its twin reports, else the default.
  function band(d) {
    const saved = localStorage.getItem('band:' + d.deviceId);
    if (saved) {
      try {
        const b = JSON.parse(saved);
        if (typeof b.min === 'number' && typeof b.max === 'number' && b.min < b.max) return { min: b.min, max: b.max, source: 'set here' };
      } catch (_) { /* ignore a bad entry */ }
    }
    const t = d.thresholds;
    return { min: t.tempMinC, max: t.tempMaxC, source: t.source === 'twin' ? 'reported by the device' : 'default' };
  }

  function lastTemp(id) {
    const s = S.series.get(id);
    if (!s) return null;
    for (let i = s.pts.length - 1; i >= 0; i--) if (typeof s.pts[i].tempC === 'number') return s.pts[i].tempC;
    return null;
  }

  function buildDeviceRow() {
    const tr = el('tr');
    for (let i = 0; i < 8; i++) tr.append(el('td'));
    const acts = el('td', { class: 'actions' },
      el('button', { type: 'button', 'data-action': 'flush', text: 'Flush' }),
      el('button', { type: 'button', 'data-action': 'disenroll', class: 'warn', text: 'Disenroll' }),
      el('button', { type: 'button', 'data-action': 'deprovision', class: 'danger', text: 'Deprovision' }));
    tr.append(acts);
    return tr;
  }

  function renderDevices() {
    if (!S.state) return;
    const now = Date.now();
    const devs = S.state.devices;
    $('device-count').textContent = `${devs.filter((d) => d.connectionState === 'Connected').length} of ${devs.length} connected`;
    syncRows($('devices').tBodies[0], devs, (d) => d.deviceId, buildDeviceRow, (tr, d) => {
      const b = band(d);
      const t = lastTemp(d.deviceId);
      const out = t !== null && (t < b.min || t > b.max);
      const conn = d.connectionState === 'Connected';
      setCells(tr, [
        { text: d.deviceId, cls: 'id' },
        statusCell(d.status),
        { text: conn ? 'connected' : 'disconnected', cls: 'conn ' + (conn ? 'on' : 'off'), title: isZeroTime(d.connectionSince) ? '' : 'since ' + fmtTime(d.connectionSince, true) },
        { text: ago(d.lastActivity, now), title: isZeroTime(d.lastActivity) ? '' : fmtTime(d.lastActivity, true) },
        { text: d.messages, cls: 'num' },
        { text: t === null ? '–' : t.toFixed(2), cls: 'num' + (out ? ' excursion' : '') },
        `${b.min}…${b.max}`,
        { text: d.bufferDepth < 0 ? '–' : d.bufferDepth, cls: 'num' },
      ]);
      tr.classList.toggle('selected', d.deviceId === S.selected);
      tr.querySelector('[data-action=flush]').disabled = !conn;
    });
  }

  function renderEvents() {
    const ol = $('events');
    ol.replaceChildren(...S.events.slice(0, 60).map((e) => el('li', {},
      el('time', { text: fmtTime(e.time) }), ' ',
      el('span', { class: 'kind', text: e.kind }), ' ',
      el('span', { class: 'id', text: e.deviceId || '' }), ' ',
      el('span', { class: 'detail', text: e.detail || '' }))));
  }

  function result(action, id, ok, text) {
    const ol = $('results');
    ol.prepend(el('li', { class: ok ? 'ok' : 'failed', 'data-action': action, 'data-id': id },
      el('time', { text: fmtTime(new Date()) }), ' ',
      el('strong', { text: `${action}${id ? ' ' + id : ''}` }), ': ',
      el('span', { class: 'text', text })));
    while (ol.children.length > MAX_RESULTS) ol.lastChild.remove();
  }

  // ---- detail: charts and route -------------------------------------

  function renderDetail() {
    const d = S.state && S.state.devices.find((x) => x.deviceId === S.selected);
    const title = $('detail-title');
    if (!d) {
      title.textContent = S.selected ? `${S.selected} (no longer registered)` : 'No device selected';
      $('band-form').hidden = true;
      $('detail-summary').textContent = '';
      for (const id of ['temp-chart', 'pressure-chart', 'route']) clearFigure($(id));
      if (!S.selected) return;
    } else {
      title.textContent = d.deviceId + (d.shipment ? ` · shipment ${d.shipment}` : '');
      const b = band(d);
      const form = $('band-form');
      form.hidden = false;
      if (document.activeElement !== $('band-min') && document.activeElement !== $('band-max')) {
        $('band-min').value = b.min;
        $('band-max').value = b.max;
      }
      $('band-source').textContent = `(${b.source})`;
    }
    const s = S.series.get(S.selected) || { pts: [] };
    const b = d ? band(d) : { min: 2, max: 8 };
    const ship = pickShipment(d, s.pts);
    const pts = shipmentPoints(s.pts, ship);
    const temps = pts.filter((p) => typeof p.tempC === 'number');
    const ex = excursions(temps, b);
    const fixes = pts.filter((p) => typeof p.lat === 'number' && typeof p.lon === 'number');
    const marks = pts.filter((p) => p.kind === 'seal' || p.kind === 'gap');
    $('detail-summary').textContent = temps.length
      ? `${ship === ALL ? 'All records' : 'Shipment ' + ship}: ${temps.length} readings from ${fmtTime(temps[0].time, true)} to ${fmtTime(temps[temps.length - 1].time, true)}; ` +
        `${ex.spans.length} excursion${ex.spans.length === 1 ? '' : 's'} outside ${b.min}…${b.max} °C` +
        (ex.spans.length ? ` (${fmtDuration(ex.totalMs)} in all)` : '') + `; ${fixes.length} GPS fixes` +
        (marks.some((p) => p.kind === 'seal') ? '; sealed' : '')
      : 'No telemetry from this device yet.';
    lineChart($('temp-chart'), temps, 'tempC', { band: b, spans: ex.spans, marks, digits: 1, unit: '°C', cls: 'temp' });
    const p = d && d.thresholds.pressureMinHPa !== undefined ? { min: d.thresholds.pressureMinHPa, max: d.thresholds.pressureMaxHPa } : null;
    const pres = pts.filter((x) => typeof x.pHPa === 'number');
    lineChart($('pressure-chart'), pres, 'pHPa', { band: p, spans: p ? excursions(pres.map((x) => ({ time: x.time, tempC: x.pHPa })), p).spans : [], marks, digits: 0, unit: 'hPa', cls: 'pressure' });
    routeMap($('route'), fixes, b);
  }

  const ALL = '(all records)';

  // pickShipment returns the shipment the detail panel shows: the one
  // chosen here, else the device's current one (its twin), else the latest
  // one in its records. It keeps the shipment selector in step.
  function pickShipment(d, pts) {
    const counts = new Map();
    for (const p of pts) if (p.ship) counts.set(p.ship, (counts.get(p.ship) || 0) + 1);
    let ship = S.shipPick.get(S.selected);
    if (ship !== ALL && !counts.has(ship)) {
      ship = d && d.shipment && counts.has(d.shipment) ? d.shipment : ALL;
      if (ship === ALL) for (let i = pts.length - 1; i >= 0; i--) if (pts[i].ship) { ship = pts[i].ship; break; }
    }
    const options = [...counts.keys(), ALL];
    const sel = $('shipment');
    if (Array.from(sel.options).map((o) => o.value).join('\n') !== options.join('\n')) {
      sel.replaceChildren(...options.map((v) => el('option', { value: v, text: v === ALL ? 'all records' : `${v} (${counts.get(v)})` })));
    }
    sel.value = ship;
    return ship;
  }

  // shipmentPoints keeps a shipment's records, and the gap reports (which
  // belong to no shipment) that fall within its time.
  function shipmentPoints(pts, ship) {
    if (ship === ALL) return pts;
    const own = pts.filter((p) => p.ship === ship);
    if (!own.length) return own;
    const t0 = own[0].time, t1 = own[own.length - 1].time;
    return pts.filter((p) => p.ship === ship || (p.kind === 'gap' && p.time >= t0 && p.time <= t1));
  }

  // excursions groups consecutive readings outside the band.
  function excursions(pts, b) {
    const spans = [];
    let cur = null;
    let totalMs = 0;
    for (const p of pts) {
      const out = p.tempC < b.min || p.tempC > b.max;
      if (out && !cur) cur = { from: p.time, to: p.time, peak: p.tempC, high: p.tempC > b.max };
      else if (out) {
        cur.to = p.time;
        if (cur.high ? p.tempC > cur.peak : p.tempC < cur.peak) cur.peak = p.tempC;
      } else if (cur) {
        spans.push(cur);
        cur = null;
      }
    }
    if (cur) spans.push(cur);
    for (const sp of spans) totalMs += sp.to - sp.from;
    return { spans, totalMs };
  }

  function clearFigure(fig) {
    for (const n of Array.from(fig.children)) if (n.tagName !== 'FIGCAPTION') n.remove();
  }

  function niceStep(span, target) {
    const raw = span / Math.max(1, target);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800].map((s) => s * 1000);

  function timeTicks(t0, t1, target) {
    const step = TIME_STEPS.find((s) => (t1 - t0) / s <= target) || TIME_STEPS[TIME_STEPS.length - 1];
    // Align ticks to local midnight-based multiples of the step.
    const tz = new Date(t0).getTimezoneOffset() * 60000;
    const ticks = [];
    for (let t = Math.ceil((t0 - tz) / step) * step + tz; t <= t1; t += step) ticks.push(t);
    return { ticks, step };
  }

  function fmtTick(t, step, spanMs) {
    const d = new Date(t);
    if (spanMs > 2 * 86400000) return `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    if (step < 60000) return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  }

  // lineChart draws values of key over time: the band as a shaded area
  // with its limits, excursion spans shaded red, readings outside the band
  // (and device alerts) as red dots.
  function lineChart(fig, pts, key, o) {
    clearFigure(fig);
    const W = 760, H = 230, L = 52, R = 14, T = 12, B = 30;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'plot ' + o.cls, role: 'img', 'aria-label': fig.querySelector('figcaption').textContent });
    fig.appendChild(root);
    if (!pts.length) {
      svg('text', { x: W / 2, y: H / 2, class: 'nodata', 'text-anchor': 'middle', text: 'no readings yet' }, root);
      return;
    }
    let t0 = pts[0].time, t1 = pts[pts.length - 1].time;
    if (t1 - t0 < 60000) { const mid = (t0 + t1) / 2; t0 = mid - 30000; t1 = mid + 30000; }
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) { lo = Math.min(lo, p[key]); hi = Math.max(hi, p[key]); }
    if (o.band) { lo = Math.min(lo, o.band.min); hi = Math.max(hi, o.band.max); }
    const padY = Math.max((hi - lo) * 0.08, 0.5);
    lo -= padY; hi += padY;
    const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
    const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);

    // Grid and axes.
    const grid = svg('g', { class: 'grid' }, root);
    const ystep = niceStep(hi - lo, 5);
    for (let v = Math.ceil(lo / ystep) * ystep; v <= hi; v += ystep) {
      svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v) }, grid);
      svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick', text: v.toFixed(ystep < 1 ? 1 : 0) }, root);
    }
    const tt = timeTicks(t0, t1, 7);
    for (const t of tt.ticks) {
      svg('line', { x1: x(t), x2: x(t), y1: T, y2: H - B }, grid);
      svg('text', { x: x(t), y: H - B + 16, 'text-anchor': 'middle', class: 'tick', text: fmtTick(t, tt.step, t1 - t0) }, root);
    }
    svg('rect', { x: L, y: T, width: W - L - R, height: H - T - B, class: 'frame' }, root);

    // Threshold band.
    if (o.band) {
      svg('rect', { x: L, y: y(o.band.max), width: W - L - R, height: Math.max(0, y(o.band.min) - y(o.band.max)), class: 'band' }, root);
      for (const [v, label] of [[o.band.max, 'max'], [o.band.min, 'min']]) {
        svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'limit' }, root);
        svg('text', { x: W - R - 4, y: y(v) - 4, 'text-anchor': 'end', class: 'limit-label', text: `${label} ${v} ${o.unit}` }, root);
      }
    }
    for (const sp of o.spans || []) {
      const x0 = x(sp.from), x1 = x(sp.to);
      svg('rect', { x: Math.min(x0, x1) - 2, y: T, width: Math.max(4, Math.abs(x1 - x0) + 4), height: H - T - B, class: 'excursion-span' }, root)
        .appendChild(svg('title', { text: `excursion ${fmtTime(sp.from, true)} – ${fmtTime(sp.to)}, peak ${sp.peak.toFixed(o.digits + 1)} ${o.unit}` }));
    }

    // The line, broken where readings are missing for long.
    const dts = [];
    for (let i = 1; i < pts.length; i++) dts.push(pts[i].time - pts[i - 1].time);
    dts.sort((a, b) => a - b);
    const gap = Math.max(10 * (dts[Math.floor(dts.length / 2)] || 0), 60000);
    let d = '';
    pts.forEach((p, i) => {
      const cmd = i === 0 || p.time - pts[i - 1].time > gap ? 'M' : 'L';
      d += `${cmd}${x(p.time).toFixed(1)},${y(p[key]).toFixed(1)}`;
    });
    svg('path', { d, class: 'line' }, root);

    // Excursions and device alerts.
    const marks = svg('g', { class: 'marks' }, root);
    for (const p of pts) {
      const out = o.band && (p[key] < o.band.min || p[key] > o.band.max);
      const alert = key === 'tempC' && p.alerts && p.alerts.some((a) => a.startsWith('temp'));
      if (!out && !alert) continue;
      const c = svg('circle', { cx: x(p.time), cy: y(p[key]), r: out ? 3 : 2.5, class: out ? 'excursion' : 'alert' }, marks);
      svg('title', { text: `${fmtTime(p.time, true)}  ${p[key].toFixed(o.digits + 1)} ${o.unit}${p.alerts ? '  ' + p.alerts.join(', ') : ''}` }, c);
    }
    // Seals and gap reports.
    for (const m of o.marks || []) {
      if (m.time < t0 || m.time > t1) continue;
      if (m.kind === 'seal') {
        const g = svg('g', { class: 'seal' }, root);
        svg('line', { x1: x(m.time), x2: x(m.time), y1: T, y2: H - B }, g);
        svg('text', { x: x(m.time) - 4, y: T + 12, 'text-anchor': 'end', text: 'sealed' }, g);
      } else {
        const xx = x(m.time), yy = H - B;
        const tri = svg('path', { d: `M${xx - 5},${yy} L${xx + 5},${yy} L${xx},${yy - 8} Z`, class: 'gap' }, root);
        svg('title', { text: `${fmtTime(m.time, true)}: records lost from the device's buffer` }, tri);
      }
    }
    const lastP = pts[pts.length - 1];
    svg('circle', { cx: x(lastP.time), cy: y(lastP[key]), r: 3.5, class: 'last' }, root);
  }

  // routeMap draws the GPS track on a local equirectangular projection
  // (metres east and north of the track's centre), with start and end
  // markers, excursion positions, a scale bar and a north arrow.
  function routeMap(fig, fixes, b) {
    clearFigure(fig);
    const W = 760, H = 380, M = 36;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'plot map', role: 'img', 'aria-label': 'route' });
    fig.appendChild(root);
    svg('rect', { x: 0, y: 0, width: W, height: H, class: 'sea' }, root);
    if (!fixes.length) {
      svg('text', { x: W / 2, y: H / 2, class: 'nodata', 'text-anchor': 'middle', text: 'no GPS fixes yet' }, root);
      return;
    }
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    for (const f of fixes) {
      minLat = Math.min(minLat, f.lat); maxLat = Math.max(maxLat, f.lat);
      minLon = Math.min(minLon, f.lon); maxLon = Math.max(maxLon, f.lon);
    }
    const lat0 = (minLat + maxLat) / 2, lon0 = (minLon + maxLon) / 2;
    const mPerDeg = 111320, k = Math.cos(lat0 * Math.PI / 180);
    const east = (lon) => (lon - lon0) * mPerDeg * k;
    const north = (lat) => (lat - lat0) * mPerDeg;
    const spanE = Math.max(east(maxLon) - east(minLon), 200);
    const spanN = Math.max(north(maxLat) - north(minLat), 200);
    const scale = Math.min((W - 2 * M) / spanE, (H - 2 * M) / spanN); // px per metre
    const px = (f) => [W / 2 + east(f.lon) * scale, H / 2 - north(f.lat) * scale];

    // Graticule at a round step of degrees.
    const grat = svg('g', { class: 'graticule' }, root);
    const degSpan = Math.max((W / scale) / (mPerDeg * k), (H / scale) / mPerDeg);
    const gstep = niceStep(degSpan, 4);
    const latMin = lat0 - (H / 2) / scale / mPerDeg, latMax = lat0 + (H / 2) / scale / mPerDeg;
    const lonMin = lon0 - (W / 2) / scale / (mPerDeg * k), lonMax = lon0 + (W / 2) / scale / (mPerDeg * k);
    const decimals = Math.max(0, -Math.floor(Math.log10(gstep)));
    for (let v = Math.ceil(latMin / gstep) * gstep; v <= latMax; v += gstep) {
      const yy = H / 2 - north(v) * scale;
      svg('line', { x1: 0, x2: W, y1: yy, y2: yy }, grat);
      svg('text', { x: 4, y: yy - 3, class: 'grat-label', text: `${Math.abs(v).toFixed(decimals)}°${v >= 0 ? 'N' : 'S'}` }, grat);
    }
    for (let v = Math.ceil(lonMin / gstep) * gstep; v <= lonMax; v += gstep) {
      const xx = W / 2 + east(v) * scale;
      svg('line', { x1: xx, x2: xx, y1: 0, y2: H }, grat);
      svg('text', { x: xx + 3, y: H - 4, class: 'grat-label', text: `${Math.abs(v).toFixed(decimals)}°${v >= 0 ? 'E' : 'W'}` }, grat);
    }

    // Track: segments coloured by whether the reading was in the band.
    let d = '';
    fixes.forEach((f, i) => {
      const [xx, yy] = px(f);
      d += `${i ? 'L' : 'M'}${xx.toFixed(1)},${yy.toFixed(1)}`;
    });
    svg('path', { d, class: 'route' }, root);
    const marks = svg('g', { class: 'marks' }, root);
    for (const f of fixes) {
      if (typeof f.tempC !== 'number' || (f.tempC >= b.min && f.tempC <= b.max)) continue;
      const [xx, yy] = px(f);
      const c = svg('circle', { cx: xx, cy: yy, r: 3.5, class: 'excursion' }, marks);
      svg('title', { text: `${fmtTime(f.time, true)}  ${f.tempC.toFixed(2)} °C` }, c);
    }

    // Start and end markers.
    const [sx, sy] = px(fixes[0]);
    const [ex, ey] = px(fixes[fixes.length - 1]);
    const start = svg('g', { class: 'marker-start', transform: `translate(${sx.toFixed(1)},${sy.toFixed(1)})` }, root);
    svg('circle', { r: 7 }, start);
    svg('text', { y: 4, 'text-anchor': 'middle', text: 'S' }, start);
    svg('title', { text: `start ${fmtTime(fixes[0].time, true)}` }, start);
    const end = svg('g', { class: 'marker-end', transform: `translate(${ex.toFixed(1)},${ey.toFixed(1)})` }, root);
    svg('rect', { x: -7, y: -7, width: 14, height: 14 }, end);
    svg('text', { y: 4, 'text-anchor': 'middle', text: 'E' }, end);
    svg('title', { text: `last fix ${fmtTime(fixes[fixes.length - 1].time, true)}` }, end);

    // Scale bar: a round distance about a fifth of the width.
    const target = (W / 5) / scale;
    const mag = Math.pow(10, Math.floor(Math.log10(target)));
    const dist = [1, 2, 5, 10].map((m) => m * mag).filter((v) => v <= target).pop() || mag;
    const len = dist * scale;
    const sb = svg('g', { class: 'scale-bar', transform: `translate(${M},${H - 22})` }, root);
    svg('rect', { x: -6, y: -18, width: len + 12, height: 26, class: 'scale-bg' }, sb);
    svg('path', { d: `M0,-6 V0 H${len.toFixed(1)} V-6`, class: 'scale-line' }, sb);
    svg('text', { x: len / 2, y: -6, 'text-anchor': 'middle', class: 'scale-label', text: dist >= 1000 ? `${dist / 1000} km` : `${dist} m` }, sb);

    // North arrow.
    const n = svg('g', { class: 'north', transform: `translate(${W - 26},34)` }, root);
    svg('path', { d: 'M0,-18 L7,6 L0,1 L-7,6 Z' }, n);
    svg('text', { y: 20, 'text-anchor': 'middle', text: 'N' }, n);
  }

  // ---- actions -------------------------------------------------------

  function confirmDialog(title, text, withDrain) {
    const dlg = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('drain-label').hidden = !withDrain;
    dlg.returnValue = '';
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
      dlg.showModal();
      $('confirm-ok').focus();
    });
  }

  const ACTIONS = {
    flush: {
      title: (id) => `Flush ${id}?`,
      text: (id) => `Invokes the direct method "flush" on ${id}: the tracker sends its buffered records now.`,
      run: (id) => api(`devices/${encodeURIComponent(id)}/flush`, { method: 'POST', body: '{}' }),
      show: (r) => `device answered ${r.status}: ${JSON.stringify(r.payload)}`,
    },
    disenroll: {
      title: (id) => `Disenroll ${id}?`,
      text: (id) => `Creates (or disables) an individual enrollment for ${id}'s certificate with status disabled: DPS will refuse the device until the enrollment is deleted.`,
      run: (id) => api(`devices/${encodeURIComponent(id)}/disenroll`, { method: 'POST', body: '{}' }),
      show: (r) => `enrollment ${r.registrationId} ${r.enrollment}${r.created ? ' (created)' : r.changed ? '' : ' (already)'}`,
    },
    deprovision: {
      title: (id) => `Deprovision ${id}?`,
      text: (id) => `Asks ${id} to send its buffer and seal the shipment (direct method "deprovision"), then disenrolls it, deletes its hub identity and its registration record. This cannot be undone here.`,
      drain: true,
      run: (id) => api(`devices/${encodeURIComponent(id)}/deprovision`, {
        method: 'POST', body: JSON.stringify({ drainTimeoutSeconds: Number($('drain').value) || 30 }),
      }),
      show: (r) => `${r.answered ? 'device answered ' + JSON.stringify(r.answer) : r.sentC2D ? 'device offline, request queued by C2D' : 'device not asked'}; ` +
        `enrollment ${r.disenroll.enrollment}, hub identity ${r.hubDevice}, registration ${r.registration}`,
    },
  };

  async function runAction(action, id, button) {
    const a = ACTIONS[action];
    if (!(await confirmDialog(a.title(id), a.text(id), a.drain))) return;
    button.disabled = true;
    button.classList.add('busy');
    try {
      const r = await a.run(id);
      result(action, id, true, a.show(r));
    } catch (e) {
      if (!(e instanceof LoggedOut)) result(action, id, false, e.message);
    } finally {
      button.classList.remove('busy');
      button.disabled = false;
      scheduleRefresh();
    }
  }

  // ---- wiring --------------------------------------------------------

  function wire() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('devices').tBodies[0].addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr');
      if (!tr || !tr.dataset.id) return;
      const btn = ev.target.closest('button[data-action]');
      if (btn) {
        runAction(btn.dataset.action, tr.dataset.id, btn);
        return;
      }
      S.selected = tr.dataset.id;
      renderDevices();
      renderDetail();
    });
    $('band-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const min = parseFloat($('band-min').value), max = parseFloat($('band-max').value);
      if (!(min < max)) {
        $('band-source').textContent = '(the minimum must be below the maximum)';
        return;
      }
      localStorage.setItem('band:' + S.selected, JSON.stringify({ min, max }));
      $('band-min').blur(); $('band-max').blur();
      renderDevices();
      renderDetail();
    });
    $('shipment').addEventListener('change', () => {
      S.shipPick.set(S.selected, $('shipment').value);
      renderDetail();
    });
    $('band-reset').addEventListener('click', () => {
      localStorage.removeItem('band:' + S.selected);
      renderDevices();
      renderDetail();
    });
    setInterval(() => { if (S.state && !$('app').hidden) renderDevices(); }, 5000);
  }

  async function boot() {
    wire();
    try {
      await start();
    } catch (e) {
      if (!(e instanceof LoggedOut)) showLogin(e.message);
    }
  }

  boot();
})();
