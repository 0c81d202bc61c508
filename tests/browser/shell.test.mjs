// The reference shell in Chromium, against a real core and real plugin services.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { startCore, startHello, startFake, browser, waitFor, artifacts, root, copyTemplateUi, buildUi } from './harness.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

async function setup(extraConfig) {
  const core = await startCore(extraConfig);
  cleanups.push(() => core.stop());
  const { ctx, page } = await browser();
  cleanups.push(() => ctx.close());
  return { core, ctx, page };
}

const panel = (page, plugin) => page.locator(`#panels article[data-plugin="${plugin}"]`);
const errorCards = (page) => page.locator('#panels article.error-card');

/** The plugin's state and conditions, for an assertion's message. */
async function coreView(core, name) {
  const v = await core.api('GET', `/api/plugins/${name}`);
  return JSON.stringify({ state: v.state, servingVersion: v.servingVersion, conditions: (v.conditions ?? []).map((c) => `${c.type}=${c.status} ${c.reason}: ${c.message}`) });
}

/** Waits for `text` in the plugin's panel; on timeout the error names what the core says. */
async function seePanelText(page, core, plugin, text, timeout) {
  try {
    await panel(page, plugin).getByText(text).waitFor({ timeout });
  } catch (e) {
    const cards = await errorCards(page).allTextContents();
    throw new Error(`"${text}" not shown within ${timeout} ms; error cards: ${JSON.stringify(cards)}; core: ${await coreView(core, plugin)}`, { cause: e });
  }
}

/** The shell's reports to the core, as the page sent them. */
function recordReports(page) {
  const reports = [];
  page.on('request', (req) => {
    if (req.url().endsWith('/api/shell/reports') && req.method() === 'POST') reports.push(JSON.parse(req.postData()));
  });
  return reports;
}

