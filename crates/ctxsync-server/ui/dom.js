// Small DOM helpers shared by every page: element building and formatting.

/** Builds an element: h('a', {href: '#', class: 'x', onclick: f}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const svg = ['svg', 'g', 'line', 'polyline', 'circle', 'text', 'rect', 'path', 'title'].includes(tag);
  const node = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function fmtAgo(ms, now = Date.now()) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

export function fmtMs(v) {
  return v === null || v === undefined ? '–' : `${Number(v).toFixed(v < 10 ? 2 : 0)} ms`;
}

/** Short JSON for a table cell. */
export function brief(value, max = 120) {
  if (value === undefined) return '(absent)';
  const text = JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Runs `fn` at most once per `ms`, the last call winning. */
export function throttle(fn, ms) {
  let timer = null;
  let due = false;
  return () => {
    due = true;
    if (timer) return;
    timer = setTimeout(function fire() {
      timer = null;
      if (!due) return;
      due = false;
      fn();
      timer = setTimeout(fire, ms);
    }, 0);
  };
}

export const enc = encodeURIComponent;
