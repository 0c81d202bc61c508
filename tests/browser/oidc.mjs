// A real OpenID provider (npm oidc-provider, a certified implementation) for browser tests, its
// test people, and signing in to the shell through its pages in Chromium.
import Provider from 'oidc-provider';
import path from 'node:path';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';

export const people = {
  alice: { name: 'Alice Admin', tenant: 'acme', groups: ['tessera-admins'] },
  bob: { name: 'Bob Builder', tenant: 'beta', groups: ['devs'] },
};

/** The provider on `port`, with one client: the core at `coreUrl`. */
export async function startProvider(port, coreUrl, secret) {
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: [{
      client_id: 'tessera',
      client_secret: secret,
      redirect_uris: [`${coreUrl}/auth/callback`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    claims: { openid: ['sub'], profile: ['name'], tenant: ['tenant'], groups: ['groups'] },
    // The claims of the granted scopes travel in the ID token.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    cookies: { keys: ['tessera-test-cookie-key'] },
    findAccount: async (_ctx, id) => ({
      accountId: id,
      claims: async () => ({ sub: id, ...(people[id] ?? { name: id, tenant: 'none', groups: [] }) }),
    }),
  });
  const server = provider.listen(port);
  await new Promise((r) => server.once('listening', r));
  return () => new Promise((r) => { server.closeAllConnections(); server.close(r); });
}

export async function signIn(page, coreUrl, who) {
  await page.goto(`${coreUrl}/`);
  // The shell sent the browser to the provider's sign-in page.
  await page.locator('input[name="login"]').waitFor({ timeout: 10000 });
  await page.fill('input[name="login"]', who);
  await page.fill('input[name="password"]', 'any');
  await page.click('button[type="submit"]');
  await page.locator('button[type="submit"]', { hasText: 'Continue' }).click({ timeout: 10000 });
  await page.waitForURL(`${coreUrl}/`, { timeout: 10000 });
}

/** The core's `auth.oidc` config for a provider on `opPort` (client secret in a temp file). */
export function oidcConfig(opPort) {
  const secretFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'tessera-oidc-')), 'client-secret');
  writeFileSync(secretFile, 'tessera-client-secret\n');
  return `auth:\n  oidc:\n    issuer: http://127.0.0.1:${opPort}\n    clientId: tessera\n    clientSecretFile: ${secretFile}\n    scopes: [openid, profile, tenant, groups]\n    adminGroups: [tessera-admins]\n`;
}
