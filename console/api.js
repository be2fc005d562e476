// The one door to the node's API: every call carries the bearer token from sessionStorage, and
// a 401 anywhere stops every panel and hands control back to the sign-in form (app.js).
// Also the small DOM helpers the panels share.

const TOKEN_KEY = 'logmesh.token';

export class Unauthorized extends Error {}

let onUnauthorized = () => {};
let session = new AbortController();
const timers = new Set();

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/// Stops every poll and open stream of the current session and starts a new one.
export function stopAll() {
  for (const id of timers) clearTimeout(id);
  timers.clear();
  session.abort();
  session = new AbortController();
}

/// fetch() with the token and the session's abort signal; throws Unauthorized on 401 and an
/// Error carrying the API's message on any other failure.
export async function request(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set('Authorization', `Bearer ${token()}`);
  const response = await fetch(path, { ...options, headers, signal: options.signal || session.signal });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    onUnauthorized();
    throw new Unauthorized('the node refused the token');
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error) message = `${response.status}: ${body.error.message}`;
    } catch { /* not JSON: keep the status line */ }
    throw new Error(message);
  }
  return response;
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export function sessionSignal() {
  return session.signal;
}

/// Runs `task` now and then `ms` after each run ends, until stopAll(); a failing run shows its
/// error through `onError` and the loop goes on.
export function every(ms, task, onError = () => {}) {
  const run = async () => {
    try {
      await task();
      onError(null);
    } catch (error) {
      if (error instanceof Unauthorized || error.name === 'AbortError') return;
      onError(error);
    }
    if (!session.signal.aborted) {
      const id = setTimeout(() => { timers.delete(id); run(); }, ms);
      timers.add(id);
    }
  };
  run();
}

/// Builds an element: el('td', {class: 'num'}, '42'). Text is always set as text, never HTML.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/// A panel: <section id=...><h2>title</h2>…<p class=error></p></section>, appended to <main>.
export function panel(id, title) {
  const error = el('p', { class: 'error', role: 'alert' });
  const body = el('div', { class: 'scroll' });
  const section = el('section', { id }, el('h2', {}, title), body, error);
  document.getElementById('main').append(section);
  return { section, body, showError: (e) => { error.textContent = e ? String(e.message || e) : ''; } };
}

export function formatNumber(n) {
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: 2 });
}

export function ago(rfc3339, now = Date.now()) {
  const seconds = Math.max(0, (now - Date.parse(rfc3339)) / 1000);
  if (seconds < 90) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

export const SEVERITIES = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
export const SEVERITY_COLOURS = {
  trace: '#94a3b8', debug: '#60a5fa', info: '#22c55e', warn: '#f59e0b', error: '#ef4444', fatal: '#a21caf',
};