test('the hello panel shows, its route navigates, the kill switch hides it live', async () => {
  const { core, page } = await setup();
  const hello = await startHello(core);
  cleanups.push(() => hello.kill());
  await page.goto(core.url + '/');
  await panel(page, 'hello').getByText('Hello from the hello plugin').waitFor({ timeout: 10000 });
  assert.equal(await panel(page, 'hello').locator('h2').textContent(), 'Hello');
  await page.screenshot({ path: path.join(artifacts, 'shell-hello.png') });

  await page.locator('#routes a', { hasText: '/hello' }).click();
  await page.locator('#page').getByText('Hello page').waitFor({ timeout: 5000 });
  assert.match(page.url(), /#\/hello$/);

  // Disable through the admin API: gone without a reload, within 1 s.
  const started = Date.now();
  const res = await core.api('POST', '/api/plugins/hello/disable', { reason: 'browser test' });
  assert.equal(res.state, 'Disabled');
  await panel(page, 'hello').waitFor({ state: 'detached', timeout: 1000 });
  assert.ok(Date.now() - started < 1000);
  assert.equal(await page.locator('#routes a').count(), 0, 'its route is gone too');

  // Enable: it returns, still without a reload.
  await core.api('POST', '/api/plugins/hello/enable');
  await panel(page, 'hello').getByText('Hello from the hello plugin').waitFor({ timeout: 10000 });

  // The plugin dies: the panel goes after the failure threshold.
  hello.kill();
  await panel(page, 'hello').waitFor({ state: 'detached', timeout: 10000 });
});

test('tampered remote bytes (entry or chunk) never run; the failure reaches the core; right bytes heal', async () => {
  const { core, page } = await setup();
  const hello = await startHello(core);
  cleanups.push(() => hello.kill());
  let executed = false;
  let fetched = 0;
  const reports = recordReports(page);
  await page.exposeFunction('tamperedRan', () => { executed = true; });
  await page.route('**/plugins/hello/*/remoteEntry.js', async (route) => {
    fetched += 1;
    const res = await route.fetch();
    const body = (await res.text()) + '\n;window.tamperedRan && window.tamperedRan();';
    await route.fulfill({ response: res, body });
  });
  await page.goto(core.url + '/');
  const card = page.locator('#panels article.error-card[data-plugin="hello"]');
  await card.waitFor({ timeout: 10000 });
  assert.match(await card.textContent(), /integrity mismatch/);
  assert.equal(executed, false, 'the tampered script did not execute');
  await waitFor('UiLoadFailed on the core', async () => {
    const v = await core.api('GET', '/api/plugins/hello');
    return v.conditions.some((c) => c.type === 'UiLoaded' && c.reason === 'UiLoadFailed');
  });
  // The shell retries (a fresh fetch each time, refused each time), reporting the streak once.
  await waitFor('a retry', async () => fetched >= 2, 5000);
  await card.getByText(/failed 2 times/).waitFor({ timeout: 2000 });
  assert.equal(executed, false);
  assert.equal(await card.count(), 1, 'one card, updated in place');
  assert.equal(await page.locator('script[data-plugin="hello"]').count(), 1, 'the failed script element was replaced');
  assert.deepEqual(reports.filter((r) => r.plugin === 'hello').map((r) => r.ok), [false]);
  await page.screenshot({ path: path.join(artifacts, 'shell-integrity-mismatch.png') });

  // The entry pins its chunks: a chunk with other bytes is refused too ...
  await page.unroute('**/plugins/hello/*/remoteEntry.js');
  const chunk = /\/plugins\/hello\/[^/]+\/\d+\.[0-9a-f]+\.js$/;
  await page.route(chunk, async (route) => {
    const res = await route.fetch();
    // Not cacheable: the core's ETag names the right bytes, and a later 304 must not revive these.
    const headers = { ...res.headers(), 'cache-control': 'no-store' };
    delete headers.etag;
    await route.fulfill({ status: res.status(), headers, body: (await res.text()) + '\n;window.tamperedRan && window.tamperedRan();' });
  });
  await page.reload();
  await card.getByText(/Loading chunk/).waitFor({ timeout: 10000 });
  assert.equal(executed, false, 'the tampered chunk did not execute');
  // ... and once the bytes are right again, the next retry shows the panel, without a reload.
  await page.unroute(chunk);
  await panel(page, 'hello').getByText('Hello from the hello plugin').waitFor({ timeout: 5000 });
  assert.equal(await card.count(), 0);
  assert.equal(executed, false);
});

test('a panel whose mount throws gets an error card; the others keep working', async () => {
  const { core, page } = await setup();
  const hello = await startHello(core);
  cleanups.push(() => hello.kill());
  const boom = await startFake(core, 'boom', {
    title: 'Boom',
    remoteJs: 'var plugin_boom={init:function(){},get:function(m){return Promise.resolve(function(){return {mount:function(){throw new Error("boom at mount")}}})}};',
  });
  cleanups.push(() => boom.close());
  await page.goto(core.url + '/');
  const card = page.locator('#panels article.error-card[data-plugin="boom"]');
  await card.waitFor({ timeout: 10000 });
  assert.match(await card.textContent(), /boom at mount/);
  await panel(page, 'hello').getByText('Hello from the hello plugin').waitFor({ timeout: 10000 });
  await waitFor('UiLoadFailed for boom', async () => {
    const v = await core.api('GET', '/api/plugins/boom');
    return v.conditions.some((c) => c.type === 'UiLoaded' && c.reason === 'UiLoadFailed' && c.message.includes('mount'));
  });
});

test('titles render as text and undeclared script origins are blocked', async () => {
  const { core, page } = await setup();
  const xss = '<img src=x onerror=alert(1)>';
  const fake = await startFake(core, 'xss', {
    title: xss,
    remoteJs: 'var plugin_xss={init:function(){},get:function(m){return Promise.resolve(function(){return {mount:function(el){el.textContent="xss panel mounted"}}})}};',
  });
  cleanups.push(() => fake.close());
  let dialog = false;
  page.on('dialog', (d) => { dialog = true; d.dismiss(); });
  await page.goto(core.url + '/');
  await panel(page, 'xss').getByText('xss panel mounted').waitFor({ timeout: 10000 });
  assert.equal(await panel(page, 'xss').locator('h2').textContent(), xss);
  assert.equal(await panel(page, 'xss').locator('img').count(), 0);
  assert.equal(dialog, false);

  // A script from an origin the admin did not declare: blocked, and reported.
  const violation = await page.evaluate((src) => new Promise((resolve) => {
    document.addEventListener('securitypolicyviolation', (e) => resolve({ blocked: e.blockedURI, directive: e.effectiveDirective }), { once: true });
    const s = document.createElement('script');
    s.src = src;
    document.head.append(s);
    setTimeout(() => resolve(null), 3000);
  }), `${fake.base}/evil.js`);
  assert.ok(violation, 'a securitypolicyviolation was observed');
  assert.equal(violation.directive, 'script-src-elem');
  await waitFor('violation counted by the core', async () => {
    const text = await (await fetch(core.url + '/metrics')).text();
    // The core attributes a blocked URL on a plugin service's own origin to that plugin.
    return /tessera_csp_violations_total\{plugin="xss"\} [1-9]/.test(text);
  });
});

test('an HTML or SVG file from a plugin never runs as a page on the core\'s origin', async () => {
  const { core, page } = await setup();
  const pwn = '<script>document.title="pwned";alert(1)</script>';
  const fake = await startFake(core, 'pagey', {
    title: 'Pagey',
    remoteJs: 'var plugin_pagey={init:function(){},get:function(m){return Promise.resolve(function(){return {mount:function(el){el.textContent="pagey panel"}}})}};',
    files: { 'x.html': `<html><head><title>plugin page</title></head><body>${pwn}</body></html>`, 'x.svg': `<svg xmlns="http://www.w3.org/2000/svg" onload="alert(2)"><script>document.title="pwned"</script></svg>` },
  });
  cleanups.push(() => fake.close());
  let dialog = false;
  page.on('dialog', (d) => { dialog = true; d.dismiss(); });
  for (const file of ['x.html', 'x.svg']) {
    const res = await page.goto(`${core.url}/plugins/pagey/1.0.0/${file}`);
    assert.equal(res.status(), 403, file);
    assert.equal(res.headers()['content-type'], 'application/json');
    assert.match(await page.locator('body').innerText(), /file_type_not_allowed/);
    assert.notEqual(await page.title(), 'pwned', file);
    // Refused before the core fetched anything from the plugin.
    assert.equal(fake.requests.get(`/mf/1.0.0/${file}`) ?? 0, 0, file);
  }
  // The remote's own script, opened as a page, is shown, not run, under a sandboxing policy.
  const res = await page.goto(`${core.url}/plugins/pagey/1.0.0/remoteEntry.js`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-security-policy'], /sandbox/);
  await page.waitForTimeout(300);
  assert.equal(dialog, false);
});

test('a CDN origin declared by the admin is in the policy', async () => {
  const { core } = await setup('shell:\n  remoteOrigins: ["https://cdn.example.com"]\n');
  const res = await fetch(core.url + '/');
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /script-src 'self' https:\/\/cdn\.example\.com;/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.match(csp, /frame-ancestors 'none'/);
});

test('a new version replaces the old one without a reload', async () => {
  const { core, page } = await setup();
  const js = (text) => `var plugin_atlas={init:function(){},get:function(m){return Promise.resolve(function(){return {mount:function(el){el.textContent=${JSON.stringify(text)}}}})}};`;
  const atlas = await startFake(core, 'atlas', { title: 'Atlas', remoteJs: js('atlas one') });
  cleanups.push(() => atlas.close());
  await page.goto(core.url + '/');
  await panel(page, 'atlas').getByText('atlas one').waitFor({ timeout: 10000 });
  await page.evaluate(() => { window.__sameDocument = true; });
  await atlas.register('1.1.0', js('atlas two'));
  await panel(page, 'atlas').getByText('atlas two').waitFor({ timeout: 5000 });
  assert.equal(await panel(page, 'atlas').count(), 1, 'the old panel is gone');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');
  assert.match(await panel(page, 'atlas').locator('.meta').textContent(), /atlas 1\.1\.0/);
});

test('a parameterised route gets its decoded values; only parameter-free routes get a nav link', async () => {
  const { core, page } = await setup();
  const hello = await startHello(core);
  cleanups.push(() => hello.kill());
  // A deep link: the page renders once the remote has loaded.
  await page.goto(core.url + '/#/hello/world');
  await page.locator('#page').getByText('Hello, world!').waitFor({ timeout: 10000 });
  await panel(page, 'hello').getByText('Hello from the hello plugin').waitFor({ timeout: 5000 });
  assert.deepEqual(await page.locator('#routes a').allTextContents(), ['/hello'], 'a link for /hello, none for /hello/:name');
  await page.screenshot({ path: path.join(artifacts, 'shell-greeting.png') });

  // The nav link shows the parameter-free page; the plugin's own link the parameterised one.
  await page.locator('#routes a', { hasText: '/hello' }).click();
  await page.locator('#page').getByText('Hello page').waitFor({ timeout: 5000 });
  await panel(page, 'hello').getByRole('link', { name: 'Greet the world' }).click();
  await page.locator('#page').getByText('Hello, world!').waitFor({ timeout: 5000 });
  assert.match(page.url(), /#\/hello\/world$/);

  // Values are decoded and rendered as text.
  await page.evaluate(() => { location.hash = '#/hello/Ada%20%3Cb%3EL%C3%B6w%3C%2Fb%3E/'; });
  await page.locator('#page h2', { hasText: 'Hello, Ada <b>Löw</b>!' }).waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#page b').count(), 0, 'a parameter is text, never HTML');

  // A trailing slash is ignored; a malformed escape matches nothing.
  await page.evaluate(() => { location.hash = '#/hello/'; });
  await page.locator('#page').getByText('Hello page').waitFor({ timeout: 5000 });
  await page.evaluate(() => { location.hash = '#/hello/%E0%A4%A'; });
  await page.locator('#page').waitFor({ state: 'hidden', timeout: 5000 });
});

test('a remote whose chunk fails once heals without a reload', async () => {
  const { core, page } = await setup();
  // A hand-written remote that loads its panel from a chunk beside the entry, as bundlers do.
  const entry = `var plugin_mend = (function () {
    var base = document.currentScript.src.replace(/[^/]*$/, '');
    return {
      init: function () {},
      get: function (m) {
        return new Promise(function (resolve, reject) {
          var s = document.createElement('script');
          s.src = base + 'panel-chunk.js';
          s.onload = function () { s.remove(); resolve(function () { return window.__mendPanel; }); };
          s.onerror = function () { s.remove(); reject(new Error('Loading chunk panel-chunk.js failed')); };
          document.head.appendChild(s);
        });
      },
    };
  })();`;
  const chunk = 'window.__mendPanel = { mount: function (el) { el.textContent = "mended panel says hi"; } };';
  const mend = await startFake(core, 'mend', { title: 'Mend', remoteJs: entry, files: { 'panel-chunk.js': chunk }, failOnce: ['panel-chunk.js'] });
  cleanups.push(() => mend.close());
  const reports = recordReports(page);
  const chunkStatus = [];
  page.on('response', (res) => { if (res.url().endsWith('/panel-chunk.js')) chunkStatus.push(res.status()); });

  await page.goto(core.url + '/');
  const card = page.locator('#panels article.error-card[data-plugin="mend"]');
  await card.waitFor({ timeout: 10000 });
  assert.match(await card.textContent(), /mend: failed to load/);
  await page.evaluate(() => { window.__sameDocument = true; });

  await seePanelText(page, core, 'mend', 'mended panel says hi', 10000);
  assert.equal(await errorCards(page).count(), 0, 'the error card is gone');
  assert.equal(await panel(page, 'mend').count(), 1);
  assert.equal(await panel(page, 'mend').locator('h2').textContent(), 'Mend');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');
  assert.deepEqual(chunkStatus, [502, 200], 'the core passed the failure through, then the chunk');
  assert.equal(mend.requests.get('/mf/1.0.0/panel-chunk.js'), 2);

  await waitFor('UiLoaded Passed on the core', async () => {
    const v = await core.api('GET', '/api/plugins/mend');
    return v.conditions.some((c) => c.type === 'UiLoaded' && c.reason === 'Passed');
  });
  const mine = reports.filter((r) => r.plugin === 'mend');
  assert.deepEqual(mine.map((r) => [r.ok, r.stage]), [[false, 'load'], [true, 'mount']], 'one failure, then one success');
});

test('a core restarted on the same data dir and port: the open shell ends with the panel', async () => {
  const { core, page } = await setup();
  const hello = await startHello(core);
  cleanups.push(() => hello.kill());
  await page.goto(core.url + '/');
  await panel(page, 'hello').getByText('Hello from the hello plugin').waitFor({ timeout: 10000 });
  await page.evaluate(() => { window.__sameDocument = true; });

  const { graceful } = await core.stop();
  assert.ok(graceful, 'the core stopped on SIGTERM');
  await page.locator('#status', { hasText: 'reconnecting' }).waitFor({ timeout: 5000 });

  const started = Date.now();
  const again = await startCore('', { dataDir: core.dataDir, listen: core.listen });
  cleanups.push(() => again.stop());
  assert.equal(again.url, core.url);
  // The stream reconnects (the browser waits about 3 s) and the new core sends the list.
  await page.locator('#status', { hasText: '1 plugin' }).waitFor({ timeout: 10000 });
  await seePanelText(page, again, 'hello', 'Hello from the hello plugin', 10000);
  console.log(`restart: list and panel back ${Date.now() - started} ms after the new core started`);
  // Settled: nothing failing left behind.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await errorCards(page).count(), 0, `no error card: ${JSON.stringify(await errorCards(page).allTextContents())}`);
  await seePanelText(page, again, 'hello', 'Hello from the hello plugin', 1000);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');

  // A fresh page load is served by the new core too (entry and chunks).
  await page.reload();
  await seePanelText(page, again, 'hello', 'Hello from the hello plugin', 10000);
  assert.equal(await errorCards(page).count(), 0);
});

test('a chunk rebuilt under the same version reaches the open shell', async () => {
  const { core, page } = await setup();
  const ui = copyTemplateUi();
  buildUi(ui);
  const hello = await startHello(core, { uiDir: path.join(ui, 'dist') });
  cleanups.push(() => hello.kill());
  await page.goto(core.url + '/');
  await seePanelText(page, core, 'hello', 'Hello from the hello plugin', 10000);
  await page.evaluate(() => { window.__sameDocument = true; });
  const before = (await (await fetch(core.url + '/api/shell/remotes')).json())[0].integrity;

  const src = path.join(ui, 'src/Panel.ts');
  writeFileSync(src, readFileSync(src, 'utf8').replace("'Hello from the hello plugin'", "'Hello from the rebuilt plugin'"));
  buildUi(ui);

  await seePanelText(page, core, 'hello', 'Hello from the rebuilt plugin', 15000);
  assert.equal(await panel(page, 'hello').getByText('Hello from the hello plugin').count(), 0, 'the old text is gone');
  assert.equal(await errorCards(page).count(), 0);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');
  const [after] = await (await fetch(core.url + '/api/shell/remotes')).json();
  assert.equal(after.version, '0.1.0');
  assert.notEqual(after.integrity, before, 'the core serves the new entry');
});

void root;
