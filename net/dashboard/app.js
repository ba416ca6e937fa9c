// Sluice dashboard: a single page over the management API (/api/). Plain
// JavaScript, no libraries: it fetches JSON with basic auth, renders tables
// with DOM methods (never innerHTML with data), and draws its charts on a
// canvas. Credentials live in sessionStorage, never in a URL (where history,
// logs and Referer headers would keep them).
'use strict';

(() => {
  const HISTORY = 120;  // chart points kept (10 minutes at 5 s)

  const state = {
    creds: null,
    view: 'overview',
    queueRef: null,          // {vhost, name} in the queue view
    history: [],             // {t, publish, deliver, ack, ready, unacked}
    queueHistory: [],        // the queue view's {t, drain, wait} (seconds; null = never)
    queueSort: { key: 'name', reverse: false },
    queueFilter: '',
    queuePage: 1,
    interval: 5000,
    timer: null,
    busy: false,
    again: false,
    lastOverview: null,
  };

  const $ = (id) => document.getElementById(id);

  // --- DOM helpers ------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k === 'style') node.style.cssText = v;  // CSSOM: allowed by the page's CSP
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // Replaces a container's content, keeping keyboard focus on the element
  // with the same data-focus-key (tables are re-rendered on every refresh).
  function replaceKeepFocus(container, ...nodes) {
    const active = document.activeElement;
    const key = active && container.contains(active) ? active.getAttribute('data-focus-key') : null;
    container.replaceChildren(...nodes);
    if (key) {
      const again = container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  const nf = new Intl.NumberFormat('en-US');
  const fmtInt = (n) => (typeof n === 'number' ? nf.format(n) : '–');
  // Capacity figures: null means never (the queue is not draining, or
  // nothing consumes); undefined means not sampled yet.
  const fmtSeconds = (s) => {
    if (s === null) return 'never';
    if (typeof s !== 'number') return '–';
    if (s < 60) return s.toFixed(1) + ' s';
    if (s < 3600) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  };
  const capacityOf = (q, key) => (get(q, 'capacity.sampled') ? get(q, 'capacity.' + key) : undefined);
  const fmtRate = (r) => (typeof r === 'number' ? (r >= 100 ? nf.format(Math.round(r)) : r.toFixed(1)) + '/s' : '–');
  const fmtBytes = (b) => {
    if (typeof b !== 'number') return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b : b.toFixed(1)) + ' ' + units[i];
  };
  const get = (obj, path) => path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
  const enc = encodeURIComponent;
  const queueHref = (q) => `#/queues/${enc(q.vhost)}/${enc(q.name)}`;

  // --- API --------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function authHeader(c) {
    const bytes = new TextEncoder().encode(`${c.user}:${c.pass}`);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return 'Basic ' + btoa(bin);
  }

  async function api(path, opts = {}, creds = state.creds) {
    const headers = { Authorization: authHeader(creds), 'X-Requested-With': 'XMLHttpRequest', ...(opts.headers || {}) };
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const resp = await fetch('/api/' + path, {
      method: opts.method || 'GET', headers, body, cache: 'no-store', credentials: 'omit',
    });
    const text = await resp.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = text; }
    }
    if (resp.status === 401 && creds === state.creds) {
      logout('The broker refused these credentials. Log in again.');
    }
    if (!resp.ok) {
      const reason = data && typeof data === 'object' && data.reason ? data.reason : resp.statusText;
      throw new ApiError(resp.status, `${resp.status}: ${reason}`);
    }
    return data;
  }

  // --- login ------------------------------------------------------------------------

  function storedCreds() {
    const user = sessionStorage.getItem('sluice.user');
    return user === null ? null : { user, pass: sessionStorage.getItem('sluice.pass') || '' };
  }

  function showLogin(message) {
    $('login').hidden = false;
    $('nav').hidden = true;
    $('main').hidden = true;
    $('session-controls').hidden = true;
    $('user-name').textContent = '';
    $('login-error').textContent = message || '';
    $('login-user').focus();
  }

  function logout(message) {
    sessionStorage.removeItem('sluice.user');
    sessionStorage.removeItem('sluice.pass');
    state.creds = null;
    clearTimeout(state.timer);
    showLogin(message);
  }

  async function login(creds) {
    try {
      const me = await api('whoami', {}, creds);
      state.creds = creds;
      sessionStorage.setItem('sluice.user', creds.user);
      sessionStorage.setItem('sluice.pass', creds.pass);
      $('login').hidden = true;
      $('nav').hidden = false;
      $('main').hidden = false;
      $('session-controls').hidden = false;
      $('user-name').textContent = `User: ${me.name}`;
      route(false);
      return true;
    } catch (e) {
      showLogin(e.status === 401 ? 'Login failed: wrong user name or password.' : `Cannot reach the broker (${e.message}).`);
      return false;
    }
  }

  // --- refresh loop -----------------------------------------------------------------

  function schedule() {
    clearTimeout(state.timer);
    if (state.interval > 0 && state.creds) state.timer = setTimeout(tick, state.interval);
  }

  async function tick() {
    await refresh();
    schedule();
  }

  function showError(message) {
    const box = $('error');
    box.textContent = message;
    box.hidden = !message;
  }

  async function refresh() {
    if (!state.creds) return;
    if (state.busy) {  // one more pass once this one ends (a click while refreshing)
      state.again = true;
      return;
    }
    state.busy = true;
    state.again = false;
    try {
      const overview = await api('overview');
      state.lastOverview = overview;
      record(overview);
      renderHeader(overview);
      renderAlarms(overview.alarms || []);
      switch (state.view) {
        case 'overview': await renderOverview(overview); break;
        case 'connections': await renderConnections(); break;
        case 'channels': await renderChannels(); break;
        case 'queues': await renderQueues(); break;
        case 'queue': await renderQueue(); break;
        case 'exchanges': await renderExchanges(); break;
      }
      showError('');
      $('last-update').textContent = 'Updated ' + new Date().toLocaleTimeString();
    } catch (e) {
      if (e.status !== 401) showError(`Refresh failed: ${e.message}`);
    } finally {
      state.busy = false;
    }
    if (state.again) await refresh();
  }

  function record(o) {
    const ms = o.message_stats || {};
    const qt = o.queue_totals || {};
    state.history.push({
      t: Date.now(),
      publish: get(ms, 'publish_details.rate') || 0,
      deliver: get(ms, 'deliver_get_details.rate') || 0,
      ack: get(ms, 'ack_details.rate') || 0,
      ready: qt.messages_ready || 0,
      unacked: qt.messages_unacknowledged || 0,
    });
    if (state.history.length > HISTORY) state.history.shift();
  }

  function renderHeader(o) {
    $('node-info').textContent = `${o.node} · ${o.product_name} ${o.product_version}`;
  }

  function renderAlarms(alarms) {
    const box = $('alarms');
    if (!alarms.length) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    box.hidden = false;
    box.replaceChildren(
      el('strong', { text: 'Resource alarm' }),
      ' ',
      alarms.map((a) => `${a.resource} on ${a.node}${a.reason ? ' (' + a.reason + ')' : ''}`).join('; '),
      '. Publishers are blocked until it clears; consumers keep draining.');
  }

  // --- routing ----------------------------------------------------------------------

  const VIEWS = ['overview', 'connections', 'channels', 'queues', 'queue', 'exchanges'];

  function route(moveFocus) {
    const parts = (location.hash || '#/overview').replace(/^#\/?/, '').split('/');
    let view = parts[0] || 'overview';
    state.queueRef = null;
    if (view === 'queues' && parts.length >= 3) {
      view = 'queue';
      try {
        state.queueRef = { vhost: decodeURIComponent(parts[1]), name: decodeURIComponent(parts.slice(2).join('/')) };
      } catch {
        view = 'queues';
      }
    }
    if (!VIEWS.includes(view)) view = 'overview';
    const changed = view !== state.view || view === 'queue';
    state.view = view;
    for (const v of VIEWS) $('view-' + v).hidden = v !== view;
    for (const a of document.querySelectorAll('#nav a')) {
      const current = a.dataset.view === view || (view === 'queue' && a.dataset.view === 'queues');
      if (current) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (view === 'queue') enterQueueView();
    if (moveFocus && changed) {
      const heading = $('view-' + view).querySelector('h1');
      if (heading) {
        heading.setAttribute('tabindex', '-1');
        heading.focus();
      }
    }
    refresh().then(schedule);
  }

  // --- tables -----------------------------------------------------------------------

  // columns: [{label, num, sortKey, title}]; rows: [{cells: [...], attrs}]
  function table(caption, columns, rows, sort, onSort, emptyText) {
    const head = el('tr', {}, columns.map((c) => {
      const attrs = { scope: 'col', class: c.num ? 'num' : undefined, title: c.title };
      if (!c.sortKey || !onSort) return el('th', attrs, c.label);
      const active = sort && sort.key === c.sortKey;
      attrs['aria-sort'] = active ? (sort.reverse ? 'descending' : 'ascending') : 'none';
      return el('th', attrs, el('button', {
        type: 'button', class: 'sort' + (active ? ' active' : ''), 'data-focus-key': 'sort:' + c.sortKey,
        onclick: () => onSort(c.sortKey),
      }, c.label, el('span', { class: 'arrow', 'aria-hidden': 'true', text: active ? (sort.reverse ? ' ▼' : ' ▲') : '' })));
    }));
    const body = el('tbody', {}, rows.length
      ? rows.map((r) => el('tr', r.attrs || {}, r.cells.map((cell, i) => el('td', {
        class: columns[i].num ? 'num' : undefined, 'data-col': columns[i].col,
      }, cell))))
      : el('tr', {}, el('td', { colspan: columns.length, class: 'empty', text: emptyText || 'Nothing here.' })));
    return el('table', {}, el('caption', { class: 'visually-hidden', text: caption }), el('thead', {}, head), body);
  }

  function features(o) {
    const f = [];
    if (o.durable) f.push(el('abbr', { class: 'tag', title: 'durable', text: 'D' }));
    if (o.auto_delete) f.push(el('abbr', { class: 'tag', title: 'auto-delete', text: 'AD' }));
    if (o.exclusive) f.push(el('abbr', { class: 'tag', title: 'exclusive', text: 'Excl' }));
    if (o.internal) f.push(el('abbr', { class: 'tag', title: 'internal', text: 'I' }));
    const args = o.arguments || {};
    const known = { 'x-message-ttl': 'TTL', 'x-expires': 'Exp', 'x-max-length': 'Lim', 'x-max-length-bytes': 'Lim B',
      'x-dead-letter-exchange': 'DLX', 'x-max-priority': 'Pri', 'x-single-active-consumer': 'SAC', 'x-overflow': 'Ovfl' };
    for (const [k, v] of Object.entries(args)) {
      f.push(el('abbr', { class: 'tag arg', title: `${k}: ${JSON.stringify(v)}`, text: known[k] || 'Args' }));
    }
    return f;
  }

  // --- overview ---------------------------------------------------------------------

  async function renderOverview(o) {
    const ot = o.object_totals || {};
    const qt = o.queue_totals || {};
    const stat = (label, value, id) => el('div', { class: 'stat', id },
      el('span', { class: 'value', text: fmtInt(value) }), el('span', { class: 'label', text: label }));
    $('totals').replaceChildren(
      stat('Connections', ot.connections, 'total-connections'),
      stat('Channels', ot.channels),
      stat('Consumers', ot.consumers),
      stat('Queues', ot.queues, 'total-queues'),
      stat('Exchanges', ot.exchanges),
      stat('Ready', qt.messages_ready, 'total-ready'),
      stat('Unacked', qt.messages_unacknowledged, 'total-unacked'),
      stat('Total messages', qt.messages));
    drawCharts();
    await renderNodes();
    const page = await api('queues?page=1&page_size=10&sort=messages&sort_reverse=true');
    replaceKeepFocus($('top-queues'), queuesTable(page.items, null, null, 'Busiest queues'));
  }

  // --- cluster nodes (docs/cluster.md) -------------------------------------------------

  // In cluster mode /api/nodes lists every node with its role, ISR membership
  // and replication lag; a standalone node has no role and the panel stays
  // hidden.
  const NODE_COLUMNS = [
    { label: 'Node', col: 'node' },
    { label: 'Role', col: 'role' },
    { label: 'In sync', col: 'in_sync', title: 'in the ISR: confirms wait for its acks; it may become leader' },
    { label: 'Replication', col: 'state', title: 'the leader\'s view: streaming, snapshot, disconnected' },
    { label: 'Log index', num: true, col: 'log_index' },
    { label: 'Lag (batches)', num: true, col: 'lag_batches' },
    { label: 'Lag (bytes)', num: true, col: 'lag_bytes' },
    { label: 'Lag (ms)', num: true, col: 'lag_ms' },
    { label: 'Address', col: 'address', title: 'AMQP host:port' },
  ];

  async function renderNodes() {
    const nodes = await api('nodes');
    const clustered = Array.isArray(nodes) && nodes.some((n) => n.role);
    $('nodes-panel').hidden = !clustered;
    if (!clustered) {
      $('nodes-table').replaceChildren();
      return;
    }
    const rows = nodes.map((n) => {
      const repl = n.running === false ? 'down' : (n.replication_state || '–');
      return {
        attrs: { 'data-node': n.node_id },
        cells: [
          n.node_id,
          el('span', { class: n.role === 'leader' ? 'state state-running' : undefined, text: n.role }),
          el('span', { class: 'state ' + (n.in_sync ? 'state-running' : 'state-closed'), text: n.in_sync ? 'yes' : 'no' }),
          repl,
          fmtInt(n.log_index), fmtInt(n.lag_batches), fmtBytes(n.lag_bytes), fmtInt(n.lag_ms),
          n.host ? `${n.host}:${n.amqp_port}` : '–',
        ],
      };
    });
    replaceKeepFocus($('nodes-table'), table('Cluster nodes', NODE_COLUMNS, rows, null, null, 'No nodes.'));
  }

  const RATE_SERIES = [
    { key: 'publish', label: 'Publish', color: '#2563eb', dash: [] },
    { key: 'deliver', label: 'Deliver / get', color: '#059669', dash: [6, 3] },
    { key: 'ack', label: 'Acknowledge', color: '#d97706', dash: [2, 3] },
  ];
  const DEPTH_SERIES = [
    { key: 'ready', label: 'Ready', color: '#2563eb', dash: [] },
    { key: 'unacked', label: 'Unacknowledged', color: '#dc2626', dash: [6, 3] },
  ];

  // Per queue; a null point (never) leaves a gap in its line.
  const CAPACITY_SERIES = [
    { key: 'drain', label: 'Drain time', color: '#2563eb', dash: [] },
    { key: 'wait', label: 'Expected wait', color: '#d97706', dash: [6, 3] },
  ];

  function drawCharts() {
    drawChart($('chart-rates'), $('legend-rates'), RATE_SERIES, fmtRate);
    drawChart($('chart-depth'), $('legend-depth'), DEPTH_SERIES, fmtInt);
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart(canvas, legend, series, fmt, history) {
    const h = history || state.history;
    const last = h[h.length - 1] || {};
    legend.replaceChildren(...series.map((s) => el('span', { class: 'legend-item' },
      el('span', { class: 'swatch', 'aria-hidden': 'true', style: `border-top: 3px ${s.dash.length ? 'dashed' : 'solid'} ${s.color}` }),
      `${s.label}: `, el('strong', { text: fmt(last[s.key]) }))));
    canvas.setAttribute('aria-label', series.map((s) => `${s.label} ${fmt(last[s.key])}`).join(', '));

    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = canvas.clientHeight || 200;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = 56, right = 12, top = 10, bottom = 24;
    const w = width - left - right, hh = height - top - bottom;
    let max = 0;
    for (const p of h) for (const s of series) max = Math.max(max, p[s.key] || 0);
    max = niceMax(max);
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#5b6473';
    ctx.strokeStyle = '#e3e7ee';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const y = top + hh - (hh * i) / 4;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(left + w, Math.round(y) + 0.5);
      ctx.stroke();
      const v = (max * i) / 4;
      ctx.fillText(v >= 1000 ? nf.format(Math.round(v)) : String(Number(v.toFixed(2))), left - 6, y);
    }
    // x axis: the time span covered (up to HISTORY samples)
    const span = h.length > 1 ? h[h.length - 1].t - h[0].t : 0;
    const x = (i) => (h.length > 1 ? left + (w * (h[i].t - h[0].t)) / span : left + w);
    ctx.textBaseline = 'top';
    ctx.textAlign = 'left';
    if (h.length) ctx.fillText(new Date(h[0].t).toLocaleTimeString(), left, top + hh + 6);
    ctx.textAlign = 'right';
    if (h.length) ctx.fillText(new Date(h[h.length - 1].t).toLocaleTimeString(), left + w, top + hh + 6);
    if (!h.length) return;
    for (const s of series) {
      const y = (i) => top + hh - (hh * (h[i][s.key] || 0)) / max;
      const gap = (i) => h[i][s.key] === null;  // "never": no point to draw
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = 2;
      ctx.setLineDash(s.dash);
      ctx.beginPath();
      for (let i = 0; i < h.length; i++) {
        if (gap(i)) continue;
        if (i === 0 || gap(i - 1)) ctx.moveTo(x(i), y(i));
        else ctx.lineTo(x(i), y(i));
      }
      ctx.stroke();
      ctx.setLineDash([]);
      if (gap(h.length - 1)) continue;
      ctx.beginPath();
      ctx.arc(x(h.length - 1), y(h.length - 1), 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  // --- connections and channels -----------------------------------------------------------

  async function renderConnections() {
    const conns = await api('connections');
    const rows = conns.map((c) => {
      const cp = c.client_properties || {};
      const client = [cp.product, cp.version].filter(Boolean).join(' ') || '–';
      return {
        attrs: { 'data-connection': c.name },
        cells: [
          el('span', {}, c.name, c.user_provided_name ? el('span', { class: 'muted', text: ` (${c.user_provided_name})` }) : null),
          c.user, el('span', { class: 'state state-' + c.state, text: c.state }), client, fmtInt(c.channels),
          c.timeout ? `${c.timeout} s` : 'off',
          el('button', {
            type: 'button', class: 'small danger', 'data-focus-key': 'close:' + c.name,
            'aria-label': `Close connection ${c.name}`,
            onclick: async () => {
              if (!confirm(`Close connection ${c.name}? The client sees 320 CONNECTION_FORCED.`)) return;
              try {
                await api('connections/' + enc(c.name), { method: 'DELETE', headers: { 'X-Reason': 'Closed from the Sluice dashboard' } });
              } catch (e) { showError(`Close failed: ${e.message}`); }
              refresh();
            },
          }, 'Close'),
        ],
      };
    });
    replaceKeepFocus($('connections-table'), table('Connections', [
      { label: 'Name' }, { label: 'User' }, { label: 'State' }, { label: 'Client' }, { label: 'Channels', num: true },
      { label: 'Heartbeat', num: true }, { label: '' },
    ], rows, null, null, 'No connections.'));
  }

  async function renderChannels() {
    const chans = await api('channels');
    const rows = chans.map((c) => ({
      cells: [
        c.name, c.user,
        [c.confirm ? el('abbr', { class: 'tag', title: 'confirm mode', text: 'C' }) : null,
          c.transactional ? el('abbr', { class: 'tag', title: 'transactional', text: 'T' }) : null],
        c.global_prefetch_count ? `${c.prefetch_count} / ${c.global_prefetch_count} (global)` : fmtInt(c.prefetch_count),
        fmtInt(c.consumer_count), fmtInt(c.messages_unacknowledged),
        el('span', { class: 'state state-' + c.state, text: c.state }),
      ],
    }));
    replaceKeepFocus($('channels-table'), table('Channels', [
      { label: 'Channel' }, { label: 'User' }, { label: 'Mode' }, { label: 'Prefetch', num: true },
      { label: 'Consumers', num: true }, { label: 'Unacked', num: true }, { label: 'State' },
    ], rows, null, null, 'No channels.'));
  }

  async function renderExchanges() {
    const exchanges = await api('exchanges');
    const rows = exchanges.map((e) => ({
      cells: [e.name === '' ? el('em', { text: '(AMQP default)' }) : e.name, e.type, features(e)],
    }));
    replaceKeepFocus($('exchanges-table'), table('Exchanges', [{ label: 'Name' }, { label: 'Type' }, { label: 'Features' }],
      rows, null, null, 'No exchanges.'));
  }

  // --- queues -------------------------------------------------------------------------------

  const QUEUE_COLUMNS = [
    { label: 'Name', sortKey: 'name', col: 'name' },
    { label: 'Features', col: 'features' },
    { label: 'Ready', num: true, sortKey: 'messages_ready', col: 'messages_ready' },
    { label: 'Unacked', num: true, sortKey: 'messages_unacknowledged', col: 'messages_unacknowledged' },
    { label: 'Total', num: true, sortKey: 'messages', col: 'messages' },
    { label: 'Incoming', num: true, sortKey: 'message_stats.publish_details.rate', col: 'publish_rate', title: 'messages published per second' },
    { label: 'Deliver / get', num: true, sortKey: 'message_stats.deliver_get_details.rate', col: 'deliver_rate', title: 'messages delivered per second' },
    { label: 'Ack', num: true, sortKey: 'message_stats.ack_details.rate', col: 'ack_rate', title: 'messages acknowledged per second' },
    { label: 'Consumers', num: true, sortKey: 'consumers', col: 'consumers' },
    { label: 'Drain time', num: true, sortKey: 'capacity.drain_seconds', col: 'drain', title: 'depth / (consume rate - publish rate); never if not draining' },
    { label: 'Expected wait', num: true, sortKey: 'capacity.expected_wait_seconds', col: 'wait', title: 'depth / consume rate (Little\'s law); never if nothing consumes' },
  ];

  function queuesTable(queues, sort, onSort, caption) {
    const rows = queues.map((q) => ({
      attrs: { 'data-queue': q.name },
      cells: [
        el('a', { href: queueHref(q), 'data-focus-key': 'q:' + q.name }, q.name),
        features(q),
        fmtInt(q.messages_ready), fmtInt(q.messages_unacknowledged), fmtInt(q.messages),
        fmtRate(get(q, 'message_stats.publish_details.rate')),
        fmtRate(get(q, 'message_stats.deliver_get_details.rate')),
        fmtRate(get(q, 'message_stats.ack_details.rate')),
        fmtInt(q.consumers),
        fmtSeconds(capacityOf(q, 'drain_seconds')),
        fmtSeconds(capacityOf(q, 'expected_wait_seconds')),
      ],
    }));
    return table(caption, QUEUE_COLUMNS, rows, sort, onSort, 'No queues.');
  }

  async function renderQueues() {
    const s = state.queueSort;
    const params = new URLSearchParams({
      page: String(state.queuePage), page_size: '50', sort: s.key, sort_reverse: String(s.reverse),
    });
    if (state.queueFilter) params.set('name', state.queueFilter);
    let page;
    try {
      page = await api('queues?' + params);
    } catch (e) {
      if (e.status === 400 && state.queuePage > 1) {  // the filter left fewer pages
        state.queuePage = 1;
        return renderQueues();
      }
      throw e;
    }
    replaceKeepFocus($('queues-table'), queuesTable(page.items, s, (key) => {
      if (state.queueSort.key === key) state.queueSort.reverse = !state.queueSort.reverse;
      else state.queueSort = { key, reverse: key !== 'name' };
      refresh();
    }, 'Queues'));
    $('queue-count').textContent = page.filtered_count === page.total_count
      ? `${fmtInt(page.total_count)} queues`
      : `${fmtInt(page.filtered_count)} of ${fmtInt(page.total_count)} queues match`;
    const pager = [];
    if (page.page_count > 1) {
      pager.push(el('button', {
        type: 'button', class: 'secondary small', disabled: page.page <= 1, 'data-focus-key': 'prev',
        onclick: () => { state.queuePage--; refresh(); },
      }, '← Previous'));
      pager.push(el('span', { text: `Page ${page.page} of ${page.page_count}` }));
      pager.push(el('button', {
        type: 'button', class: 'secondary small', disabled: page.page >= page.page_count, 'data-focus-key': 'next',
        onclick: () => { state.queuePage++; refresh(); },
      }, 'Next →'));
    }
    replaceKeepFocus($('queues-pager'), ...pager);
  }

  // --- one queue ------------------------------------------------------------------------------

  function queuePath() {
    const r = state.queueRef;
    return `${enc(r.vhost)}/${enc(r.name)}`;
  }

  function setStatus(form, text, isError) {
    const p = form.querySelector('.form-status');
    p.textContent = text;
    p.classList.toggle('form-error', !!isError);
  }

  async function enterQueueView() {
    $('queue-title').textContent = `Queue ${state.queueRef.name}`;
    state.queueHistory = [];
    $('get-results').replaceChildren();
    for (const f of ['bind-form', 'get-form', 'publish-form']) setStatus($(f), '');
    $('danger-status').textContent = '';
    try {
      const exchanges = await api('exchanges');
      $('exchange-names').replaceChildren(...exchanges.filter((e) => e.name).map((e) => el('option', { value: e.name })));
    } catch { /* the list is only a convenience */ }
  }

  async function renderQueue() {
    const r = state.queueRef;
    let q;
    try {
      q = await api('queues/' + queuePath());
    } catch (e) {
      if (e.status === 404) {
        $('queue-info').replaceChildren(el('p', { class: 'form-error', text: `Queue '${r.name}' does not exist (any more).` }));
        $('queue-bindings').replaceChildren();
        $('queue-consumers').replaceChildren();
        return;
      }
      throw e;
    }
    const [bindings, consumers] = await Promise.all([
      api('queues/' + queuePath() + '/bindings'),
      api('consumers/' + enc(r.vhost)),
    ]);
    const ms = q.message_stats || {};
    const item = (label, value, id) => el('div', { class: 'stat', id },
      el('span', { class: 'value', text: value }), el('span', { class: 'label', text: label }));
    const info = el('div', {},
      el('div', { class: 'totals' },
        item('Ready', fmtInt(q.messages_ready), 'queue-ready'),
        item('Unacked', fmtInt(q.messages_unacknowledged), 'queue-unacked'),
        item('Total', fmtInt(q.messages)),
        item('Consumers', fmtInt(q.consumers)),
        item('Incoming', fmtRate(get(ms, 'publish_details.rate'))),
        item('Deliver / get', fmtRate(get(ms, 'deliver_get_details.rate'))),
        item('Ack', fmtRate(get(ms, 'ack_details.rate'))),
        item('In memory', fmtBytes(q.message_bytes_ram)),
        item('Drain time', fmtSeconds(capacityOf(q, 'drain_seconds')), 'queue-drain'),
        item('Expected wait', fmtSeconds(capacityOf(q, 'expected_wait_seconds')), 'queue-wait')),
      el('dl', { class: 'props' },
        el('dt', { text: 'Virtual host' }), el('dd', { text: q.vhost }),
        el('dt', { text: 'Features' }), el('dd', {}, features(q).length ? features(q) : 'none'),
        el('dt', { text: 'State' }), el('dd', { text: q.state }),
        el('dt', { text: 'Paged out' }), el('dd', { text: fmtInt(q.messages_paged_out) }),
        el('dt', { text: 'Arguments' }), el('dd', { text: JSON.stringify(q.arguments || {}) }),
        q.owner_pid_details ? [el('dt', { text: 'Owner' }), el('dd', { text: q.owner_pid_details.name })] : null));
    replaceKeepFocus($('queue-info'), info);
    if (get(q, 'capacity.sampled')) {
      state.queueHistory.push({ t: Date.now(), drain: q.capacity.drain_seconds, wait: q.capacity.expected_wait_seconds });
      if (state.queueHistory.length > HISTORY) state.queueHistory.shift();
    }
    drawChart($('chart-capacity'), $('legend-capacity'), CAPACITY_SERIES, fmtSeconds, state.queueHistory);

    const brows = bindings.map((b) => ({
      cells: [
        b.source === '' ? el('em', { text: '(default exchange)' }) : b.source,
        b.routing_key, Object.keys(b.arguments || {}).length ? JSON.stringify(b.arguments) : '',
        b.source === '' ? '' : el('button', {
          type: 'button', class: 'small secondary', 'data-focus-key': 'unbind:' + b.source + '/' + b.properties_key,
          'aria-label': `Unbind from ${b.source} with key ${b.routing_key}`,
          onclick: async () => {
            try {
              await api(`bindings/${enc(r.vhost)}/e/${enc(b.source)}/q/${enc(r.name)}/${enc(b.properties_key)}`, { method: 'DELETE' });
              setStatus($('bind-form'), `Unbound from ${b.source}.`);
            } catch (e) { setStatus($('bind-form'), `Unbind failed: ${e.message}`, true); }
            refresh();
          },
        }, 'Unbind'),
      ],
    }));
    replaceKeepFocus($('queue-bindings'), table('Bindings', [
      { label: 'From' }, { label: 'Routing key' }, { label: 'Arguments' }, { label: '' },
    ], brows, null, null, 'No bindings.'));

    const crows = consumers.filter((c) => c.queue && c.queue.name === r.name).map((c) => ({
      cells: [c.consumer_tag, get(c, 'channel_details.name') || '–', c.ack_required ? 'yes' : 'no',
        c.exclusive ? 'yes' : 'no', fmtInt(c.prefetch_count), fmtInt(c.priority)],
    }));
    replaceKeepFocus($('queue-consumers'), table('Consumers', [
      { label: 'Tag' }, { label: 'Channel' }, { label: 'Ack' }, { label: 'Exclusive' },
      { label: 'Prefetch', num: true }, { label: 'Priority', num: true },
    ], crows, null, null, 'No consumers.'));
  }

  function parseJsonField(input, what) {
    const text = input.value.trim();
    if (!text) return {};
    try {
      const v = JSON.parse(text);
      if (v && typeof v === 'object' && !Array.isArray(v)) return v;
    } catch { /* fall through */ }
    throw new Error(`${what} must be a JSON object, like {"key": "value"}`);
  }

  function renderMessages(messages) {
    if (!messages.length) return [el('p', { class: 'muted', text: 'The queue is empty.' })];
    return messages.map((m, i) => el('article', { class: 'message' },
      el('h3', { text: `Message ${i + 1}` }),
      el('dl', { class: 'props' },
        el('dt', { text: 'Exchange' }), el('dd', { text: m.exchange === '' ? '(default)' : m.exchange }),
        el('dt', { text: 'Routing key' }), el('dd', { text: m.routing_key }),
        el('dt', { text: 'Redelivered' }), el('dd', { text: m.redelivered ? 'yes' : 'no' }),
        el('dt', { text: 'Properties' }), el('dd', { text: JSON.stringify(m.properties) }),
        el('dt', { text: 'Payload' }),
        el('dd', {}, el('span', { class: 'muted', text: `${fmtInt(m.payload_bytes)} bytes, ${m.payload_encoding}` }),
          el('pre', { text: m.payload })))));
  }

  function wireQueueForms() {
    $('bind-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = ev.target;
      const r = state.queueRef;
      try {
        await api(`bindings/${enc(r.vhost)}/e/${enc(f.exchange.value)}/q/${enc(r.name)}`, {
          method: 'POST', body: { routing_key: f.routing_key.value, arguments: {} },
        });
        setStatus(f, `Bound to ${f.exchange.value}.`);
        refresh();
      } catch (e) { setStatus(f, `Bind failed: ${e.message}`, true); }
    });
    $('get-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = ev.target;
      try {
        const messages = await api(`queues/${queuePath()}/get`, {
          method: 'POST', body: { count: Number(f.count.value) || 1, ackmode: f.ackmode.value, encoding: 'auto', truncate: 50000 },
        });
        setStatus(f, `${messages.length} message${messages.length === 1 ? '' : 's'}.`);
        $('get-results').replaceChildren(...renderMessages(messages));
        refresh();
      } catch (e) { setStatus(f, `Get failed: ${e.message}`, true); }
    });
    $('publish-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = ev.target;
      const r = state.queueRef;
      try {
        const headers = parseJsonField(f.headers, 'Headers');
        const res = await api(`exchanges/${enc(r.vhost)}/amq.default/publish`, {
          method: 'POST',
          body: { routing_key: r.name, payload: f.payload.value, payload_encoding: 'string',
            properties: { delivery_mode: Number(f.delivery_mode.value), headers } },
        });
        setStatus(f, res.routed ? 'Message published.' : 'Message published but not routed.', !res.routed);
        refresh();
      } catch (e) { setStatus(f, `Publish failed: ${e.message}`, true); }
    });
    $('purge-button').addEventListener('click', async () => {
      const r = state.queueRef;
      if (!confirm(`Remove every ready message from queue ${r.name}?`)) return;
      try {
        await api(`queues/${queuePath()}/contents`, { method: 'DELETE' });
        $('danger-status').textContent = 'Queue purged.';
      } catch (e) { $('danger-status').textContent = `Purge failed: ${e.message}`; }
      refresh();
    });
    $('delete-button').addEventListener('click', async () => {
      const r = state.queueRef;
      if (!confirm(`Delete queue ${r.name} and its messages?`)) return;
      try {
        await api(`queues/${queuePath()}`, { method: 'DELETE' });
        location.hash = '#/queues';
      } catch (e) { $('danger-status').textContent = `Delete failed: ${e.message}`; }
    });
    $('add-queue-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = ev.target;
      try {
        const args = parseJsonField(f.arguments, 'Arguments');
        await api(`queues/%2F/${enc(f.name.value)}`, {
          method: 'PUT',
          body: { durable: f.durable.value === 'true', auto_delete: f.auto_delete.value === 'true', arguments: args },
        });
        setStatus(f, `Queue ${f.name.value} declared.`);
        f.name.value = '';
        refresh();
      } catch (e) { setStatus(f, `Declare failed: ${e.message}`, true); }
    });
  }

  // --- start ----------------------------------------------------------------------------------

  function start() {
    wireQueueForms();
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      login({ user: $('login-user').value, pass: $('login-pass').value });
    });
    $('logout').addEventListener('click', () => logout(''));
    $('refresh-interval').addEventListener('change', (ev) => {
      state.interval = Number(ev.target.value);
      schedule();
    });
    let filterTimer = null;
    $('queue-filter').addEventListener('input', (ev) => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => {
        state.queueFilter = ev.target.value.trim();
        state.queuePage = 1;
        refresh();
      }, 250);
    });
    window.addEventListener('hashchange', () => { if (state.creds) route(true); });
    window.addEventListener('resize', () => { if (state.view === 'overview') drawCharts(); });
    const creds = storedCreds();
    if (creds) login(creds);
    else showLogin('');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
