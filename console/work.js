// Asynchronous work: submit (POST /api/v1/work), follow the jobs this tab submitted (kept in
// sessionStorage) with GET /api/v1/work/{callback} every 2 s, and download a finished job's
// result through fetch() and a Blob, so the bearer token goes with it.

import { el, every, formatNumber, getJson, panel, request } from './api.js';

const JOBS_KEY = 'logmesh.work';
const MAX_JOBS = 50;
const FINAL = new Set(['worked', 'failed', 'expired']);

function loadJobs() {
  try { return JSON.parse(sessionStorage.getItem(JOBS_KEY)) || []; } catch { return []; }
}

function saveJobs(jobs) {
  sessionStorage.setItem(JOBS_KEY, JSON.stringify(jobs.slice(0, MAX_JOBS)));
}

export function mount() {
  const { body, showError } = panel('work', 'Work');
  const kind = el('select', { name: 'kind' }, ['search', 'count', 'export'].map((k) => el('option', { value: k }, k)));
  const data = el('input', { name: 'data', placeholder: 'keyword, or JSON filters: {"service":"api"}', size: 40 });
  const form = el('form', { class: 'row' }, kind, data, el('button', { type: 'submit' }, 'Submit'));
  const rows = el('tbody', { id: 'work-rows' });
  body.append(form, el('table', {}, el('thead', {}, el('tr', {},
    ['Callback', 'Kind', 'Data', 'Status', 'Items', 'Detail', ''].map((h) => el('th', {}, h)))), rows));

  const status = new Map(); // callback → last status record (or {status: 'expired'})

  async function download(job) {
    try {
      const response = await request(`/api/v1/work/${job.callback}/result`);
      const type = response.headers.get('content-type') || '';
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const link = el('a', { href: url, download: `${job.callback}.${type.includes('ndjson') ? 'ndjson' : 'json'}` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      showError(error);
    }
  }

  let shown = '';
  function render() {
    // Rebuilt only when something changed, so a Download button is not replaced under the pointer.
    const jobs = loadJobs();
    const signature = JSON.stringify(jobs.map((job) => [job.callback, status.get(job.callback)]));
    if (signature === shown) return;
    shown = signature;
    rows.replaceChildren(...jobs.map((job) => {
      const record = status.get(job.callback) || { status: job.status || 'accepted' };
      return el('tr', { 'data-callback': job.callback },
        el('td', { title: job.callback }, el('code', {}, `${job.callback.slice(0, 10)}…`)),
        el('td', {}, job.kind),
        el('td', {}, typeof job.data === 'string' ? job.data : JSON.stringify(job.data)),
        el('td', { class: 'work-status' }, record.status),
        el('td', { class: 'num' }, record.result_items ?? record.progress ?? ''),
        el('td', { class: record.error ? 'error' : 'muted' }, record.error || (record.elapsed_ms != null ? `${formatNumber(record.elapsed_ms)} ms` : '')),
        el('td', {}, record.status === 'worked' ? el('button', { type: 'button', onclick: () => download(job) }, 'Download') : ''));
    }));
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let value = data.value;
    try { value = JSON.parse(value); } catch { /* a keyword string */ }
    if (value === '' && kind.value !== 'search') value = {};
    try {
      const answer = await getJson('/api/v1/work', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ kind: kind.value, data: value }),
      });
      const jobs = loadJobs().filter((j) => j.callback !== answer.callback);
      jobs.unshift({ callback: answer.callback, kind: kind.value, data: value, status: answer.status });
      saveJobs(jobs);
      status.delete(answer.callback);
      showError(null);
      render();
    } catch (error) {
      showError(error);
    }
  });

  every(2000, async () => {
    for (const job of loadJobs()) {
      if (FINAL.has(status.get(job.callback)?.status)) continue;
      try {
        status.set(job.callback, await getJson(`/api/v1/work/${job.callback}`));
      } catch (error) {
        if (error.message.startsWith('404')) status.set(job.callback, { status: 'expired' });
        else throw error;
      }
    }
    render();
  }, showError);
}
