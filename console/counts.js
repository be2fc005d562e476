// The service_severity table (GET /api/v1/logs/stats) every 3 s: a table sortable by any
// column, and a bar per service stacked by severity.

import { el, every, formatNumber, getJson, panel, SEVERITIES, SEVERITY_COLOURS } from './api.js';
import { stackedBars } from './charts.js';

const MAX_BARS = 12;

export function mount() {
  const { body, showError } = panel('counts', 'Counts by service and severity');
  const total = el('p', { class: 'muted' });
  const chart = el('div', { id: 'counts-chart' });
  const rows = el('tbody');
  const columns = [['service', 'Service'], ['severity', 'Severity'], ['count', 'Count']];
  let sort = { key: 'count', descending: true };
  let data = [];
  const headers = columns.map(([key, label]) => el('th', {
    class: `sortable${key === 'count' ? ' num' : ''}`,
    'data-sort': key,
    onclick: () => {
      sort = { key, descending: sort.key === key ? !sort.descending : key === 'count' };
      render();
    },
  }, label));
  body.append(total, chart, el('table', {}, el('thead', {}, el('tr', {}, headers)), rows));

  function render() {
    const rank = (row) => (sort.key === 'severity' ? SEVERITIES.indexOf(row.severity) : row[sort.key]);
    const sorted = [...data].sort((a, b) => {
      const [x, y] = [rank(a), rank(b)];
      const order = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
      return (sort.descending ? -order : order) || a.service.localeCompare(b.service);
    });
    headers.forEach((th, i) => {
      const [key, label] = columns[i];
      th.textContent = key === sort.key ? `${label} ${sort.descending ? '▼' : '▲'}` : label;
    });
    rows.replaceChildren(...sorted.map((row) => el('tr', { 'data-service': row.service, 'data-severity': row.severity },
      el('td', {}, row.service), el('td', {}, row.severity), el('td', { class: 'num' }, formatNumber(row.count)))));

    const byService = new Map();
    for (const row of data) byService.set(row.service, (byService.get(row.service) || 0) + row.count);
    const services = [...byService.entries()].sort((a, b) => b[1] - a[1]).slice(0, MAX_BARS).map(([s]) => s);
    const values = {};
    for (const severity of SEVERITIES) {
      values[severity] = services.map((service) => data.find((r) => r.service === service && r.severity === severity)?.count || 0);
    }
    stackedBars(chart, services, SEVERITIES, values, SEVERITY_COLOURS, { label: 'stored events by service and severity' });
  }

  every(3000, async () => {
    const stats = await getJson('/api/v1/logs/stats');
    data = stats.rows;
    total.textContent = `${formatNumber(stats.total)} events stored`;
    render();
  }, showError);
}
