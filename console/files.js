// Files on hosts: pick a member (or every one, `*`), one of the files it serves
// (GET /logs/files?hostname=), a keyword and n; GET /logs streams the last n matching lines.

import { el, getJson, panel, request, sessionSignal } from './api.js';

const MAX_BYTES = 1 << 20;

export function mount({ node }) {
  const { body, showError } = panel('files', 'Files on hosts');
  const host = el('select', { name: 'hostname' }, el('option', { value: node }, node));
  const file = el('select', { name: 'filename' });
  const keyword = el('input', { name: 'keyword', placeholder: 'keyword' });
  const n = el('input', { name: 'n', type: 'number', min: 1, max: 100000, value: 50 });
  const info = el('span', { class: 'muted', id: 'files-info' });
  const out = el('pre', { id: 'files-out' });
  const form = el('form', { class: 'row' }, host, file, keyword, n, el('button', { type: 'submit' }, 'Show'), info);
  body.append(form, out);

  document.addEventListener('members', ({ detail: members }) => {
    const chosen = host.value;
    const names = ['*', ...members.map((m) => m.name)];
    if (names.join() === [...host.options].map((o) => o.value).join()) return;
    host.replaceChildren(...names.map((name) => el('option', { value: name }, name === '*' ? '* (every member)' : name)));
    host.value = names.includes(chosen) ? chosen : node;
  }, { signal: sessionSignal() });

  async function listFiles() {
    try {
      const answer = await getJson(`/logs/files?hostname=${encodeURIComponent(host.value)}`);
      const names = new Set();
      for (const one of answer.nodes || [answer]) for (const f of one.files) names.add(f.name);
      const chosen = file.value;
      file.replaceChildren(...[...names].sort().map((name) => el('option', { value: name }, name)));
      if (names.has(chosen)) file.value = chosen;
      showError(null);
    } catch (error) {
      showError(error);
    }
  }

  host.addEventListener('change', listFiles);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const params = new URLSearchParams({ hostname: host.value, filename: file.value, n: n.value || '10' });
    if (keyword.value) params.set('keyword', keyword.value);
    info.textContent = 'reading…';
    try {
      const text = await (await request(`/logs?${params}`)).text();
      const shown = text.length > MAX_BYTES ? text.slice(-MAX_BYTES) : text;
      out.textContent = shown;
      const count = shown ? shown.replace(/\n$/, '').split('\n').length : 0;
      info.textContent = `${count} line${count === 1 ? '' : 's'}, newest first`;
      showError(null);
    } catch (error) {
      info.textContent = '';
      showError(error);
    }
  });
  listFiles();
}
