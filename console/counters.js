// Counters: every stored counter (GET /metrics as JSON) and a PromQL box
// (GET /metrics/query?expression=), both refreshed every 5 s.

import { el, every, formatNumber, getJson, panel } from './api.js';

function labelText(labels) {
  const entries = Object.entries(labels || {});
  return entries.length ? `{${entries.map(([k, v]) => `${k}="${v}"`).join(', ')}}` : '';
}

export function mount() {
  const { body, showError } = panel('counters', 'Counters');
  const rows = el('tbody', { id: 'counters-rows' });
  const expression = el('input', { name: 'expression', placeholder: 'PromQL, e.g. sum by (service) (logmesh_events_total)', size: 48 });
  const result = el('tbody', { id: 'query-rows' });
  const queryError = el('p', { class: 'error', id: 'query-error' });
  const form = el('form', { class: 'row' }, expression, el('button', { type: 'submit' }, 'Query'));
  body.append(
    el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Counter'), el('th', { class: 'num' }, 'Value'))), rows),
    el('h3', {}, 'Query'), form, queryError,
    el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Series'), el('th', { class: 'num' }, 'Value'))), result));

  let query = '';
  async function runQuery() {
    if (!query) return;
    try {
      const answer = await getJson(`/metrics/query?expression=${encodeURIComponent(query)}`);
      queryError.textContent = '';
      result.replaceChildren(...answer.data.result.map((r) => el('tr', {},
        el('td', {}, labelText(r.metric) || '{}'), el('td', { class: 'num' }, formatNumber(r.value[1])))));
    } catch (error) {
      queryError.textContent = error.message;
      result.replaceChildren();
    }
  }

  form.addEventListener('submit', (event) => { event.preventDefault(); query = expression.value.trim(); runQuery(); });
  every(5000, async () => {
    const { counters } = await getJson('/metrics', { headers: { Accept: 'application/json' } });
    rows.replaceChildren(...counters.map((c) => el('tr', { 'data-counter': c.name },
      el('td', {}, `${c.name}${labelText(c.labels)}`), el('td', { class: 'num' }, formatNumber(c.value)))));
    await runQuery();
  }, showError);
}
