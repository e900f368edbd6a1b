// floodguard console. Everything shown comes from `?api=state` and is
// written as text (textContent, SVG text nodes): user agents, routes and
// rule names are the clients' or the operator's words, never markup.
'use strict';
(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);
  let csrf = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  // A cell: a string or number, or {text, cls, sub} for a second line.
  function cell(c) {
    if (c instanceof Node) { const td = el('td'); td.appendChild(c); return td; }
    if (c !== null && typeof c === 'object') {
      const td = el('td', c.text, c.cls);
      if (c.sub) td.appendChild(el('div', c.sub, 'sub'));
      return td;
    }
    return el('td', c, typeof c === 'number' ? 'num' : '');
  }
  function fill(id, rows, empty) {
    const table = $(id);
    const body = table.tBodies[0];
    const out = rows.map((r) => { const tr = el('tr'); r.forEach((c) => tr.appendChild(cell(c))); return tr; });
    if (out.length === 0 && empty) {
      const td = el('td', empty, 'empty');
      td.colSpan = Math.max(1, table.tHead ? table.tHead.rows[0].cells.length : 2);
      const tr = el('tr'); tr.appendChild(td); out.push(tr);
    }
    body.replaceChildren(...out);
  }
  const pct = (x) => ({ text: (x * 100).toFixed(1) + '%', cls: 'num' });
  const int = (x) => ({ text: Number(x || 0).toLocaleString('en'), cls: 'num' });
  function dur(s) {
    if (s === null || s === undefined) return '–';
    if (s < 0.001) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 1 : 0) + ' ms';
    if (s < 120) return s.toFixed(0) + ' s';
    if (s < 7200) return (s / 60).toFixed(0) + ' min';
    if (s < 172800) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  }
  function nice(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // A small line chart: x is seconds before now (the last five minutes).
  function chart(id, t, series, fmt, attack) {
    const root = $(id);
    const W = 320, H = 110, L = 34, B = 14, T = 4;
    const parts = [];
    let max = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    max = nice(max);
    const span = Math.max(60, t.length ? -t[0] : 60);
    const x = (ti) => L + (W - L - 2) * (1 + ti / span);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    for (const f of [0, 0.5, 1]) {
      parts.push(svg('line', { x1: L, x2: W - 2, y1: y(max * f), y2: y(max * f), class: 'grid' }));
      parts.push(svg('text', { x: L - 3, y: y(max * f) + 3, 'text-anchor': 'end' }, fmt(max * f)));
    }
    parts.push(svg('text', { x: L, y: H - 2 }, '−' + dur(span)));
    parts.push(svg('text', { x: W - 2, y: H - 2, 'text-anchor': 'end' }, 'now'));
    if (attack) {
      for (let i = 0; i < t.length; i++) {
        if (!attack[i]) continue;
        const x0 = x(i > 0 ? t[i - 1] : t[i] - 1);
        parts.push(svg('rect', { x: x0, y: T, width: Math.max(0.5, x(t[i]) - x0), height: H - T - B, class: 'attack' }));
      }
    }
    series.forEach((s) => {
      let pts = [];
      const flush = () => { if (pts.length) parts.push(svg('polyline', { points: pts.join(' '), class: s.cls })); pts = []; };
      s.values.forEach((v, i) => { if (v === null || v === undefined) flush(); else pts.push(x(t[i]).toFixed(1) + ',' + y(v).toFixed(1)); });
      flush();
    });
    root.replaceChildren(...parts);
    const legend = $('l' + id.slice(1));
    legend.replaceChildren(...series.map((s) => {
      const last = s.values.length ? s.values[s.values.length - 1] : null;
      const span = el('span'); const i = el('i', null, s.cls); span.appendChild(i);
      span.appendChild(document.createTextNode(s.name + ' ' + (last === null || last === undefined ? '–' : fmt(last))));
      return span;
    }));
  }
  const perSec = (v) => (v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + 'k' : v.toFixed(v < 10 && v % 1 ? 1 : 0));

  const TITLE = { under_attack: 'UNDER ATTACK', degraded: 'DEGRADED', calm: 'CALM', unknown: 'DETECTION OFF' };

  function render(s) {
    csrf = s.csrf;
    const snap = s.snapshot, st = snap.stats, d = snap.detection, h = s.history;
    $('banner').className = s.status;
    $('status').textContent = TITLE[s.status] || s.status;
    $('why').replaceChildren(...s.why.map((w) => el('li', w)));
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    document.title = (TITLE[s.status] || '') + ' · floodguard console';

    chart('c-rate', h.t, [
      { name: 'requests', values: h.requests, cls: 's0' },
      { name: 'admitted', values: h.admitted, cls: 's1' },
    ], perSec, h.under_attack);
    chart('c-refused', h.t, [
      { name: 'rate limit', values: h.refused_rate_limit, cls: 's0' },
      { name: 'banned', values: h.refused_blocked, cls: 's2' },
      { name: 'score', values: h.refused_score, cls: 's4' },
      { name: 'challenge/held', values: h.refused_challenge, cls: 's3' },
      { name: 'overload', values: h.refused_overload, cls: 's5' },
    ], perSec, h.under_attack);
    chart('c-latency', h.t, [{ name: 'mean', values: h.latency, cls: 's3' }], dur, h.under_attack);
    chart('c-limit', h.t, [
      { name: 'limit', values: h.limit, cls: 's0' },
      { name: 'in flight', values: h.in_flight, cls: 's1' },
      { name: 'open conns', values: h.open_connections, cls: 's5' },
    ], (v) => v.toFixed(0), h.under_attack);

    const share = (c) => [pct(c.share), pct(c.baseline_share)];
    fill('t-flagged', d ? d.flagged_classes.map((c) => [
      { text: c.key.description, sub: c.key.text }, ...share(c), int(c.requests), int(c.new_clients),
    ]) : [], d ? 'no cluster flagged' : 'attack detection is off');
    fill('t-classes', d ? d.top_classes.slice(0, 12).map((c) => [
      { text: c.key.description }, ...share(c),
    ]) : [], 'no traffic');
    const nets = d ? d.flagged_prefixes.map((p) => [{ text: p.key, cls: 'mono' }, 'flagged', ...share(p)])
      .concat(d.top_prefixes.slice(0, 10).map((p) => [{ text: p.key, cls: 'mono' }, '', ...share(p)])) : [];
    fill('t-networks', nets, 'no traffic');

    fill('t-offenders', snap.offenders.map((o) => {
      const reasons = el('div');
      for (const sg of o.report.signals) {
        reasons.appendChild(el('span', sg.about + ' (' + sg.signal + ' ' + (sg.points >= 0 ? '+' : '') + sg.points.toFixed(0) + ')', 'reason'));
      }
      return [{ text: o.client, cls: 'mono' }, { text: o.report.score.toFixed(0), cls: 'num' }, o.action, reasons,
        dur(Math.max(0, snap.now - o.at)) + ' ago'];
    }), 'no client reached the throttle threshold');

    $('bans-count').textContent = s.bans_total > snap.bans.length
      ? s.bans_total + ' in force; the ' + snap.bans.length + ' lasting longest listed'
      : s.bans_total + ' in force';
    fill('t-bans', snap.bans.map((b) => {
      const btn = el('button', 'Unban', 'unban');
      btn.type = 'button';
      btn.dataset.unban = b.prefix;
      return [{ text: b.prefix, cls: 'mono' }, dur(b.remaining), btn];
    }), 'no ban in force');

    $('events').hidden = !s.events;
    if (s.events) {
      fill('t-events', s.events.map((e) => [
        { text: new Date(e.at * 1000).toLocaleTimeString(), cls: 'mono' },
        { text: e.text, cls: e.kind },
      ]), 'nothing yet');
    }

    fill('t-rules', st.rules.map((r) => [
      r.name, r.shadow ? 'shadow' : 'enforced', int(r.limiter.admitted),
      int(r.shadow ? 0 : r.limiter.denied), int(r.shadow ? r.shadow_refusals : 0),
    ]), 'no rule');

    const counters = [
      ['requests', st.requests], ['admitted', st.admitted], ['refused: rate limit', st.refused_rate_limit],
      ['refused: blocked or banned', st.refused_blocked], ['refused: score (banned)', st.refused_score],
      ['refused: challenge', st.refused_challenge], ['held (suspect)', st.refused_suspect],
      ['shed (overload)', st.refused_overload], ['refusals held by the tarpit', st.tarpit.held],
    ];
    if (st.scoring) counters.push(['clients scored now', st.scoring.clients], ['clients banned by score', st.scoring.banned]);
    fill('t-counters', counters.map(([k, v]) => [k, int(v)]));
    const g = s.gate;
    $('gate-title').hidden = !g; $('t-gate').hidden = !g;
    if (g) {
      fill('t-gate', [
        ['open now', g.open + ' of ' + g.budget], ['accepted', g.accepted], ['refused: banned', g.refused_banned],
        ['refused: per address', g.refused_per_ip], ['refused: per network', g.refused_per_prefix],
        ['refused: new-connection rate', g.refused_rate + g.refused_network_rate], ['refused: slow client', g.refused_slow],
        ['refused or closed at the budget', g.refused_budget + g.closed_budget],
        ['closed: head timeout', g.closed_head_timeout], ['closed: idle', g.closed_idle],
      ].map(([k, v]) => [k, typeof v === 'number' ? int(v) : { text: v, cls: 'num' }]));
    }
  }

  function say(text) { $('msg').textContent = text; }

  async function act(action, body) {
    try {
      const r = await fetch('?api=' + action, {
        method: 'POST', body, cache: 'no-store', credentials: 'same-origin',
        headers: { 'Content-Type': 'text/plain', 'X-Floodguard-Csrf': csrf || '' },
      });
      const text = await r.text();
      if (!r.ok) { say(text); return; }
      const v = JSON.parse(text);
      say(action === 'unban' ? (v.lifted ? 'ban on ' + v.prefix + ' lifted' : 'no ban on ' + v.prefix)
        : v.prefix + ' banned for ' + dur(v.duration));
      poll(true);
    } catch (e) { say('request failed: ' + e); }
  }

  let timer = null;
  async function poll(once) {
    if (!once && timer) clearTimeout(timer);
    try {
      const r = await fetch('?api=state', { cache: 'no-store', credentials: 'same-origin' });
      if (r.status === 401) { say('session ended: open the console again with ?token=…'); }
      else if (!r.ok) { say('state: HTTP ' + r.status); }
      else { render(await r.json()); }
    } catch (e) {
      $('updated').textContent = 'unreachable: ' + e;
    }
    if (!once) timer = setTimeout(poll, 1000);
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('t-bans').addEventListener('click', (e) => {
      const p = e.target && e.target.dataset ? e.target.dataset.unban : null;
      if (p) act('unban', p);
    });
    $('do-unban').addEventListener('click', () => act('unban', $('ban-prefix').value.trim()));
    $('do-ban').addEventListener('click', () => {
      const minutes = Number($('ban-minutes').value);
      if (!(minutes > 0)) { say('minutes must be a positive number'); return; }
      act('ban', $('ban-prefix').value.trim() + ' ' + Math.round(minutes * 60));
    });
    poll(false);
  });
})();
