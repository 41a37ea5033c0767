// Conflicts: open (deferred) conflicts with both values side by side, settled from the
// page (keep mine = apply the stored change, keep theirs = discard it), and the
// hottest conflicting paths.

import { api, follow } from './api.js';
import { brief, clear, enc, fmtAgo, h, throttle } from './dom.js';

export function mount(root, app) {
  const ctx = app.context;
  const base = `/v1/contexts/${enc(ctx)}`;
  const list = h('div', { id: 'conflict-list' });
  const hot = h('ol', { id: 'hot-paths', class: 'plain' });
  const outcome = h('p', { id: 'resolve-outcome', role: 'status' });
  root.append(h('h1', { text: `Open conflicts of ${ctx}` }), outcome, list,
    h('section', { class: 'panel' }, h('h2', { text: 'Hottest conflicting paths (today)' }), hot));
  let stopped = false;
  let timer = null;

  async function resolve(id, prefer, buttons) {
    for (const b of buttons) b.disabled = true;
    try {
      const answer = await api(`${base}/conflicts/${id}/resolve`, { method: 'POST', body: { prefer } });
      const revision = answer.push?.revision;
      outcome.textContent = prefer === 'mine'
        ? `Conflict #${id} settled: the stored change applied${revision ? ` as revision ${revision}` : ''}.`
        : `Conflict #${id} settled: the current value kept.`;
      outcome.className = 'good';
    } catch (e) {
      outcome.textContent = `Conflict #${id} not settled: ${e.message}`;
      outcome.className = 'error';
      for (const b of buttons) b.disabled = false;
    }
    refresh();
  }

  function card(stored, now) {
    const c = stored.conflict;
    const mine = h('button', { type: 'button', class: 'mine', text: 'Keep mine (apply the change)' });
    const theirs = h('button', { type: 'button', class: 'theirs', text: 'Keep theirs (current value)' });
    const buttons = [mine, theirs];
    if (!app.canWrite) {
      for (const b of buttons) {
        b.disabled = true;
        b.title = 'This token only reads (viewer)';
      }
    }
    mine.addEventListener('click', () => resolve(stored.id, 'mine', buttons));
    theirs.addEventListener('click', () => resolve(stored.id, 'theirs', buttons));
    return h('article', { class: 'conflict panel', dataset: { id: stored.id } },
      h('h2', {}, `#${stored.id} `, h('span', { class: 'mono', text: c.path })),
      h('p', { class: 'muted', text: `${c.reason.replaceAll('_', ' ')} · by ${stored.agent} at r${stored.revision} · ${fmtAgo(stored.created_ms, now)}${c.modified_by ? ` · current value by ${c.modified_by} (r${c.modified_at_revision})` : ''}` }),
      h('div', { class: 'sides' },
        h('div', { class: 'side mine-side' }, h('h3', { text: `Mine (${stored.agent})` }), h('pre', { text: brief(c.yours ?? c.change?.to ?? c.change?.value, 2000) })),
        h('div', { class: 'side theirs-side' }, h('h3', { text: `Theirs (current${c.modified_by ? `, ${c.modified_by}` : ''})` }), h('pre', { text: brief(c.current, 2000) }))),
      h('div', { class: 'actions' }, buttons));
  }

  async function refresh() {
    clearTimeout(timer);
    // Deferred conflicts make no revision, so the stream does not announce them: poll too.
    if (!stopped) timer = setTimeout(refresh, 3000);
    try {
      const [open, metrics] = await Promise.all([api(`${base}/conflicts`), api(`${base}/metrics`)]);
      if (stopped) return;
      const now = Date.now();
      clear(list).append(...(open.conflicts.length
        ? open.conflicts.map((c) => card(c, now))
        : [h('p', { class: 'muted', id: 'no-conflicts', text: 'No open conflicts.' })]));
      clear(hot).append(...(metrics.hottest_conflict_paths.length
        ? metrics.hottest_conflict_paths.map(([p, n]) => h('li', {}, h('span', { class: 'mono', text: p }), ` × ${n}`))
        : [h('li', { class: 'muted', text: 'none' })]));
    } catch {
      // The banner says why.
    }
  }
  const soon = throttle(refresh, 1000);
  let stream = null;
  api(`${base}/head`).then((head) => {
    if (!stopped) stream = follow(ctx, head.revision, { onEvents: soon, onState: app.streamState });
  }).catch(() => {});
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    stream?.close();
  };
}
