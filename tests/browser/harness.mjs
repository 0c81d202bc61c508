// Real processes for browser tests: a core (`tessera serve`), the template plugin
// (`hello-plugin`), small plugin services of the tests' own, and Chromium.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = (name) => path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, 'target'), 'debug', name);
export const artifacts = path.join(root, 'tests/browser/artifacts');
mkdirSync(artifacts, { recursive: true });

const children = new Set();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

function track(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** Builds the template's UI once if it is missing. */
export function ensureUi() {
  const ui = path.join(root, 'plugin-template/ui');
  if (existsSync(path.join(ui, 'dist/remoteEntry.js'))) return;
  if (!existsSync(path.join(ui, 'node_modules'))) execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: ui, stdio: 'inherit' });
  execFileSync('npm', ['run', 'build'], { cwd: ui, stdio: 'inherit' });
}

export async function startCore(extraConfig = '') {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'tessera-browser-'));
  const config = path.join(dataDir, 'config.yaml');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(config, `probe:\n  periodSeconds: 0.2\n  timeoutSeconds: 1\n  failureThreshold: 3\n${extraConfig}`);
  const child = track(spawn(bin('tessera'), ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--config', config], { stdio: ['ignore', 'pipe', 'ignore'] }));
  const url = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`tessera serve exited ${code}`)));
    setTimeout(() => reject(new Error('tessera serve did not start')), 20000);
  });
  const token = (...args) => execFileSync(bin('tessera'), ['token', 'issue', ...args, '--data-dir', dataDir]).toString().trim();
  const admin = token('--admin');
  const api = async (method, p, body) => {
    const res = await fetch(url + p, { method, headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
    return res.json();
  };
  return { url, dataDir, token, admin, api, stop: () => child.kill('SIGTERM') };
}

export async function waitFor(what, fn, ms = 10000) {
  const start = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - start;
    if (Date.now() - start > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The template plugin, registered with `core`. */
export async function startHello(core) {
  ensureUi();
  const port = await freePort();
  const child = track(spawn(bin('hello-plugin'), [], {
    env: { ...process.env, PORT: String(port), CORE_BASE_URL: core.url, REG_TOKEN: core.token('--plugin', 'hello', '--capabilities', 'ui:panel,ui:route'), UI_REMOTE_PATH: path.join(root, 'plugin-template/ui/dist'), REGISTER_INTERVAL_SECONDS: '0.5' },
    stdio: 'ignore',
  }));
  await waitFor('hello Ready', async () => (await core.api('GET', '/api/plugins/hello')).state === 'Ready');
  return { port, kill: () => child.kill('SIGKILL') };
}

/** A plugin service of the tests' own: /readyz and a hand-written remote entry per version. */
export async function startFake(core, name, { title, remoteJs, version = '1.0.0' }) {
  const remotes = new Map([[version, remoteJs]]);
  const server = createServer((req, res) => {
    if (req.url === '/readyz') { res.end('ok'); return; }
    const m = req.url.match(/^\/mf\/([^/]+)\/remoteEntry\.js$/);
    if (m && remotes.has(m[1])) { res.setHeader('content-type', 'text/javascript'); res.end(remotes.get(m[1])); return; }
    res.statusCode = 404; res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  const token = core.token('--plugin', name, '--capabilities', 'ui:panel');
  const register = async (v, js) => {
    remotes.set(v, js);
    const manifest = { name, version: v, compat: { core: '^1.0' }, capabilities: ['ui:panel'], ui: { remotePath: `/mf/${v}/remoteEntry.js`, contributions: { panels: [{ id: `${name}.main`, title }] } } };
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
  await register(version, remoteJs);
  return { base, register, close: () => server.close() };
}

export async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

export async function browser() {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  return { ctx, page };
}
