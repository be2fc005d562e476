// Start-up: ask the node who it is; on 401 show only the sign-in form, otherwise mount every
// panel. A 401 later (token revoked, node restarted with another token) stops all panels and
// brings the form back, so no data stays on screen without a valid token.

import { getJson, setToken, stopAll, token, whenUnauthorized, Unauthorized } from './api.js';
import * as cluster from './cluster.js';
import * as ingest from './ingest.js';
import * as counts from './counts.js';
import * as tail from './tail.js';
import * as search from './search.js';
import * as files from './files.js';
import * as counters from './counters.js';
import * as work from './work.js';
import * as storage from './storage.js';

const PANELS = [cluster, ingest, counts, tail, search, files, counters, work, storage];

const main = document.getElementById('main');
const login = document.getElementById('login');
const loginError = document.getElementById('login-error');
const nav = document.getElementById('nav');
const fatal = document.getElementById('fatal');

function showLogin() {
  stopAll();
  main.replaceChildren();
  main.hidden = true;
  nav.hidden = true;
  document.getElementById('node-name').textContent = '';
  login.hidden = false;
  document.getElementById('token').focus();
}

whenUnauthorized(showLogin);

/// Mounts the panels if the API accepts us; false if it asked for a (valid) token.
async function start() {
  let whoami;
  try {
    whoami = await getJson('/api/v1/cluster');
  } catch (error) {
    if (error instanceof Unauthorized) return false;
    fatal.textContent = `The node did not answer (${error.message}); trying again in 3 s.`;
    await new Promise((resolve) => setTimeout(resolve, 3000));
    return start();
  }
  fatal.textContent = '';
  login.hidden = true;
  loginError.textContent = '';
  document.getElementById('node-name').textContent = `node ${whoami.node}`;
  main.hidden = false;
  nav.hidden = false;
  for (const module of PANELS) module.mount({ node: whoami.node });
  return true;
}

login.addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = document.getElementById('token');
  setToken(input.value);
  loginError.textContent = '';
  if (!(await start())) loginError.textContent = 'The node refused this token.';
  else input.value = '';
});

start().then((ok) => {
  if (!ok) {
    showLogin();
    if (token()) loginError.textContent = 'The node refused the stored token.';
  }
});
