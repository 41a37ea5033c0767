// Context: the live feed of revisions (over the event stream), the document tree with
// the last writer of each field, a diff between two revisions and a history search.

import { api, follow } from './api.js';
import { clear, enc, fmtTime, h, throttle } from './dom.js';
import { diff, renderDiff, renderTree, Writers } from './tree.js';

/** Rows kept in the feed; older ones leave the page (the history search finds them). */
const FEED_ROWS = 300;
const LEVELS = ['critical', 'checkpoint', 'periodic', 'session'];

/** What the feed received, for tests and the benchmark (window.ctxsyncFeed). */
function freshStats() {
  return { received: 0, lastRevision: null, gaps: 0, frames: 0, firstLiveAt: null, mountedAt: performance.now() };
}

function pathsOf(entry) {
  const paths = [...new Set((entry.edits ?? []).map((e) => e.path))];
  return paths.length > 3 ? `${paths.slice(0, 3).join(', ')} +${paths.length - 3}` : paths.join(', ');
}

export function feedRow(entry) {
  const critical = entry.level === 'critical';
  return h('li', { class: `rev ${critical ? 'critical' : ''}`, dataset: { revision: entry.revision, level: entry.level } },
    h('span', { class: 'rev-no', text: `r${entry.revision}` }),
    h('time', { text: fmtTime(entry.timestamp_ms) }),
    h('span', { class: 'agent', text: entry.agent }),
    h('span', { class: `level ${entry.level}`, text: critical ? '⚠ critical' : entry.level }),
    h('span', { class: 'summary', text: entry.summary || '(no summary)' }),
    h('span', { class: 'paths mono', text: pathsOf(entry) }));
}

