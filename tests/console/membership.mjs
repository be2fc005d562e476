// Membership changes show in the console of a real cluster (tests/console.rs): node-0 is up
// when this starts. The script prints `waiting: join node-1` and tests/console.rs starts
// node-1; then `waiting: leave node-1` and tests/console.rs stops it (SIGTERM); then
// `waiting: join node-2` and `waiting: kill node-2`, and tests/console.rs kills node-2 with -9.

import { env, run, until } from './lib.mjs';

const url = env('LOGMESH_CONSOLE_URL');
const row = (page, name) => page.locator(`#cluster tr[data-member="${name}"]`);

await run('membership', ({ page, shot }) => [
  ['node-0 alone', async () => {
    await page.goto(url);
    await row(page, 'node-0').locator('td', { hasText: 'serving' }).waitFor();
    await page.locator('#cluster p', { hasText: '1 member' }).waitFor();
  }],
  ['node-1 joins and shows within seconds, with its own ingest row', async () => {
    console.log('waiting: join node-1');
    await row(page, 'node-1').locator('td', { hasText: 'serving' }).waitFor({ timeout: 30000 });
    await page.locator('#cluster p', { hasText: '2 members' }).waitFor();
    // Per-node ingest: events sent to each node straight, to the address the console shows.
    const address = (name) => row(page, name).locator('td').nth(2).innerText();
    for (const [name, count] of [['node-0', 20], ['node-1', 50]]) {
      const events = Array.from({ length: count }, (_, i) => JSON.stringify({ service: `via-${name}`, message: `event ${i}` }));
      const response = await fetch(`${await address(name)}/api/v1/logs`, { method: 'POST', body: events.join('\n') });
      if (response.status !== 202) throw new Error(`ingest on ${name}: ${response.status}`);
    }
    for (const [name, count] of [['node-0', '20'], ['node-1', '50']]) {
      const accepted = page.locator(`#ingest tr[data-node="${name}"] [data-field="accepted"]`);
      await until(`${count} accepted on ${name}`, async () => (await accepted.innerText()) === count);
      // Attached, not visible: a node whose events all came before its first two polls has a
      // flat line at 0, which has no height and so counts as hidden.
      await page.locator(`#ingest path[data-series="${name}"]`).waitFor({ state: 'attached' });
    }
    const hosts = await page.locator('#files select[name="hostname"] option').allInnerTexts();
    if (!hosts.includes('node-1')) throw new Error(`the files panel offers ${hosts}`);
    await page.locator('#cluster').screenshot({ path: shot('11-cluster-joined') });
    await page.locator('#ingest').screenshot({ path: shot('12-ingest-two-nodes') });
  }],
  ['node-1 leaves and disappears', async () => {
    console.log('waiting: leave node-1');
    await until('node-1 gone', async () => (await row(page, 'node-1').count()) === 0, 30000);
    await page.locator('#cluster p', { hasText: '1 member' }).waitFor();
    await page.locator('#cluster').screenshot({ path: shot('13-cluster-left') });
  }],
  ['a node killed with -9 turns unresponsive, then disappears', async () => {
    console.log('waiting: join node-2');
    await row(page, 'node-2').locator('td', { hasText: 'serving' }).waitFor({ timeout: 30000 });
    console.log('waiting: kill node-2');
    // No more heartbeats: unresponsive after two missed ones (10 s at the default 15 s member
    // TTL), gone once the TTL has passed since the last one.
    await row(page, 'node-2').locator('td.state-unresponsive').waitFor({ timeout: 30000 });
    const uptime = await row(page, 'node-2').locator('td').nth(4).innerText();
    if (uptime !== '—') throw new Error(`an unresponsive member shows an uptime: ${uptime}`);
    await page.locator('#cluster').screenshot({ path: shot('14-cluster-unresponsive') });
    await until('node-2 gone', async () => (await row(page, 'node-2').count()) === 0, 30000);
    await page.locator('#cluster p', { hasText: '1 member' }).waitFor();
  }],
]);
