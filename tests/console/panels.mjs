// Every panel of the console against one real node with --api-token, which tests/console.rs
// started and filled: 3 `checkout` errors containing LOGMESH_CONSOLE_WORD, 2 `api` infos, 1 `db`
// warn, 1 `billing` info sent to its syslog listener LOGMESH_CONSOLE_SYSLOG, the counter
// orders_total{shop="eu"} = 5, and app.log (3 lines with "needle") under a log root. This script sends more events while it watches the live panels.

import { readFile } from 'node:fs/promises';
import { env, run, until } from './lib.mjs';

const url = env('LOGMESH_CONSOLE_URL');
const token = env('LOGMESH_CONSOLE_TOKEN');
const node = env('LOGMESH_CONSOLE_NODE');
const word = env('LOGMESH_CONSOLE_WORD');
const syslogListener = env('LOGMESH_CONSOLE_SYSLOG');

async function ingest(events) {
  const response = await fetch(`${url}/api/v1/logs`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-ndjson' },
    body: events.map((e) => JSON.stringify(e)).join('\n'),
  });
  if (response.status !== 202) throw new Error(`ingest answered ${response.status}: ${await response.text()}`);
}

const tailText = (page) => page.locator('#tail-log').innerText();

await run('panels', ({ page, shot, expectedFailures }) => [
  ['without a token the page shows the prompt and no data', async () => {
    await page.goto(url);
    await page.locator('#login').waitFor({ state: 'visible' });
    if (!(await page.locator('#main').isHidden())) throw new Error('#main is visible without a token');
    if (await page.locator('#main > *').count()) throw new Error('#main holds panels without a token');
    if ((await page.locator('body').innerText()).includes(node)) throw new Error('the node name shows without a token');
    await page.screenshot({ path: shot('01-token-prompt') });
  }],
  ['a wrong token keeps the prompt', async () => {
    await page.fill('#token', 'not-the-token');
    await page.click('#login button');
    await page.locator('#login-error', { hasText: 'refused' }).waitFor();
    if (!(await page.locator('#login').isVisible()) || await page.locator('#main > *').count()) {
      throw new Error('a wrong token let the page show data');
    }
    await page.screenshot({ path: shot('02-wrong-token') });
  }],
  ['the right token opens the console', async () => {
    await page.fill('#token', token);
    await page.click('#login button');
    await page.locator('#cluster').waitFor({ state: 'visible' });
    if (await page.locator('#login').isVisible()) throw new Error('the prompt stayed');
  }],
  ['cluster: this node, serving', async () => {
    const row = page.locator(`#cluster tr[data-member="${node}"]`);
    await row.locator('td', { hasText: 'serving' }).waitFor();
    await until('a version and an address', async () => (await row.innerText()).includes('http://127.0.0.1:'));
    await page.locator('#cluster').screenshot({ path: shot('03-cluster') });
  }],
  ['counts: the service_severity table and the stacked chart', async () => {
    const cell = page.locator('#counts tr[data-service="checkout"][data-severity="error"] td.num');
    await until('checkout/error = 3', async () => (await cell.innerText()) === '3');
    await page.locator('#counts rect[data-category="checkout"][data-stack="error"]').waitFor();
    await page.locator('#counts rect[data-category="api"][data-stack="info"]').waitFor();
    // Sorted by count, descending: checkout (3) first. Then by service, ascending: api first.
    const firstService = () => page.locator('#counts tbody tr').first().getAttribute('data-service');
    await until('checkout first by count', async () => (await firstService()) === 'checkout');
    await page.click('#counts th[data-sort="service"]');
    await until('api first by service', async () => (await firstService()) === 'api');
    await page.click('#counts th[data-sort="service"]');
    await until('db first by service, descending', async () => (await firstService()) === 'db');
    await page.locator('#counts').screenshot({ path: shot('04-counts') });
  }],
  ['live tail: new events appear', async () => {
    await page.locator('#tail-status', { hasText: 'streaming' }).waitFor();
    await ingest([{ service: 'web', severity: 'warn', message: 'tail probe one' }]);
    await until('the probe in the tail', async () => (await tailText(page)).includes('tail probe one'));
  }],
  ['live tail: paused, nothing moves; resumed, the missed events show', async () => {
    await page.click('#tail-pause');
    await ingest([{ service: 'web', severity: 'info', message: 'sent while paused' }]);
    await page.locator('#tail-status', { hasText: 'paused: 1 new' }).waitFor();
    if ((await tailText(page)).includes('sent while paused')) throw new Error('a paused tail moved');
    await page.click('#tail-pause');
    await until('the missed event after resume', async () => (await tailText(page)).includes('sent while paused'));
  }],
  ['live tail: the page keeps at most 500 lines', async () => {
    const burst = Array.from({ length: 600 }, (_, i) => ({ service: 'burst', message: `burst ${i}` }));
    await ingest(burst);
    await until('the last burst event', async () => (await tailText(page)).includes('burst 599'));
    const lines = await page.locator('#tail-log .line').count();
    if (lines !== 500) throw new Error(`the tail holds ${lines} lines, not 500`);
  }],
  ['live tail: service and severity filters', async () => {
    await page.fill('#tail input[name="service"]', 'filtered');
    await page.check('#tail input[name="severity"][value="error"]');
    await page.click('#tail button[type="submit"]');
    await page.click('#tail button:text("Clear")');
    await page.locator('#tail-status', { hasText: 'streaming' }).waitFor();
    // Reconnecting takes a moment: send until the matching event shows, in order, so anything
    // the filter should have let through before it would show first.
    await until('the filtered event', async () => {
      await ingest([
        { service: 'other', severity: 'error', message: 'wrong service' },
        { service: 'filtered', severity: 'info', message: 'wrong severity' },
        { service: 'filtered', severity: 'error', message: 'right one' },
      ]);
      return (await tailText(page)).includes('right one');
    });
    const text = await tailText(page);
    if (text.includes('wrong service') || text.includes('wrong severity')) throw new Error(`the filter let through: ${text}`);
    await page.locator('#tail').screenshot({ path: shot('05-tail') });
  }],
  ['ingest: accepted counts, a rate, batches and the chart', async () => {
    const accepted = page.locator(`#ingest tr[data-node="${node}"] [data-field="accepted"]`);
    await until('over 600 accepted', async () => Number((await accepted.innerText()).replace(/,/g, '')) > 600);
    await until('a non-zero rate', async () => {
      await ingest([{ service: 'rate', message: 'keeps the rate up' }]);
      return Number((await page.locator(`#ingest [data-field="rate"]`).first().innerText()).replace(/,/g, '')) > 0;
    });
    await page.locator(`#ingest tr[data-node="${node}"][data-sink="store"] [data-field="mean-batch"]`).waitFor();
    await page.locator('#ingest path[data-series="total"]').waitFor();
    await page.locator(`#ingest path[data-series="${node}"]`).waitFor();
    const listener = page.locator(`#ingest-syslog tr[data-node="${node}"][data-listener="${syslogListener}"]`);
    await until('the syslog listener counted 1 message on 1 connection', async () =>
      (await listener.locator('[data-field="messages"]').innerText()) === '1'
      && (await listener.locator('[data-field="connections"]').innerText()) === '1');
    if (await page.locator('#ingest-syslog').isHidden()) throw new Error('the syslog table is hidden');
    await page.locator('#ingest').screenshot({ path: shot('06-ingest') });
  }],
  ['storage: stored events, sizes and the free disk per node', async () => {
    const row = page.locator(`#storage tr[data-node="${node}"]`);
    await until('stored events counted', async () =>
      Number((await row.locator('[data-field="rows"]').innerText()).replace(/,/g, '')) >= 7);
    for (const field of ['store-bytes', 'event-log-bytes', 'free']) {
      const text = await row.locator(`[data-field="${field}"]`).innerText();
      if (!/\d (B|KiB|MiB|GiB)$/.test(text)) throw new Error(`${field}: ${text}`);
    }
    const oldest = await row.locator('[data-field="oldest"]').innerText();
    if (!oldest.endsWith(' ago')) throw new Error(`oldest: ${oldest}`);
    await page.locator('#storage').screenshot({ path: shot('13-storage') });
  }],
  ['search: filters and pages', async () => {
    await page.fill('#search input[name="q"]', word);
    await page.fill('#search input[name="service"]', 'checkout');
    await page.selectOption('#search select[name="severity"]', 'warn');
    await page.fill('#search input[name="limit"]', '2');
    await page.click('#search button[type="submit"]');
    await page.locator('#search-info', { hasText: 'page 1, 2 events' }).waitFor();
    await page.click('#search-next');
    await page.locator('#search-info', { hasText: 'page 2, 1 event (last page)' }).waitFor();
    const text = await page.locator('#search tbody').innerText();
    if (!text.includes(word) || !text.includes('checkout')) throw new Error(`page 2: ${text}`);
    await page.locator('#search').screenshot({ path: shot('07-search') });
  }],
  ['files: the last n lines with a keyword, from a chosen host', async () => {
    await until('app.log in the list', async () => (await page.locator('#files select[name="filename"] option').allInnerTexts()).includes('app.log'));
    await page.selectOption('#files select[name="hostname"]', node);
    await page.selectOption('#files select[name="filename"]', 'app.log');
    await page.fill('#files input[name="keyword"]', 'needle');
    await page.fill('#files input[name="n"]', '2');
    await page.click('#files button[type="submit"]');
    await page.locator('#files-info', { hasText: '2 lines' }).waitFor();
    const text = await page.locator('#files-out').innerText();
    if (!text.startsWith('needle 3') || !text.includes('needle 2') || text.includes('needle 1') || text.includes('hay')) {
      throw new Error(`files shows: ${text}`);
    }
    await page.locator('#files').screenshot({ path: shot('08-files') });
  }],
  ['counters: the table and a PromQL query', async () => {
    await page.locator('#counters tr[data-counter="orders_total"]', { hasText: '5' }).waitFor();
    await page.fill('#counters input[name="expression"]', 'sum by (severity) (logmesh_events_total{service="checkout"})');
    await page.click('#counters button[type="submit"]');
    await page.locator('#query-rows tr', { hasText: 'severity="error"' }).waitFor();
    expectedFailures.push(/GET 400 .*\/metrics\/query\?expression=rate/);
    await page.fill('#counters input[name="expression"]', 'rate(orders_total[5m])');
    await page.click('#counters button[type="submit"]');
    await page.locator('#query-error', { hasText: '400' }).waitFor();
    await page.fill('#counters input[name="expression"]', 'sum(orders_total)');
    await page.click('#counters button[type="submit"]');
    await page.locator('#query-rows tr', { hasText: '5' }).waitFor();
    await page.locator('#counters').screenshot({ path: shot('09-counters') });
  }],
  ['work: submit, follow the status, download the result', async () => {
    await page.selectOption('#work select[name="kind"]', 'search');
    await page.fill('#work input[name="data"]', word);
    await page.click('#work button[type="submit"]');
    const row = page.locator('#work-rows tr').first();
    await row.locator('.work-status', { hasText: 'worked' }).waitFor();
    const [download] = await Promise.all([page.waitForEvent('download'), row.locator('button', { hasText: 'Download' }).click()]);
    const result = JSON.parse(await readFile(await download.path(), 'utf8'));
    if (result.events.length !== 3 || !result.events.every((e) => e.message.includes(word))) {
      throw new Error(`the downloaded result: ${JSON.stringify(result)}`);
    }
    await page.locator('#work').screenshot({ path: shot('10-work') });
  }],
  ['the whole page', async () => {
    await page.screenshot({ path: shot('00-console'), fullPage: true });
  }],
  ['a token the node stops accepting clears every panel and brings the prompt back', async () => {
    await page.evaluate(() => sessionStorage.setItem('logmesh.token', 'revoked'));
    await page.locator('#login').waitFor({ state: 'visible' });
    if (await page.locator('#main > *').count()) throw new Error('panels stayed after a 401');
    if ((await page.locator('body').innerText()).includes(word)) throw new Error('data stayed after a 401');
  }],
]);
