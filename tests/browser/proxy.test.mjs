// A plugin's UI calls its own backend through the core's proxy, in Chromium: the template panel
// shows what its backend answered (`ctx.sdk.http`), including who the backend was told is
// calling; once the plugin is disabled its calls get the core's 503 and the panel goes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startCore, startHello, browser, artifacts } from './harness.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

const panel = (page, plugin) => page.locator(`#panels article[data-plugin="${plugin}"]`);

test('the hello panel shows its backend\'s greeting and caller; disabled, its calls get 503', async () => {
  const core = await startCore();
  cleanups.push(() => core.stop());
  const { ctx, page } = await browser();
  cleanups.push(() => ctx.close());
  const hello = await startHello(core);
  cleanups.push(() => hello.kill());
  const calls = [];
  page.on('response', (res) => {
    if (res.url().includes('/api/proxy/')) calls.push({ url: new URL(res.url()).pathname, status: res.status() });
  });

  await page.goto(core.url + '/');
  // The backend's own words, fetched by the panel through the core.
  await panel(page, 'hello').locator('.hello-greeting', { hasText: 'Hello, world' }).waitFor({ timeout: 10000 });
  assert.equal(
    await panel(page, 'hello').locator('.hello-caller').textContent(),
    'The backend says you are anonymous (tenant default).',
  );
  await page.screenshot({ path: path.join(artifacts, 'proxy-hello.png') });
  assert.deepEqual(
    calls.map((c) => `${c.status} ${c.url}`).sort(),
    ['200 /api/proxy/hello/v1/caller', '200 /api/proxy/hello/v1/greeting'],
  );

  // The kill switch: the panel goes, and a call the panel would make now is answered by the
  // core with 503 plugin_not_ready, as the SDK's HttpError would carry it.
  await core.api('POST', '/api/plugins/hello/disable', { reason: 'browser test' });
  await panel(page, 'hello').waitFor({ state: 'detached', timeout: 2000 });
  const after = await page.evaluate(async () => {
    const res = await fetch('/api/proxy/hello/v1/greeting', { headers: { accept: 'application/json' } });
    return { status: res.status, body: await res.json() };
  });
  assert.equal(after.status, 503);
  assert.equal(after.body.error.code, 'plugin_not_ready');

  // Enabled again: the panel is back and its backend answers.
  await core.api('POST', '/api/plugins/hello/enable');
  await panel(page, 'hello').locator('.hello-greeting', { hasText: 'Hello, world' }).waitFor({ timeout: 10000 });
});
