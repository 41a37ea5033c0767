// The document as a collapsible tree (<details>, so it folds with the keyboard too)
// with the last writer of each field, and the structural diff of two documents.

import { brief, h } from './dom.js';

const escapePart = (key) => String(key).replaceAll('~', '~0').replaceAll('/', '~1');

/** Who wrote what last: JSON pointer -> {agent, revision}, fed with op-log entries. */
export class Writers {
  constructor() {
    this.byPointer = new Map();
  }

  add(entry) {
    for (const edit of entry.edits ?? []) {
      const seen = this.byPointer.get(edit.pointer);
      if (!seen || seen.revision <= entry.revision) {
        this.byPointer.set(edit.pointer, { agent: entry.agent, revision: entry.revision });
      }
    }
  }

  /** The newest write of `pointer` itself or of one of its ancestors. */
  own(pointer) {
    let best = null;
    let p = pointer;
    for (;;) {
      const w = this.byPointer.get(p);
      if (w && (!best || w.revision > best.revision)) best = w;
      if (!p) return best;
      p = p.slice(0, p.lastIndexOf('/'));
    }
  }
}

const newer = (a, b) => (!a ? b : !b ? a : a.revision >= b.revision ? a : b);

/** Renders `value` at `pointer`; `open` is the set of expanded pointers (kept across renders). */
export function renderTree(value, writers, open, pointer = '', key = 'document') {
  if (value === null || typeof value !== 'object') {
    const writer = writers.own(pointer);
    return {
      node: h('div', { class: 'leaf', dataset: { pointer } },
        h('span', { class: 'key', text: `${key}: ` }),
        h('span', { class: `val ${value === null ? 'null' : typeof value}`, text: JSON.stringify(value) }),
        writer ? h('span', { class: 'writer', title: `revision ${writer.revision}`, text: `${writer.agent} r${writer.revision}` }) : null),
      writer,
    };
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const shown = entries.slice(0, 500);
  let writer = writers.own(pointer);
  const children = shown.map(([k, v]) => {
    const child = renderTree(v, writers, open, `${pointer}/${escapePart(k)}`, k);
    writer = newer(writer, child.writer);
    return child.node;
  });
  if (entries.length > shown.length) children.push(h('div', { class: 'muted', text: `… ${entries.length - shown.length} more` }));
  const details = h('details', { dataset: { pointer } },
    h('summary', {},
      h('span', { class: 'key', text: String(key) }),
      h('span', { class: 'muted', text: Array.isArray(value) ? ` [${entries.length}]` : ` {${entries.length}}` }),
      writer ? h('span', { class: 'writer', title: `revision ${writer.revision}`, text: `${writer.agent} r${writer.revision}` }) : null),
    h('div', { class: 'children' }, children));
  details.open = pointer === '' || open.has(pointer);
  details.addEventListener('toggle', (event) => {
    event.stopPropagation();
    if (details.open) open.add(pointer);
    else open.delete(pointer);
  });
  return { node: details, writer };
}

/** The changes from `a` to `b`: [{pointer, before, after}] (undefined = absent). */
export function diff(a, b, pointer = '', out = []) {
  const container = (v) => v !== null && typeof v === 'object';
  if (container(a) && container(b) && Array.isArray(a) === Array.isArray(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) diff(a[k], b[k], `${pointer}/${escapePart(k)}`, out);
  } else if (JSON.stringify(a) !== JSON.stringify(b)) {
    out.push({ pointer: pointer || '/', before: a, after: b });
  }
  return out;
}

export function renderDiff(changes) {
  if (!changes.length) return h('p', { class: 'muted', text: 'No difference.' });
  return h('table', { class: 'grid diff', id: 'diff-table' },
    h('thead', {}, h('tr', {}, ['Path', 'Before', 'After'].map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, changes.map((c) => h('tr', { class: c.before === undefined ? 'added' : c.after === undefined ? 'removed' : 'changed' },
      h('td', { class: 'mono', text: c.pointer }),
      h('td', { class: 'mono before', text: brief(c.before, 200) }),
      h('td', { class: 'mono after', text: brief(c.after, 200) })))));
}
