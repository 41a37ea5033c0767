// Agent sync (serve --watch-agents): the watcher's generations with their changes, the
// last run (when, what it rendered), validation failures, hand-edit conflicts and the
// reference-integrity findings of the check made after each run. Live: a long poll of
// GET /v1/agent-sync answers as soon as a run or a check ends.

import { api } from './api.js';
import { clear, fmtAgo, fmtTime, h } from './dom.js';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function list(items, empty, render = (x) => x) {
  return items.length
    ? h('ul', { class: 'plain' }, items.map((x) => h('li', { class: 'mono', text: render(x) })))
    : h('p', { class: 'muted', text: empty });
}

export function mount(root) {
  const status = h('p', { id: 'agentsync-status', role: 'status' });
  const last = h('section', { class: 'panel', id: 'agentsync-last' });
  const gens = h('tbody');
  const problems = h('section', { class: 'panel', id: 'agentsync-problems' });
  const conflicts = h('section', { class: 'panel', id: 'agentsync-conflicts' });
  const refs = h('section', { class: 'panel', id: 'agentsync-refs' });
  root.append(h('h1', { text: 'Agent sync' }), status, last,
    h('section', { class: 'panel' }, h('h2', { text: 'Generations' }),
      h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'generations' },
        h('thead', {}, h('tr', {}, ['Generation', 'Run', 'When', 'Trigger', 'Added', 'Updated', 'Removed', 'Files']
          .map((t) => h('th', { scope: 'col', text: t })))), gens))),
    conflicts, problems, refs);
  let stopped = false;
  let controller = null;
  const runs = [];
  let check = null;

  function draw(answer) {
    const now = Date.now();
    status.textContent = `Watching ${answer.root}; ${answer.runs_total} run(s) since ${fmtTime(answer.started_ms)}.`;
    const run = runs[runs.length - 1];
    const r = run?.report;
    clear(last).append(h('h2', { text: 'Last run' }), !run
      ? h('p', { class: 'muted', text: 'No run yet.' })
      : h('div', {},
        h('p', { dataset: { run: run.run }, id: 'last-run',
          text: `Run ${run.run} at ${fmtTime(run.at_ms)} (${fmtAgo(run.at_ms, now)})${r ? `, ${r.duration_ms.toFixed(0)} ms, ${r.agents} agents, generation ${r.generation ?? 'unchanged'}` : ''}${run.trigger.length ? ` · triggered by ${run.trigger.join(', ')}` : ''}` }),
        run.error ? h('p', { class: 'bad', text: `Failed: ${run.error}` }) : null,
        r ? h('div', {}, h('h3', { text: `Rendered (${r.rendered.length})` }), list(r.rendered, 'nothing (no change)'),
          h('h3', { text: `Written (${r.written.length}) / deleted (${r.deleted.length})` }),
          list([...r.written, ...r.deleted.map((d) => `deleted ${d}`)], 'no file')) : null));
    clear(gens);
    for (const g of runs.filter((x) => x.report?.generation != null).reverse()) {
      const rep = g.report;
      gens.append(h('tr', { dataset: { generation: rep.generation } },
        h('th', { scope: 'row', class: 'num', text: rep.generation }),
        h('td', { class: 'num', text: g.run }),
        h('td', { text: fmtTime(g.at_ms) }),
        h('td', { class: 'mono', text: g.trigger.join(', ') || 'initial' }),
        h('td', { text: rep.added.join(', ') }),
        h('td', { text: rep.updated.join(', ') }),
        h('td', { text: rep.removed.join(', ') }),
        h('td', { class: 'num', text: `${rep.written.length} written, ${rep.deleted.length} deleted` })));
    }
    if (!gens.firstChild) gens.append(h('tr', {}, h('td', { colspan: 8, class: 'muted', text: 'No generation yet.' })));
    // The newest run's view of conflicts and validation is the current one.
    const latest = r ?? {};
    clear(conflicts).append(h('h2', { text: 'Hand-edit conflicts (last run)' }),
      list(latest.conflicts ?? [], 'none', (c) => `${c.path} (${c.agent}): ${c.reason}, ${c.resolution.replaceAll('_', ' ')}`));
    conflicts.querySelector('ul')?.setAttribute('id', 'agentsync-conflict-list');
    clear(problems).append(h('h2', { text: 'Validation failures (last run)' }),
      list(latest.validation_errors ?? [], 'none'));
    clear(refs).append(h('h2', { text: 'Reference integrity (agents check)' }));
    if (!check) refs.append(h('p', { class: 'muted', text: 'Not checked yet.' }));
    else if (check.error) refs.append(h('p', { class: 'bad', text: `The check failed: ${check.error}` }));
    else {
      const c = check.report;
      const finding = (f) => `${f.file}:${f.line} ${f.reference} — ${f.message}`;
      refs.append(
        h('p', { id: 'refs-summary', class: c.broken_files.length + c.broken_anchors.length ? 'bad' : 'good',
          text: `${c.files_checked} files, ${c.references} references: ${c.broken_files.length} broken files, ${c.broken_anchors.length} broken anchors, ${c.via_rename.length} via renames, ${c.unreferenced.length} unreferenced, ${c.cycles.length} cycles · checked ${fmtTime(check.at_ms)}` }),
        h('details', {}, h('summary', { text: 'Broken file references' }), list(c.broken_files, 'none', finding)),
        h('details', {}, h('summary', { text: 'Broken anchors' }), list(c.broken_anchors, 'none', finding)),
        h('details', {}, h('summary', { text: 'Through renames' }), list(c.via_rename, 'none', finding)),
        h('details', {}, h('summary', { text: 'Unreferenced files' }), list(c.unreferenced, 'none')));
    }
  }

  (async () => {
    let version = null;
    let after = 0;
    while (!stopped) {
      controller = new AbortController();
      const wait = version === null ? '' : `&version=${version}&wait=20`;
      let answer;
      try {
        answer = await api(`/v1/agent-sync?after=${after}${wait}`, { signal: controller.signal });
      } catch (e) {
        if (stopped) return;
        await sleep(1000);
        continue;
      }
      if (stopped) return;
      if (!answer.enabled) {
        clear(root).append(h('h1', { text: 'Agent sync' }),
          h('p', { id: 'agentsync-off', text: 'This server does not watch an agent library (start it with ctxsync serve --watch-agents).' }));
        return;
      }
      runs.push(...answer.runs);
      if (runs.length > 500) runs.splice(0, runs.length - 500);
      after = answer.runs_total;
      check = answer.check;
      version = answer.version;
      draw(answer);
    }
  })();
  return () => {
    stopped = true;
    controller?.abort();
  };
}
