// Events reach a plugin's panel live, in Chromium: `billing` publishes through the core,
// `ledger`'s manifest subscribes its UI (`events.subscribe: [{type: "billing.invoice.*", shell:
// true}]`) and its panel lists what `ctx.sdk.events.subscribe` hands it. Two users signed in with
// a real OpenID provider: an event of tenant acme shows for Alice (acme), not for Bob (beta); an
// event without a tenant shows for both.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startCore, startEventsPlugin, browser, freePort, artifacts } from './harness.mjs';
import { startProvider, signIn, oidcConfig } from './oidc.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

const received = (page) => page.locator('#panels article[data-plugin="ledger"] .received-events li');

test('a shell subscription shows events live, only to users of the event\'s tenant', async () => {
  const corePort = await freePort();
  const opPort = await freePort();
  const coreUrl = `http://127.0.0.1:${corePort}`;
  cleanups.push(await startProvider(opPort, coreUrl, 'tessera-client-secret'));
  const core = await startCore(oidcConfig(opPort), { listen: `127.0.0.1:${corePort}` });
  cleanups.push(() => core.stop());
  const billing = await startEventsPlugin(core, 'billing', 'ui:panel,events:publish');
  cleanups.push(() => billing.kill());
  const ledger = await startEventsPlugin(core, 'ledger', 'ui:panel,events:subscribe', { CAPABILITIES: 'ui:panel', SHELL_SUBSCRIBE: 'billing.invoice.*' });
  cleanups.push(() => ledger.kill());

  const alice = await browser();
  cleanups.push(() => alice.ctx.close());
  const bob = await browser();
  cleanups.push(() => bob.ctx.close());
  await signIn(alice.page, coreUrl, 'alice');
  await signIn(bob.page, coreUrl, 'bob');
  for (const { page } of [alice, bob]) {
    await page.locator('#panels article[data-plugin="ledger"] .events-waiting', { hasText: 'Waiting for events' }).waitFor({ timeout: 15000 });
  }
  // Both shells hold their event stream open before anything is published.
  await new Promise((r) => setTimeout(r, 500));

  await billing.publish({ type: 'billing.invoice.created', tenant: 'acme' });
  await received(alice.page).first().waitFor({ timeout: 10000 });
  assert.deepEqual(await received(alice.page).allTextContents(), ['billing.invoice.created #0 (acme)']);
  // A type the subscription does not match never reaches the panel.
  await billing.publish({ type: 'billing.payment.failed', tenant: 'acme' });
  await billing.publish({ type: 'billing.invoice.paid' });
  await received(bob.page).first().waitFor({ timeout: 10000 });
  await received(alice.page).nth(1).waitFor({ timeout: 10000 });
  await alice.page.screenshot({ path: path.join(artifacts, 'events-panel-alice.png') });
  assert.deepEqual(await received(alice.page).allTextContents(), ['billing.invoice.created #0 (acme)', 'billing.invoice.paid #0']);
  // Bob (tenant beta) got the event without a tenant and not Alice's.
  assert.deepEqual(await received(bob.page).allTextContents(), ['billing.invoice.paid #0']);
  assert.equal(await bob.page.locator('#panels article[data-plugin="ledger"] .events-waiting').textContent(), '1 event(s)');
});
