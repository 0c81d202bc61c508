// Signing in to the shell with a real OpenID provider (npm oidc-provider, a certified
// implementation) in Chromium: authorization code + PKCE, the session cookie, /api/me, an admin
// user disabling a plugin (the audit names them), a user outside adminGroups refused, sign-out.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startCore, startHello, browser, freePort, artifacts } from './harness.mjs';
import { startProvider, signIn, oidcConfig } from './oidc.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

const me = (page) => page.evaluate(async () => {
  const r = await fetch('/api/me');
  return { status: r.status, body: await r.json() };
});

test('a user signs in with OpenID Connect, sees who they are, and an admin user disables a plugin', async () => {
  const corePort = await freePort();
  const opPort = await freePort();
  const coreUrl = `http://127.0.0.1:${corePort}`;
  cleanups.push(await startProvider(opPort, coreUrl, 'tessera-client-secret'));
  const core = await startCore(
    oidcConfig(opPort),
    { listen: `127.0.0.1:${corePort}` },
  );
  cleanups.push(() => core.stop());
  const hello = await startHello(core);
  cleanups.push(() => hello.kill());

  const { ctx, page } = await browser();
  cleanups.push(() => ctx.close());
  await signIn(page, coreUrl, 'alice');
  // Back on the shell, signed in: the template plugin's panel shows.
  await page.locator('#panels article[data-plugin="hello"]').waitFor({ timeout: 15000 });
  await page.screenshot({ path: path.join(artifacts, 'signed-in-shell.png') });
  // The header names the user (their name as text, never markup).
  await page.locator('#user-name', { hasText: 'Alice Admin' }).waitFor({ timeout: 5000 });
  const who = await me(page);
  assert.equal(who.status, 200);
  assert.deepEqual(who.body, { sub: 'alice', name: 'Alice Admin', tenant: 'acme', groups: ['tessera-admins'], admin: true });
  // The panel's backend, called through the core's proxy, was told who is calling.
  await page.locator('#panels article[data-plugin="hello"] .hello-caller', { hasText: 'The backend says you are alice (tenant acme).' })
    .waitFor({ timeout: 10000 });

  // The session cookie: HttpOnly, SameSite=Lax, not readable by scripts.
  const cookie = (await ctx.cookies(coreUrl)).find((c) => c.name === 'tessera_session');
  assert.ok(cookie, 'a session cookie');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Lax');
  assert.equal(await page.evaluate(() => document.cookie.includes('tessera_session')), false);

  // An admin user disables a plugin from the shell's origin; the audit names them.
  const disabled = await page.evaluate(async () => {
    const r = await fetch('/api/plugins/hello/disable', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'checking the kill switch' }) });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(disabled.status, 200, JSON.stringify(disabled.body));
  assert.equal(disabled.body.state, 'Disabled');
  const audit = await core.api('GET', '/api/audit?plugin=hello&limit=1');
  assert.equal(audit.items[0].action, 'disable');
  assert.equal(audit.items[0].actor, 'user:alice');

  // The same cookie from another site: refused.
  const cross = await fetch(`${coreUrl}/api/plugins/hello/enable`, {
    method: 'POST',
    headers: { cookie: `tessera_session=${cookie.value}`, origin: 'http://evil.example', 'content-type': 'application/json' },
    body: '{}',
  });
  assert.equal(cross.status, 403);
  assert.equal((await cross.json()).error.code, 'origin_not_allowed');
  // A changed cookie: not signed in.
  const flipped = cookie.value.slice(0, -2) + (cookie.value.endsWith('AA') ? 'BB' : 'AA');
  const tampered = await fetch(`${coreUrl}/api/me`, { headers: { cookie: `tessera_session=${flipped}` } });
  assert.equal(tampered.status, 401);
  assert.equal((await tampered.json()).error.code, 'not_signed_in');

  // Sign out (the header's button): the session is gone and the shell asks to sign in again.
  const out = page.waitForResponse((r) => r.url().endsWith('/auth/logout'));
  await page.click('#sign-out');
  assert.equal((await out).status(), 204);
  await page.locator('#signed-out', { hasText: 'You are signed out.' }).waitFor({ timeout: 5000 });
  assert.equal((await me(page)).status, 401);
  const again = await ctx.request.get(`${coreUrl}/`, { maxRedirects: 0 });
  assert.equal(again.status(), 302);
  assert.equal(again.headers().location, '/auth/login?return=/');

  // Bob is outside adminGroups: he sees the shell, not the admin API.
  const second = await browser();
  cleanups.push(() => second.ctx.close());
  await signIn(second.page, coreUrl, 'bob');
  const bob = await me(second.page);
  assert.deepEqual(bob.body, { sub: 'bob', name: 'Bob Builder', tenant: 'beta', groups: ['devs'], admin: false });
  const refused = await second.page.evaluate(async () => {
    const r = await fetch('/api/plugins');
    return { status: r.status, body: await r.json() };
  });
  assert.equal(refused.status, 403);
  assert.equal(refused.body.error.code, 'admin_required');
  await core.api('POST', '/api/plugins/hello/enable', {});
});
