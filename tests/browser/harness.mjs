// Real processes for browser tests: a core (`tessera serve`), the template plugin
// (`hello-plugin`), small plugin services of the tests' own, and Chromium.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, existsSync, mkdirSync, writeFileSync, cpSync, symlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = (name) => path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, 'target'), 'debug', name);
export const artifacts = path.join(root, 'tests/browser/artifacts');
mkdirSync(artifacts, { recursive: true });

const children = new Set();
const scratch = [];
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of scratch) rmSync(d, { recursive: true, force: true }); // links, not their targets
});

/** A fresh folder under the system's temp dir, removed when the test process exits. */
function tempDir(prefix) {
  const d = mkdtempSync(path.join(tmpdir(), prefix));
  scratch.push(d);
  return d;
}

function track(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

const templateUi = path.join(root, 'plugin-template/ui');
let uiBuilt = false;

/** Builds the template's UI (once per test run, so the tests never see a stale dist/). */
export function ensureUi() {
  if (uiBuilt) return;
  if (!existsSync(path.join(templateUi, 'node_modules'))) execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: templateUi, stdio: 'inherit' });
  buildUi(templateUi);
  uiBuilt = true;
}

/** `npm run build` of a UI folder (rspack, well under a second). */
export function buildUi(dir) {
  execFileSync('node', ['build.mjs'], { cwd: dir, stdio: 'ignore' });
}

/**
 * A copy of the template's UI in a fresh folder, laid out as in the repository
 * (`<tmp>/plugin-template/ui`, `<tmp>/sdk-web` linked to the real one) so build.mjs needs no
 * change; node_modules is a link to the template's. Returns the copy's folder.
 */
export function copyTemplateUi() {
  ensureUi();
  const top = tempDir('tessera-ui-');
  const dir = path.join(top, 'plugin-template/ui');
  mkdirSync(dir, { recursive: true });
  for (const f of ['build.mjs', 'package.json', 'tsconfig.json', 'src']) cpSync(path.join(templateUi, f), path.join(dir, f), { recursive: true });
  symlinkSync(path.join(templateUi, 'node_modules'), path.join(dir, 'node_modules'));
  symlinkSync(path.join(root, 'sdk-web'), path.join(top, 'sdk-web'));
  return dir;
}

/**
 * A core on its own SQLite data dir. `dataDir` reuses one (a restart), `listen` fixes the
 * address (default: a free loopback port).
 */
export async function startCore(extraConfig = '', { dataDir = tempDir('tessera-browser-'), listen = '127.0.0.1:0' } = {}) {
  const config = path.join(dataDir, 'config.yaml');
  writeFileSync(config, `probe:\n  periodSeconds: 0.2\n  timeoutSeconds: 1\n  failureThreshold: 3\n${extraConfig}`);
  const child = track(spawn(bin('tessera'), ['serve', '--listen', listen, '--data-dir', dataDir, '--config', config], { stdio: ['ignore', 'pipe', 'ignore'] }));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/^listening on (http:\/\/\S+)/m);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`tessera serve exited ${code}`)));
    // unref: a pending timer would keep the test process alive after the last test.
    setTimeout(() => reject(new Error('tessera serve did not start')), 20000).unref();
  });
  const token = (...args) => execFileSync(bin('tessera'), ['token', 'issue', ...args, '--data-dir', dataDir]).toString().trim();
  const admin = token('--admin');
  const api = async (method, p, body) => {
    const res = await fetch(url + p, { method, headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
    return res.json();
  };
  /** SIGTERM; resolves once the process is gone (SIGKILL after 10 s; `graceful` says which). */
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return { graceful: true };
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
    const { signal } = await exited;
    clearTimeout(timer);
    return { graceful: signal !== 'SIGKILL' };
  };
  return { url, listen: new URL(url).host, dataDir, token, admin, api, stop };
}

