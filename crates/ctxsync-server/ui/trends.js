// Trends: revisions per second (by level, by agent), syncs per second (by level), sync
// latency p50/p95, conflicts and failures (by level), over 1 h, 24 h or 7 d, plus totals
// by agent; refreshed every 5 s (1 h), 30 s (24 h) or 60 s (7 d). Syncs come from the
// store's sync log: every process's, kept across restarts.

import { api } from './api.js';
import { clear, enc, h } from './dom.js';
import { plot } from './plot.js';

// Refresh period by window: a bucket of the 24 h (7 d) window spans 24 min (2.8 h), and
// reading a week of a busy sync log costs seconds.
const EVERY = { '1h': 5000, '24h': 30000, '7d': 60000 };
const AGENT_COLORS = ['#2e86de', '#d7263d', '#1b998b', '#f39c12', '#8e44ad'];
const LEVEL_COLORS = { critical: '#d7263d', checkpoint: '#1b998b', periodic: '#2e86de', session: '#8e44ad' };

export function mount(root, app) {
  const ctx = app.context;
  const key = 'ctxsync.trends.window';
  let chosen = sessionStorage.getItem(key) ?? '1h';
  const plots = h('div', { id: 'plots', class: 'plots' });
  const note = h('p', { class: 'muted', id: 'trends-note' });
  const agents = h('div', { id: 'by-agent' });
  const picker = h('div', { class: 'inline', role: 'radiogroup', 'aria-label': 'Window' },
    ['1h', '24h', '7d'].map((w) => {
      const b = h('button', { type: 'button', role: 'radio', dataset: { window: w }, text: w });
      b.addEventListener('click', () => {
        chosen = w;
        sessionStorage.setItem(key, w);
        refresh();
      });
      return b;
    }));
  root.append(h('h1', { text: `Trends of ${ctx}` }), picker, note, plots, agents);
  let stopped = false;
  let timer = null;

  function draw(t) {
    for (const b of picker.querySelectorAll('button')) b.setAttribute('aria-checked', String(b.dataset.window === t.window));
    const secs = t.bucket_ms / 1000;
    const mid = (b) => b.start_ms + t.bucket_ms / 2;
    const counted = (name, color, pick) => ({
      name, color,
      points: t.buckets.filter((b) => pick(b) > 0).map((b) => ({ x: mid(b), y: pick(b) / secs, count: pick(b) })),
    });
    const revisions = [counted('all', '#333', (b) => b.revisions),
      ...Object.entries(LEVEL_COLORS).map(([l, c]) => counted(l, c, (b) => b.by_level[l] ?? 0))];
    const syncs = [counted('all', '#333', (b) => b.pushes),
      ...Object.entries(LEVEL_COLORS).map(([l, c]) => counted(l, c, (b) => b.pushes_by_level[l] ?? 0))];
    const latency = ['p50', 'p95'].map((q, i) => ({
      name: q, color: i ? '#d7263d' : '#2e86de',
      points: t.buckets.filter((b) => b[`${q}_ms`] !== null).map((b) => ({ x: mid(b), y: b[`${q}_ms`], count: b.pushes })),
    }));
    const trouble = [counted('conflicts', '#f39c12', (b) => b.conflicts), counted('failures', '#d7263d', (b) => b.failures)];
    const failures = Object.entries(LEVEL_COLORS).map(([l, c]) => counted(l, c, (b) => b.failures_by_level[l] ?? 0));
    // The busiest agents of the window, each its own series.
    const busiest = new Map();
    for (const b of t.buckets) for (const [a, n] of Object.entries(b.by_agent)) busiest.set(a, (busiest.get(a) ?? 0) + n);
    const byAgent = [...busiest].sort((a, b) => b[1] - a[1]).slice(0, AGENT_COLORS.length)
      .map(([a], i) => counted(a, AGENT_COLORS[i], (b) => b.by_agent[a] ?? 0));
    const span = { from: t.from_ms, to: t.to_ms };
    clear(plots).append(
      plot({ id: 'plot-revisions', title: 'Revisions per second', unit: 'rev/s', ...span, series: revisions }),
      plot({ id: 'plot-agents', title: 'Revisions per second by agent (busiest 5)', unit: 'rev/s', ...span, series: byAgent }),
      plot({ id: 'plot-syncs', title: 'Syncs per second (every outcome)', unit: '/s', ...span, series: syncs }),
      plot({ id: 'plot-latency', title: 'Sync latency (store time)', unit: 'ms', ...span, series: latency }),
      plot({ id: 'plot-trouble', title: 'Conflicts and failures per second', unit: '/s', ...span, series: trouble }),
      plot({ id: 'plot-failures', title: 'Failures per second by level', unit: '/s', ...span, series: failures }));
    note.textContent = `${t.buckets.length} buckets of ${Math.round(secs)} s. Revisions come from the op log; syncs, latency, conflicts and failures from the store's sync log (every process's syncs, kept across restarts).`;
    const totals = new Map();
    for (const b of t.buckets) {
      for (const [a, n] of Object.entries(b.by_agent)) {
        const row = totals.get(a) ?? { revisions: 0, trouble: 0 };
        row.revisions += n;
        totals.set(a, row);
      }
      for (const [a, n] of Object.entries(b.trouble_by_agent)) {
        const row = totals.get(a) ?? { revisions: 0, trouble: 0 };
        row.trouble += n;
        totals.set(a, row);
      }
    }
    clear(agents).append(h('h2', { text: 'By agent in the window' }),
      h('table', { class: 'grid', id: 'agent-totals' },
        h('thead', {}, h('tr', {}, [h('th', { scope: 'col', text: 'Agent' }), h('th', { scope: 'col', class: 'num', text: 'Revisions' }), h('th', { scope: 'col', class: 'num', text: 'Conflicts + failures' })])),
        h('tbody', {}, [...totals].sort((a, b) => b[1].revisions - a[1].revisions)
          .map(([a, n]) => h('tr', { dataset: { agent: a } }, h('th', { scope: 'row', text: a }),
            h('td', { class: 'num', text: n.revisions }), h('td', { class: 'num trouble', text: n.trouble }))))));
    plots.dataset.window = t.window;
    plots.dataset.revisions = t.buckets.reduce((n, b) => n + b.revisions, 0);
    plots.dataset.pushes = t.buckets.reduce((n, b) => n + b.pushes, 0);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const t = await api(`/v1/contexts/${enc(ctx)}/trends?window=${chosen}`);
      if (!stopped) draw(t);
    } catch {
      // The banner says why.
    }
    if (!stopped) timer = setTimeout(refresh, EVERY[chosen] ?? 5000);
  }
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
