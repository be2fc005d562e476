// Live tail: GET /api/v1/tail read with fetch() so the bearer token goes with it (EventSource
// cannot send headers), its Server-Sent Events parsed here. The page keeps at most MAX_LINES
// events; while paused they still arrive (and the oldest fall out) but the view stays still.

import { el, panel, request, sessionSignal, SEVERITIES, Unauthorized } from './api.js';

export const MAX_LINES = 500;
const RECONNECT_MS = 2000;

/// Feeds decoded text to `onEvent({event, id, data})` per complete SSE event.
export function sseParser(onEvent) {
  let buffer = '';
  let current = { event: 'message', id: '', data: [] };
  return (text) => {
    buffer += text;
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, '');
      buffer = buffer.slice(end + 1);
      if (line === '') {
        if (current.data.length) onEvent({ event: current.event, id: current.id, data: current.data.join('\n') });
        current = { event: 'message', id: '', data: [] };
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') current.data.push(value);
        else if (field === 'event') current.event = value;
        else if (field === 'id') current.id = value;
      }
    }
  };
}

export function mount() {
  const { body, showError } = panel('tail', 'Live tail');
  const service = el('input', { name: 'service', placeholder: 'services, comma-separated' });
  const boxes = SEVERITIES.map((s) => el('label', {}, el('input', { type: 'checkbox', name: 'severity', value: s }), s));
  const pause = el('button', { type: 'button', id: 'tail-pause' }, 'Pause');
  const clear = el('button', { type: 'button' }, 'Clear');
  const status = el('span', { class: 'muted', id: 'tail-status' });
  const log = el('div', { class: 'log', id: 'tail-log', 'aria-live': 'off' });
  const form = el('form', { class: 'row' }, service, ...boxes, el('button', { type: 'submit' }, 'Apply'), pause, clear, status);
  body.append(form, log);

  const lines = [];
  let paused = false;
  let missed = 0;
  let connection = null;

  function line(e) {
    return el('div', { class: 'line', 'data-id': e.id },
      `${e.ts} `, el('span', { class: `sev-${e.severity}` }, e.severity.padEnd(5)), ` ${e.service} ${e.node}: ${e.message}`);
  }

  function render() {
    log.replaceChildren(...lines.map(line));
    log.scrollTop = log.scrollHeight;
  }

  function push(e) {
    lines.push(e);
    if (lines.length > MAX_LINES) lines.shift();
    if (paused) {
      missed += 1;
      status.textContent = `paused: ${missed} new (keeping the last ${MAX_LINES})`;
      return;
    }
    log.append(line(e));
    while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  }

  async function connect() {
    connection?.abort();
    const mine = new AbortController();
    connection = mine;
    const params = new URLSearchParams();
    if (service.value.trim()) params.set('service', service.value.split(',').map((s) => s.trim()).filter(Boolean).join(','));
    const severities = boxes.map((b) => b.firstChild).filter((b) => b.checked).map((b) => b.value);
    if (severities.length) params.set('severity', severities.join(','));
    const signal = AbortSignal.any([mine.signal, sessionSignal()]);
    try {
      const response = await request(`/api/v1/tail?${params}`, { signal, headers: { Accept: 'text/event-stream' } });
      showError(null);
      if (!paused) status.textContent = 'streaming';
      const feed = sseParser((event) => {
        if (event.event === 'log') push(JSON.parse(event.data));
        else if (event.event === 'dropped') {
          const dropped = JSON.parse(event.data);
          if (dropped.disconnected) showError(new Error(`the node dropped this tail: ${dropped.reason}; reconnecting`));
          else status.textContent = `streaming (${dropped.missed} events were dropped: this view fell behind)`;
        }
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed(value);
      }
    } catch (error) {
      if (error instanceof Unauthorized || signal.aborted) return;
      showError(error);
    }
    if (!signal.aborted) setTimeout(() => { if (!signal.aborted) connect(); }, RECONNECT_MS);
  }

  form.addEventListener('submit', (event) => { event.preventDefault(); connect(); });
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (paused) {
      missed = 0;
      status.textContent = 'paused';
    } else {
      status.textContent = 'streaming';
      render();
    }
  });
  clear.addEventListener('click', () => { lines.length = 0; render(); });
  connect();
}