export function mount(root, app) {
  const ctx = app.context;
  const base = `/v1/contexts/${enc(ctx)}`;
  const stats = freshStats();
  window.ctxsyncFeed = stats;
  const state = h('span', { class: 'badge', id: 'stream-state', text: 'connecting' });
  const headline = h('span', { id: 'context-revision' });
  const feed = h('ol', { class: 'feed', id: 'feed', 'aria-live': 'off' });
  const tree = h('div', { class: 'tree', id: 'tree' });
  const diffOut = h('div', { id: 'diff-out' });
  const from = h('input', { type: 'number', min: 0, id: 'diff-from', 'aria-label': 'From revision' });
  const to = h('input', { type: 'number', min: 0, id: 'diff-to', 'aria-label': 'To revision' });
  const agent = h('input', { id: 'search-agent', placeholder: 'agent', 'aria-label': 'Agent' });
  const level = h('select', { id: 'search-level', 'aria-label': 'Level' },
    h('option', { value: '', text: 'any level' }), LEVELS.map((l) => h('option', { value: l, text: l })));
  const path = h('input', { id: 'search-path', placeholder: 'path contains', 'aria-label': 'Path' });
  const results = h('div', { id: 'search-results' });

  root.append(
    h('h1', {}, `Context ${ctx} `, headline, ' ', state),
    h('div', { class: 'columns' },
      h('section', { class: 'panel', 'aria-labelledby': 'feed-h' },
        h('h2', { id: 'feed-h', text: 'Live feed' }), feed),
      h('section', { class: 'panel', 'aria-labelledby': 'tree-h' },
        h('h2', { id: 'tree-h', text: 'Document (last writer of each field)' }), tree)),
    h('section', { class: 'panel', 'aria-labelledby': 'diff-h' },
      h('h2', { id: 'diff-h', text: 'Diff between revisions' }),
      h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); showDiff(); } },
        h('label', {}, 'From ', from), h('label', {}, 'To ', to),
        h('button', { type: 'submit', id: 'diff-go', text: 'Compare' })),
      diffOut),
    h('section', { class: 'panel', 'aria-labelledby': 'search-h' },
      h('h2', { id: 'search-h', text: 'History search' }),
      h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); search(); } },
        agent, level, path, h('button', { type: 'submit', id: 'search-go', text: 'Search' })),
      results));

  const writers = new Writers();
  const open = new Set();
  let doc = null;
  let shown = 0;
  let pending = [];
  let frame = 0;
  let stream = null;
  let stopped = false;

  function flush() {
    frame = 0;
    stats.frames += 1;
    const batch = pending.slice(-FEED_ROWS);
    pending = [];
    const fragment = new DocumentFragment();
    for (let i = batch.length - 1; i >= 0; i -= 1) fragment.append(feedRow(batch[i]));
    feed.prepend(fragment);
    while (feed.childElementCount > FEED_ROWS) feed.lastElementChild.remove();
  }

  function show(entries) {
    for (const entry of entries) {
      if (entry.revision <= shown) continue;
      if (shown && entry.revision !== shown + 1) stats.gaps += 1;
      shown = entry.revision;
      writers.add(entry);
      pending.push(entry);
    }
    stats.lastRevision = shown;
    headline.textContent = `r${shown}`;
    if (pending.length && !frame) frame = requestAnimationFrame(flush);
  }

  const reloadTree = throttle(async () => {
    if (stopped) return;
    try {
      const pulled = await api(base);
      doc = pulled.document;
      clear(tree).append(renderTree(doc, writers, open).node);
      tree.dataset.revision = pulled.revision;
    } catch {
      // The banner says why.
    }
  }, 1000);

  async function start() {
    let pulled;
    let history;
    try {
      pulled = await api(base);
      history = await api(`${base}/history?last=1000`);
    } catch {
      if (!stopped) setTimeout(start, 2000);
      return;
    }
    if (stopped) return;
    doc = pulled.document;
    // The top-level sections start unfolded.
    if (doc && typeof doc === 'object') {
      for (const key of Object.keys(doc)) open.add(`/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`);
    }
    const entries = history.entries.slice().reverse();
    for (const entry of entries) writers.add(entry);
    // The newest rows go to the feed; the stream resumes after the pulled revision.
    const recent = entries.filter((e) => e.revision <= pulled.revision).slice(-50);
    shown = recent.length ? recent[0].revision - 1 : pulled.revision;
    show(recent);
    shown = pulled.revision;
    headline.textContent = `r${shown}`;
    clear(tree).append(renderTree(doc, writers, open).node);
    tree.dataset.revision = pulled.revision;
    to.value = pulled.revision;
    from.value = Math.max(0, pulled.revision - 1);
    stream = follow(ctx, pulled.revision, {
      onEvents(batch) {
        const revisions = [];
        for (const event of batch) {
          if (event.event === 'revision') {
            stats.received += 1;
            revisions.push(event.data);
          } else if (event.event === 'resync') {
            // Revisions below the horizon are gone: start again from the new head.
            shown = event.data.revision;
            reloadTree();
          }
        }
        if (revisions.length) {
          show(revisions);
          reloadTree();
        }
      },
      onState(s) {
        state.textContent = s.state;
        state.dataset.state = s.state;
        if (s.state === 'live' && stats.firstLiveAt === null) stats.firstLiveAt = performance.now();
        app.streamState(s);
      },
    });
  }

  async function showDiff() {
    clear(diffOut).append(h('p', { class: 'muted', text: 'Loading…' }));
    try {
      const [a, b] = await Promise.all([api(`${base}?at=${Number(from.value)}`), api(`${base}?at=${Number(to.value)}`)]);
      clear(diffOut).append(h('p', { text: `r${a.revision} → r${b.revision}` }), renderDiff(diff(a.document, b.document)));
    } catch (e) {
      clear(diffOut).append(h('p', { class: 'error', text: e.message }));
    }
  }

  async function search() {
    const query = new URLSearchParams({ last: '500' });
    if (agent.value.trim()) query.set('agent', agent.value.trim());
    if (level.value) query.set('level', level.value);
    clear(results).append(h('p', { class: 'muted', text: 'Searching…' }));
    try {
      const found = await api(`${base}/history?${query}`);
      const needle = path.value.trim();
      const hits = needle ? found.entries.filter((e) => e.edits.some((x) => x.path.includes(needle))) : found.entries;
      clear(results).append(h('p', { text: `${hits.length} revision(s)` }),
        h('ol', { class: 'feed', id: 'search-list' }, hits.map(feedRow)));
    } catch (e) {
      clear(results).append(h('p', { class: 'error', text: e.message }));
    }
  }

  start();
  return () => {
    stopped = true;
    stream?.close();
    if (frame) cancelAnimationFrame(frame);
  };
}
