// Ingest per node and in total: GET /api/v1/node/stats?hostname=* every 2 s (the node asks
// every member server-side), turned into events/s from consecutive cumulative counts, over the
// last 5 minutes; plus queue depth, the writers' batch sizes and flush durations, and what each
// syslog listener saw (shown once a node has one).

import { el, every, formatNumber, getJson, panel } from './api.js';
import { colour, lineChart } from './charts.js';

const WINDOW_MS = 5 * 60 * 1000;
const POLL_MS = 2000;
const TITLES = {
  Queue: 'accepted but not yet written by every consumer (cluster: stream messages), and its bytes',
  'Mean batch': 'events per batch written, since the node started',
  'Mean flush': 'time to write one batch, since the node started',
};
const SYSLOG_COLUMNS = [
  ['connections', 'Connections', 'connections accepted (TCP, RELP)'],
  ['messages', 'Messages', 'messages read'],
  ['bytes', 'Bytes', 'bytes read'],
  ['unparsed', 'Unparsed', 'messages that were not syslog, kept raw with service syslog'],
  ['dropped', 'Dropped', 'UDP datagrams the queue could not take'],
  ['refused', 'Refused', 'peers outside --syslog-allow, connections past the cap'],
  ['broken', 'Broken', 'connections closed for their framing'],
];

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

export function mount() {
  const { body, showError } = panel('ingest', 'Ingest');
  const chart = el('div', { id: 'ingest-chart' });
  const rows = el('tbody');
  body.append(chart, el('table', {},
    el('thead', {}, el('tr', {}, ['Node', 'Accepted', 'Events/s', 'Refused', 'Queue', 'Writer', 'Batches', 'Mean batch', 'Mean flush']
      .map((h, i) => el('th', { class: i && i !== 5 ? 'num' : undefined, title: TITLES[h] }, h)))),
    rows));
  const syslogRows = el('tbody');
  const syslog = el('div', { id: 'ingest-syslog', hidden: true },
    el('h3', {}, 'Syslog listeners'),
    el('table', {},
      el('thead', {}, el('tr', {}, [['', 'Node'], ['', 'Listener'], ...SYSLOG_COLUMNS]
        .map(([key, h, title]) => el('th', { class: key ? 'num' : undefined, title }, h)))),
      syslogRows));
  body.append(syslog);

  const last = new Map(); // node → previous snapshot
  const rates = new Map(); // node → [[t, events/s]]
  const total = [];

  every(POLL_MS, async () => {
    const { nodes } = await getJson('/api/v1/node/stats?hostname=*');
    const now = Date.now();
    let sum = 0;
    const lines = [];
    for (const stats of nodes.sort((a, b) => a.node.localeCompare(b.node))) {
      if (stats.error) {
        lines.push(el('tr', { 'data-node': stats.node }, el('td', {}, stats.node), el('td', { colspan: 8, class: 'error' }, stats.error)));
        continue;
      }
      const previous = last.get(stats.node);
      let rate = 0;
      if (previous && stats.at_ms > previous.at_ms && stats.events_accepted >= previous.events_accepted) {
        rate = ((stats.events_accepted - previous.events_accepted) * 1000) / (stats.at_ms - previous.at_ms);
      }
      last.set(stats.node, stats);
      if (previous) {
        if (!rates.has(stats.node)) rates.set(stats.node, []);
        rates.get(stats.node).push([now, rate]);
        sum += rate;
      }
      const sinks = stats.sinks.length ? stats.sinks : [{ sink: '–', batches: 0, events: 0, write_seconds: 0 }];
      sinks.forEach((s, i) => {
        const head = i === 0 ? [
          el('td', { rowspan: sinks.length }, stats.node),
          el('td', { rowspan: sinks.length, class: 'num', 'data-field': 'accepted' }, formatNumber(stats.events_accepted)),
          el('td', { rowspan: sinks.length, class: 'num', 'data-field': 'rate' }, formatNumber(rate)),
          el('td', { rowspan: sinks.length, class: 'num' }, formatNumber(stats.events_refused)),
          el('td', { rowspan: sinks.length, class: 'num', 'data-field': 'queue' },
            `${formatNumber(stats.queue_depth_events)} / ${bytes(stats.queue_depth_bytes)}`),
        ] : [];
        lines.push(el('tr', { 'data-node': stats.node, 'data-sink': s.sink }, head,
          el('td', {}, s.sink),
          el('td', { class: 'num' }, formatNumber(s.batches)),
          el('td', { class: 'num', 'data-field': 'mean-batch' }, s.batches ? formatNumber(s.events / s.batches) : '–'),
          el('td', { class: 'num' }, s.batches ? `${formatNumber((s.write_seconds * 1000) / s.batches)} ms` : '–')));
      });
    }
    rows.replaceChildren(...lines);
    const listeners = nodes.flatMap((stats) => (stats.syslog || []).map((counts) => el('tr',
      { 'data-node': stats.node, 'data-listener': counts.listener },
      el('td', {}, stats.node),
      el('td', {}, counts.listener),
      SYSLOG_COLUMNS.map(([key]) => el('td', { class: 'num', 'data-field': key },
        key === 'bytes' ? bytes(counts[key] || 0) : formatNumber(counts[key] || 0))))));
    syslogRows.replaceChildren(...listeners);
    syslog.hidden = listeners.length === 0;
    if (last.size && [...rates.values()].some((r) => r.length)) total.push([now, sum]);
    for (const series of [total, ...rates.values()]) {
      while (series.length && now - series[0][0] > WINDOW_MS) series.shift();
    }
    // A node gone for longer than the window leaves the chart.
    for (const [name, points] of rates) {
      if (!points.length) {
        rates.delete(name);
        last.delete(name);
      }
    }
    const series = [...rates.entries()].sort().map(([name, points], i) => ({ name, colour: colour(i + 1), points }));
    series.unshift({ name: 'total', colour: colour(0), points: total, width: 2.5 });
    lineChart(chart, series, { windowMs: WINDOW_MS, now, label: 'events accepted per second', format: (v) => formatNumber(v) });
  }, showError);
}
