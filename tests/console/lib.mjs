// Shared by the console's browser tests: launch the system Chromium through playwright-core,
// wait on conditions with deadlines, save screenshots, and fail with a screenshot of the page.

import { chromium } from 'playwright-core';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const TIMEOUT = 15000;

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/console.rs sets it)`);
  return value;
}

export async function launch() {
  const shots = env('LOGMESH_CONSOLE_SCREENSHOTS');
  mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.LOGMESH_TEST_CHROMIUM || '/usr/bin/chromium',
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ viewport: { width: 1500, height: 1100 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const problems = [];
  // Failed API calls a step provokes on purpose (a refused token, a bad query) match these.
  const expectedFailures = [/ 401 /];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // Failed requests are judged by the response handler below, which knows their URL.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on('response', (response) => {
    const line = `${response.request().method()} ${response.status()} ${response.url()}`;
    if (response.status() >= 400 && !expectedFailures.some((re) => re.test(line))) problems.push(`request failed: ${line}`);
  });
  return { browser, page, problems, expectedFailures, shot: (name) => join(shots, `${name}.png`) };
}

/// Polls `check` (async, truthy when done) until `timeout`, then throws naming `what`.
export async function until(what, check, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/// Runs the steps, printing each; on failure saves `failure.png`, prints why and exits 1.
export async function run(name, steps) {
  const session = await launch();
  rmSync(session.shot(`${name}-failure`), { force: true });
  let failed = false;
  try {
    for (const [title, step] of steps(session)) {
      console.log(`step: ${title}`);
      await step();
    }
    if (session.problems.length) throw new Error(`the page reported errors:\n${session.problems.join('\n')}`);
    console.log(`${name}: ok`);
  } catch (error) {
    failed = true;
    console.error(`${name}: FAILED: ${error.stack || error}`);
    await session.page.screenshot({ path: session.shot(`${name}-failure`), fullPage: true }).catch(() => {});
  } finally {
    await session.browser.close();
  }
  process.exit(failed ? 1 : 0);
}
