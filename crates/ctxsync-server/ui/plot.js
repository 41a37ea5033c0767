// A small SVG line plot: time on x, one polyline and one circle per point for each
// series (circles carry data-series, data-count and a tooltip), a legend and axes.

import { h } from './dom.js';

const W = 640;
const H = 200;
const PAD = { left: 48, right: 12, top: 12, bottom: 24 };

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}

/**
 * series: [{name, color, points: [{x, y, count?}]}]; x in ms between from and to.
 * Returns an <figure> with the SVG.
 */
export function plot({ id, title, unit, from, to, series }) {
  const all = series.flatMap((s) => s.points.map((p) => p.y));
  const ymax = niceMax(Math.max(0, ...all));
  const sx = (x) => PAD.left + ((x - from) / (to - from)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - (y / ymax) * (H - PAD.top - PAD.bottom);
  const svg = h('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, class: 'plot', id });
  for (const f of [0, 0.5, 1]) {
    const y = sy(ymax * f);
    svg.append(h('line', { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: 'grid-line' }),
      h('text', { x: PAD.left - 6, y: y + 4, class: 'tick', 'text-anchor': 'end', text: `${+(ymax * f).toPrecision(3)}` }));
  }
  const tfmt = (ms) => new Date(ms).toLocaleString([], { hour12: false, month: 'numeric', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  svg.append(h('text', { x: PAD.left, y: H - 6, class: 'tick', text: tfmt(from) }),
    h('text', { x: W - PAD.right, y: H - 6, class: 'tick', 'text-anchor': 'end', text: tfmt(to) }));
  for (const s of series) {
    const g = h('g', { class: 'series', dataset: { series: s.name } });
    if (s.points.length > 1) {
      g.append(h('polyline', { points: s.points.map((p) => `${sx(p.x)},${sy(p.y)}`).join(' '), stroke: s.color, fill: 'none', 'stroke-width': 1.5 }));
    }
    for (const p of s.points) {
      g.append(h('circle', { cx: sx(p.x), cy: sy(p.y), r: 3, fill: s.color, class: 'point',
        dataset: { series: s.name, count: p.count ?? p.y, value: p.y } },
      h('title', { text: `${s.name}: ${+p.y.toPrecision(4)} ${unit} at ${tfmt(p.x)}` })));
    }
    svg.append(g);
  }
  const legend = h('ul', { class: 'legend' }, series.map((s) => h('li', {},
    h('svg', { viewBox: '0 0 10 10', class: 'swatch', 'aria-hidden': 'true' }, h('rect', { width: 10, height: 10, fill: s.color })),
    ` ${s.name} (${s.points.length} points)`)));
  return h('figure', { class: 'plot-box' }, h('figcaption', { text: `${title} (${unit})` }), svg, legend);
}
