// Overview: every context (revision, size, last change, syncs in the last minute by
// level, conflicts per hour, p95 sync time, integrity) and the server's health,
// refreshed every two seconds.

import { api, ApiError } from './api.js';
import { clear, fmtAgo, fmtBytes, fmtMs, h } from './dom.js';

const LEVELS = ['critical', 'checkpoint', 'periodic', 'session'];

export function mount(root, app) {
  const health = h('dl', { class: 'health', id: 'server-health' });
  const body = h('tbody');
  const table = h('table', { class: 'grid', id: 'contexts-table' },
    h('caption', { text: 'Contexts' }),
    h('thead', {}, h('tr', {},
      ['Context', 'Revision', 'Size', 'Last change', 'Syncs/min (crit/chk/per/ses)', 'Conflicts/h',
        'Open conflicts', 'p95 sync', 'Integrity'].map((t) => h('th', { scope: 'col', text: t })))),
    body);
  root.append(h('h1', { text: 'Overview' }), h('section', { 'aria-label': 'Server health' }, health),
    h('div', { class: 'scroll' }, table));
  let timer = null;
  let stopped = false;

  async function verify(name, button) {
    button.disabled = true;
    button.textContent = 'Checking…';
    try {
      await api(`/v1/contexts/${encodeURIComponent(name)}/verify`, { method: 'POST' });
    } catch (e) {
      if (e instanceof ApiError) app.banner('error', `Verify of ${name} failed: ${e.message}`);
    }
    refresh();
  }

  function integrityCell(c) {
    const button = h('button', { type: 'button', class: 'small', text: c.integrity ? 'Re-check' : 'Verify' });
    button.addEventListener('click', () => verify(c.context, button));
    if (!c.integrity) return h('td', {}, h('span', { class: 'muted', text: 'not checked ' }), button);
    const i = c.integrity;
    const label = i.ok ? `ok at r${i.revision} (${i.checked} checked)` : `FAILED: ${i.problems.join('; ')}`;
    return h('td', { class: i.ok ? 'good' : 'bad' }, h('span', { text: `${label} ` }), button);
  }

  function draw(data) {
    const s = data.server;
    clear(health).append(
      h('dt', { text: 'Store' }), h('dd', { class: s.store.ready ? 'good' : 'bad', id: 'store-state',
        text: s.store.ready ? 'ready' : `not ready: ${s.store.message}` }),
      h('dt', { text: 'Version' }), h('dd', { text: s.version }),
      h('dt', { text: 'Uptime' }), h('dd', { text: `${Math.floor(s.uptime_s / 60)} min` }),
      h('dt', { text: 'Event streams' }), h('dd', { text: s.event_subscribers }),
      h('dt', { text: 'Storage (documents)' }), h('dd', { text: fmtBytes(s.storage_bytes) }),
    );
    clear(body);
    for (const c of data.contexts) {
      const last = c.last_change;
      const link = h('a', { href: `#/context/${encodeURIComponent(c.context)}`, text: c.context });
      body.append(h('tr', { dataset: { context: c.context } },
        h('th', { scope: 'row' }, link),
        h('td', { class: 'num', text: c.revision }),
        h('td', { class: 'num', text: fmtBytes(c.size) }),
        h('td', { text: last ? `${fmtAgo(last.timestamp_ms, data.now_ms)} · ${last.agent} · ${last.level}` : '–' }),
        h('td', { class: 'num', text: LEVELS.map((l) => c.syncs_last_minute[l] ?? 0).join(' / ') }),
        h('td', { class: 'num', text: c.conflicts_last_hour }),
        h('td', { class: 'num' }, c.open_conflicts
          ? h('a', { href: `#/conflicts/${encodeURIComponent(c.context)}`, text: c.open_conflicts })
          : '0'),
        h('td', { class: 'num', text: fmtMs(c.p95_sync_ms) }),
        integrityCell(c)));
    }
    if (!data.contexts.length) body.append(h('tr', {}, h('td', { colspan: 9, text: 'No contexts yet.' })));
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      draw(await api('/v1/overview'));
    } catch {
      // The banner says why; try again.
    }
    if (!stopped) timer = setTimeout(refresh, 2000);
  }
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
