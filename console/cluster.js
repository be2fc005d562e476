// Members of the cluster (GET /api/v1/cluster), every 2 s. Other panels learn the member
// list through the `members` event on document.

import { ago, el, every, getJson, panel } from './api.js';

export function mount() {
  const { body, showError } = panel('cluster', 'Cluster');
  const summary = el('p', { class: 'muted' });
  const rows = el('tbody');
  body.append(summary, el('table', {},
    el('thead', {}, el('tr', {}, ['Name', 'State', 'Address', 'Version', 'Uptime', 'Last heartbeat'].map((h) => el('th', {}, h)))),
    rows));
  every(2000, async () => {
    const { members } = await getJson('/api/v1/cluster');
    members.sort((a, b) => a.name.localeCompare(b.name));
    const now = Date.now();
    summary.textContent = `${members.length} member${members.length === 1 ? '' : 's'}`;
    rows.replaceChildren(...members.map((m) => el('tr', { 'data-member': m.name },
      el('td', {}, m.name),
      el('td', { class: `state-${m.state}` }, m.state),
      el('td', {}, m.address),
      el('td', {}, m.version),
      // A member that stopped heart-beating is not known to be up at all.
      el('td', { title: m.started_at }, m.state === 'unresponsive' ? '—' : ago(m.started_at, now)),
      el('td', { title: m.last_heartbeat }, `${ago(m.last_heartbeat, now)} ago`))));
    document.dispatchEvent(new CustomEvent('members', { detail: members }));
  }, showError);
}
