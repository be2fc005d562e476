// Stored events (GET /api/v1/logs/search): keywords, service, minimum severity, time range,
// page size; pages follow next_cursor, and the cursors seen are kept to step back.

import { el, getJson, panel, SEVERITIES } from './api.js';

export function mount() {
  const { body, showError } = panel('search', 'Search stored events');
  const field = (name, placeholder, attributes = {}) => el('input', { name, placeholder, ...attributes });
  const q = field('q', 'keywords');
  const service = field('service', 'service');
  const severity = el('select', { name: 'severity' }, el('option', { value: '' }, 'any severity'),
    SEVERITIES.map((s) => el('option', { value: s }, `≥ ${s}`)));
  const since = field('since', 'since (RFC 3339 or epoch ms)');
  const until = field('until', 'until');
  const limit = field('limit', 'per page', { type: 'number', min: 1, max: 1000, value: 20 });
  const previous = el('button', { type: 'button', disabled: true }, '← Newer');
  const next = el('button', { type: 'button', disabled: true, id: 'search-next' }, 'Older →');
  const info = el('span', { class: 'muted', id: 'search-info' });
  const rows = el('tbody');
  const form = el('form', { class: 'row' }, q, service, severity, since, until, limit, el('button', { type: 'submit' }, 'Search'));
  body.append(form, el('div', { class: 'row' }, previous, next, info), el('table', {},
    el('thead', {}, el('tr', {}, ['Time', 'Severity', 'Service', 'Node', 'Message'].map((h) => el('th', {}, h)))), rows));

  // cursors[i] is the cursor of page i (null for the first); the last entry is the next page's.
  let cursors = [null];
  let page = 0;

  async function load() {
    const params = new URLSearchParams();
    for (const input of [q, service, severity, since, until, limit]) {
      if (input.value.trim()) params.set(input.name, input.value.trim());
    }
    if (cursors[page]) params.set('cursor', cursors[page]);
    try {
      const result = await getJson(`/api/v1/logs/search?${params}`);
      showError(null);
      cursors = cursors.slice(0, page + 1);
      if (result.next_cursor) cursors.push(result.next_cursor);
      rows.replaceChildren(...result.events.map((e) => el('tr', { 'data-id': e.id },
        el('td', {}, e.timestamp), el('td', { class: `sev-${e.severity}` }, e.severity), el('td', {}, e.service),
        el('td', {}, e.node), el('td', { title: e.attributes ? JSON.stringify(e.attributes) : undefined }, e.message))));
      info.textContent = `page ${page + 1}, ${result.events.length} event${result.events.length === 1 ? '' : 's'}${result.next_cursor ? '' : ' (last page)'}`;
      previous.disabled = page === 0;
      next.disabled = !result.next_cursor;
    } catch (error) {
      showError(error);
    }
  }

  form.addEventListener('submit', (event) => { event.preventDefault(); cursors = [null]; page = 0; load(); });
  next.addEventListener('click', () => { page += 1; load(); });
  previous.addEventListener('click', () => { page = Math.max(0, page - 1); load(); });
  load();
}
