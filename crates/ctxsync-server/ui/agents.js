// Agents: presence (active or away), lag in revisions, last seen, claims held and
// critical revisions not yet seen; refreshed on every new revision and every 5 s.

import { api, follow } from './api.js';
import { clear, enc, fmtAgo, h, throttle } from './dom.js';

export function mount(root, app) {
  const ctx = app.context;
  const body = h('tbody');
  root.append(h('h1', { text: `Agents of ${ctx}` }),
    h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'agents-table' },
      h('thead', {}, h('tr', {}, ['Agent', 'Presence', 'Lag', 'Last seen', 'Claims', 'Unseen critical']
        .map((t) => h('th', { scope: 'col', text: t })))),
      body)));
  let stopped = false;
  let timer = null;

  function draw(list) {
    clear(body);
    for (const a of list.agents) {
      body.append(h('tr', { dataset: { agent: a.agent } },
        h('th', { scope: 'row', text: a.agent }),
        h('td', { class: a.away ? 'muted' : 'good', text: a.away ? 'away' : 'active' }),
        h('td', { class: 'num', text: a.lag }),
        h('td', { text: `${fmtAgo(a.last_seen_ms, list.now_ms)} (saw r${a.seen_revision})` }),
        h('td', {}, a.claims.length
          ? h('ul', { class: 'plain' }, a.claims.map((c) => h('li', { class: 'mono',
            text: `${c.path} (until ${new Date(c.expires_at_ms).toLocaleTimeString([], { hour12: false })})` })))
          : h('span', { class: 'muted', text: 'none' })),
        h('td', { class: a.unseen_critical.length ? 'bad' : '' , text: a.unseen_critical.length
          ? a.unseen_critical.map((r) => `r${r}`).join(', ') : '0' })));
    }
    if (!list.agents.length) body.append(h('tr', {}, h('td', { colspan: 6, text: 'No agent has used this context yet.' })));
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      draw(await api(`/v1/contexts/${enc(ctx)}/agents`));
    } catch {
      // The banner says why.
    }
    if (!stopped) timer = setTimeout(refresh, 5000);
  }
  const soon = throttle(refresh, 1000);
  let stream = null;
  api(`/v1/contexts/${enc(ctx)}/head`).then((head) => {
    if (stopped) return;
    stream = follow(ctx, head.revision, { onEvents: soon, onState: app.streamState });
  }).catch(() => {});
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    stream?.close();
  };
}
