// The reference shell in Chromium, against a real core and real plugin services.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startCore, startHello, startFake, browser, waitFor, artifacts, root } from './harness.mjs';

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

test('tampered remote bytes never run; the failure reaches the core', async () => {
  const { core, page } = await setup();
  const hello = await startHello(core);
  cleanups.push(() => hello.kill());
  let executed = false;
  await page.exposeFunction('tamperedRan', () => { executed = true; });
  await page.route('**/plugins/hello/*/remoteEntry.js', async (route) => {
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
  await page.screenshot({ path: path.join(artifacts, 'shell-integrity-mismatch.png') });
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
    return /tessera_csp_violations_total\{plugin="unknown"\} [1-9]/.test(text);
  });
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

void root;
