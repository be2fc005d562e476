// Two hand-written SVG charts: a time-series line chart and a stacked bar chart. Each call
// redraws the whole chart into its container; the data are small (a few hundred points).

const SVG = 'http://www.w3.org/2000/svg';
const PALETTE = ['#2563eb', '#16a34a', '#d97706', '#dc2626', '#7c3aed', '#0891b2', '#be185d', '#4d7c0f'];

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function colour(index) {
  return PALETTE[index % PALETTE.length];
}

/// A y-axis top that is a round number at or above `max`.
function niceMax(max) {
  if (!(max > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= max) return step * magnitude;
  return 10 * magnitude;
}

/// A y-axis top for counts: four equal steps of a whole round number (4, 8, 12, 800, …).
function countMax(max) {
  const raw = max / 4;
  if (!(raw > 1)) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const step of [1, 2, 2.5, 3, 5, 10]) {
    if (step * magnitude >= raw && Number.isInteger(step * magnitude)) return 4 * step * magnitude;
  }
  return 40 * magnitude;
}

function frame(width, height, label) {
  return svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label });
}

function yAxis(root, { left, top, plotH, right, max, format }) {
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    root.append(svg('line', { x1: left, x2: right, y1: y, y2: y, stroke: '#e5e7eb' }));
    root.append(svg('text', { x: left - 4, y: y + 3, 'text-anchor': 'end' }, format((max * i) / 4)));
  }
}

function legend(container, entries) {
  const box = document.createElement('div');
  box.className = 'legend';
  for (const { name, colour: c } of entries) {
    const item = document.createElement('span');
    const swatch = document.createElement('i');
    swatch.style.background = c;
    item.append(swatch, name);
    box.append(item);
  }
  container.append(box);
}

/// series: [{name, colour, points: [[epochMs, value], …]}]; x spans the last `windowMs`.
export function lineChart(container, series, { windowMs, now = Date.now(), label = 'chart', format = String }) {
  const width = 560, height = 180, left = 44, right = width - 8, top = 8, bottom = height - 18;
  const plotW = right - left, plotH = bottom - top;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1]))));
  const root = frame(width, height, label);
  yAxis(root, { left, top, plotH, right, max, format });
  const x = (t) => left + plotW * (1 - (now - t) / windowMs);
  const y = (v) => top + plotH - (plotH * v) / max;
  for (let minutes = 0; minutes * 60000 <= windowMs; minutes++) {
    root.append(svg('text', { x: x(now - minutes * 60000), y: height - 4, 'text-anchor': minutes ? 'middle' : 'end' },
      minutes === 0 ? 'now' : `-${minutes}m`));
  }
  for (const s of series) {
    const points = s.points.filter((p) => now - p[0] <= windowMs);
    if (points.length === 0) continue;
    const d = points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    root.append(svg('path', { d, fill: 'none', stroke: s.colour, 'stroke-width': s.width || 1.5, 'data-series': s.name }));
  }
  container.replaceChildren(root);
  legend(container, series);
}

/// One bar per category, stacked by `stacks` (in order): values[stack][category].
export function stackedBars(container, categories, stacks, values, colours, { label = 'chart' } = {}) {
  const width = 560, left = 44, right = width - 8, top = 8, barArea = 150, height = top + barArea + 40;
  const bottom = top + barArea;
  const totals = categories.map((_, i) => stacks.reduce((sum, s) => sum + (values[s]?.[i] || 0), 0));
  const max = countMax(Math.max(0, ...totals));
  const root = frame(width, height, label);
  yAxis(root, { left, top, plotH: barArea, right, max, format: (v) => Math.round(v).toLocaleString('en-US') });
  const slot = (right - left) / Math.max(1, categories.length);
  const barW = Math.min(48, slot * 0.7);
  categories.forEach((category, i) => {
    const x = left + slot * i + (slot - barW) / 2;
    let base = bottom;
    for (const s of stacks) {
      const v = values[s]?.[i] || 0;
      if (!v) continue;
      const h = (barArea * v) / max;
      const rect = svg('rect', { x, y: base - h, width: barW, height: h, fill: colours[s], 'data-stack': s, 'data-category': category });
      rect.append(svg('title', {}, `${category} ${s}: ${v}`));
      root.append(rect);
      base -= h;
    }
    const name = category.length > 14 ? `${category.slice(0, 13)}…` : category;
    root.append(svg('text', { x: x + barW / 2, y: bottom + 12, 'text-anchor': 'middle' }, name));
  });
  container.replaceChildren(root);
  legend(container, stacks.map((s) => ({ name: s, colour: colours[s] })));
}