export async function waitFor(what, fn, ms = 10000) {
  const start = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - start;
    if (Date.now() - start > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The template plugin, registered with `core`; `uiDir` is its built UI (default: the template's). */
export async function startHello(core, { uiDir } = {}) {
  if (!uiDir) ensureUi();
  const port = await freePort();
  const child = track(spawn(bin('hello-plugin'), [], {
    env: { ...process.env, PORT: String(port), CORE_BASE_URL: core.url, REG_TOKEN: core.token('--plugin', 'hello', '--capabilities', 'ui:panel,ui:route'), UI_REMOTE_PATH: uiDir ?? path.join(templateUi, 'dist'), REGISTER_INTERVAL_SECONDS: '0.5' },
    stdio: 'ignore',
  }));
  await waitFor('hello Ready', async () => (await core.api('GET', '/api/plugins/hello')).state === 'Ready');
  return { port, kill: () => child.kill('SIGKILL') };
}

/**
 * `events-plugin` (bench/src/bin/events-plugin.rs) as plugin `name`, registered with `core`:
 * `env` sets `SUBSCRIBE`, `SHELL_SUBSCRIBE`, `CAPABILITIES`; `caps` is what its token grants.
 * `publish(body)` asks it to publish through the core.
 */
export async function startEventsPlugin(core, name, caps, env = {}) {
  const port = await freePort();
  const child = track(spawn(bin('events-plugin'), [], {
    env: { ...process.env, PLUGIN_NAME: name, PORT: String(port), CORE_BASE_URL: core.url, REG_TOKEN: core.token('--plugin', name, '--capabilities', caps), REGISTER_INTERVAL_SECONDS: '0.5', UI_REMOTE_PATH: '', ...env },
    stdio: 'ignore',
  }));
  await waitFor(`${name} Ready`, async () => (await core.api('GET', `/api/plugins/${name}`)).state === 'Ready');
  const publish = async (body) => {
    const res = await fetch(`http://127.0.0.1:${port}/api/public/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`publish: ${res.status} ${await res.text()}`);
    return res.json();
  };
  return { port, publish, kill: () => child.kill('SIGKILL') };
}

/** A manifest of the current contract (plugin API 2.0) for a plugin of the tests' own. */
export function fakeManifest(name, version, { title, routes = [] }) {
  return {
    name,
    version,
    compat: { core: '^2.0' },
    capabilities: ['ui:panel', ...(routes.length ? ['ui:route'] : [])],
    ui: {
      mode: 'ModuleFederation',
      remotePath: `/mf/${version}/remoteEntry.js`,
      contributions: { panels: [{ id: `${name}.main`, title }], ...(routes.length ? { routes } : {}) },
    },
    endpoints: { basePath: '/api' },
    health: { livenessPath: '/healthz', readinessPath: '/readyz' },
  };
}

/**
 * A plugin service of the tests' own: /healthz, /readyz, and per version a hand-written remote
 * entry plus other files beside it (`files`: name -> JavaScript). Each file named in
 * `failOnce` answers 500 to its first request. `requests` counts requests by path.
 */
export async function startFake(core, name, { title, remoteJs, version = '1.0.0', files = {}, failOnce = [], routes = [] }) {
  const remotes = new Map([[version, { 'remoteEntry.js': remoteJs, ...files }]]);
  const failing = new Set(failOnce);
  const requests = new Map();
  const server = createServer((req, res) => {
    requests.set(req.url, (requests.get(req.url) ?? 0) + 1);
    if (req.url === '/readyz' || req.url === '/healthz') { res.end('ok'); return; }
    const m = req.url.match(/^\/mf\/([^/]+)\/([A-Za-z0-9_.-]+)$/);
    const body = m && remotes.get(m[1])?.[m[2]];
    if (body === undefined) { res.statusCode = 404; res.end(); return; }
    if (failing.delete(m[2])) { res.statusCode = 500; res.end('first request fails'); return; }
    res.setHeader('content-type', 'text/javascript');
    res.end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  const token = core.token('--plugin', name, '--capabilities', routes.length ? 'ui:panel,ui:route' : 'ui:panel');
  const register = async (v, js, more = {}) => {
    remotes.set(v, { 'remoteEntry.js': js, ...more });
    const manifest = fakeManifest(name, v, { title, routes });
    const res = await fetch(`${core.url}/api/plugins/register`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ manifest, backendUrl: base, remoteUrl: `${base}/mf/${v}/remoteEntry.js` }),
    });
    if (res.status !== 201) throw new Error(`registering ${name} ${v}: ${res.status} ${await res.text()}`);
    await waitFor(`${name} ${v} Ready`, async () => {
      const p = await core.api('GET', `/api/plugins/${name}`);
      return p.state === 'Ready' && p.servingVersion === v;
    });
  };
  await register(version, remoteJs, files);
  return { base, register, requests, close: () => { server.close(); server.closeAllConnections(); } };
}

export async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

export async function browser() {
  const dir = tempDir('tessera-chromium-');
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  return { ctx, page };
}
