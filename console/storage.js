// What each node's data takes (GET /api/v1/node/stats?hostname=*, its `storage`), every 5 s:
// events stored within the retention period, the store's size (the shared database's, in a
// cluster), the oldest event, the event log files and the data directory's free disk.

import { ago, el, every, formatNumber, getJson, panel } from './api.js';

const POLL_MS = 5000;

function bytes(n) {
  if (n === undefined) return '–';
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1073741824) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(2)} GiB`;
}

export function mount() {
  const { body, showError } = panel('storage', 'Storage');
  const rows = el('tbody');
  body.append(el('table', {},
    el('thead', {}, el('tr', {}, [
      ['Node'], ['Stored events', 'within the retention period'],
      ['Store size', 'the stored events with their indexes; in a cluster, the shared database'],
      ['Oldest event', 'the oldest event still stored'],
      ['Event log', "this node's event log files"], ['Free disk', "on this node's data directory"],
    ].map(([h, title], i) => el('th', { class: i ? 'num' : undefined, title }, h)))),
    rows));
  every(POLL_MS, async () => {
    const { nodes } = await getJson('/api/v1/node/stats?hostname=*');
    const now = Date.now();
    rows.replaceChildren(...nodes.sort((a, b) => a.node.localeCompare(b.node)).map((stats) => {
      if (stats.error || !stats.storage) {
        return el('tr', { 'data-node': stats.node }, el('td', {}, stats.node),
          el('td', { colspan: 5, class: 'error' }, stats.error || 'no storage figures'));
      }
      const s = stats.storage;
      const oldest = s.oldest_event_ms === undefined ? '–' : `${ago(new Date(s.oldest_event_ms).toISOString(), now)} ago`;
      return el('tr', { 'data-node': stats.node, title: s.error },
        el('td', {}, stats.node),
        el('td', { class: 'num', 'data-field': 'rows' }, s.store_rows === undefined ? '–' : formatNumber(s.store_rows)),
        el('td', { class: 'num', 'data-field': 'store-bytes' }, bytes(s.store_bytes)),
        el('td', { class: 'num', 'data-field': 'oldest' }, oldest),
        el('td', { class: 'num', 'data-field': 'event-log-bytes' }, bytes(s.event_log_bytes)),
        el('td', { class: 'num', 'data-field': 'free' }, bytes(s.disk_free_bytes)));
    }));
  }, showError);
}
