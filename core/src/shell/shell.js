// The reference shell: loads every Ready plugin's Module Federation remote through the core,
// mounts its panels and pages, and follows the list live (Server-Sent Events). Each remote is
// loaded with a script tag carrying its sha384 integrity, so tampered bytes never run; each
// contribution is isolated, so one that fails shows an error card and the rest keep working,
// and the outcome is reported to the core (the UiLoaded condition).
//
// Loading a remote is one attempt: the entry script (with its integrity), `container.init`,
// and `container.get` of every exposed module its contributions name (`./Panel`, and the
// `Module` of each route's `Module#Export`). An attempt that fails shows an error card and is
// retried with backoff (about 1 s, doubling, at most 30 s, with jitter), and at once whenever
// the event stream reconnects or the list arrives again; each attempt starts from a fresh
// script element. When one succeeds, the card gives way to the plugin's panels and routes,
// without a reload. A failure is reported once per streak of failed attempts, a success once.
// A contribution whose own `mount` throws is not a load failure: its card stays, no retry.
//
// Routes: `path` may hold `:name` segments and a final catch-all `*`; the location's hash path
// is matched against every route (static segments beat parameters, parameters beat the
// catch-all, segment by segment; a trailing slash and a `?query` ignored), and the decoded
// values reach the component as `ctx.params`. Only routes without parameters get a nav link.

const panelsEl = document.getElementById('panels');
const routesEl = document.getElementById('routes');
const pageEl = document.getElementById('page');
const emptyEl = document.getElementById('empty');
const statusEl = document.getElementById('status');

const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
/** An attempt that has not settled by then counts as failed. */
const ATTEMPT_TIMEOUT_MS = 30000;
const EXPORT_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const MODULE_NAME = /^[A-Za-z0-9_$./-]+$/;

/**
 * name -> {
 *   remote,                      the list's entry for the plugin
 *   state: 'loading' | 'ready' | 'failed',
 *   modules: Map(exposed module name -> module), once ready
 *   panels: [{ id, el, unmount }], routes: [{ path, component, parts, ref }], once ready
 *   errorEl,                     the load error card, while failing
 *   attempt, failures, timer, loading, startedAt, retrySoon,
 *   failureReported, okReported  one report per failure streak, one success
 * }
 */
const mounted = new Map();
const subscribers = new Map(); // topic -> Set(handler)
/** plugin name -> Set({ pattern, handler }): its UI's `sdk.events.subscribe` calls. */
const eventSubscribers = new Map();
/** The signed-in user's tenant (the stream only carries events of it, or of none). */
let tenant = 'default';

/** Whether event type `type` matches `pattern` (`*` one segment, a last `>` the rest). */
function typeMatches(pattern, type) {
  const p = String(pattern).split('.');
  const t = String(type).split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>' && i === p.length - 1) return t.length > i;
    if (i >= t.length || (p[i] !== '*' && p[i] !== t[i])) return false;
  }
  return p.length === t.length;
}

/** Hands a plugin event from the stream to the subscribing UI's handlers. */
function deliverEvent(plugin, event) {
  for (const s of eventSubscribers.get(plugin) ?? []) {
    if (!typeMatches(s.pattern, event?.type)) continue;
    try { s.handler(event); } catch (e) { console.error('event handler failed', plugin, e); }
  }
}
/** The page on show: { entry, route, path, unmount }. */
let page = null;

function publish(topic, payload) {
  for (const h of subscribers.get(topic) ?? []) {
    try { h(payload); } catch (e) { console.error('subscriber failed', e); }
  }
}

/** Whether a body goes as it is (not as JSON). */
function isRawBody(b) {
  return typeof b === 'string' || b instanceof FormData || b instanceof Blob
    || b instanceof ArrayBuffer || ArrayBuffer.isView(b) || b instanceof URLSearchParams
    || b instanceof ReadableStream;
}

/** An `HttpError` (SDK 1.2.0): the core's or the plugin's error envelope, as thrown. */
async function httpError(res, method, path) {
  let envelope = null;
  try { envelope = await res.json(); } catch { /* not JSON */ }
  const err = envelope && typeof envelope === 'object' ? envelope.error : null;
  const e = new Error(typeof err?.message === 'string' && err.message
    ? err.message : `${method} ${path}: HTTP ${res.status}`);
  e.name = 'HttpError';
  e.status = res.status;
  e.code = typeof err?.code === 'string' ? err.code : `http_${res.status}`;
  e.details = Array.isArray(err?.details) ? err.details : [];
  e.requestId = typeof err?.requestId === 'string' ? err.requestId : res.headers.get('x-request-id');
  return e;
}

/**
 * `ctx.sdk.http`: calls to the plugin's own backend through the core's proxy
 * (`/api/proxy/<plugin>/<path>`), with the browser's session; JSON by default.
 */
function httpFor(name) {
  const prefix = `/api/proxy/${encodeURIComponent(name)}`;
  // A path stays under the plugin's own prefix: no `.`/`..` segment (plain or encoded, which
  // the browser would resolve into another plugin's or the core's URL) and no backslash.
  const url = (path) => {
    const p = String(path ?? '');
    const pathPart = p.split(/[?#]/, 1)[0].toLowerCase().replace(/%2e/g, '.').replace(/%2f/g, '/');
    if (/\\|%5c/.test(pathPart) || pathPart.split('/').some((s) => s === '.' || s === '..')) {
      const e = new Error(`sdk.http: "${p}" would leave the plugin's own API`);
      e.name = 'HttpError';
      e.status = 400;
      e.code = 'path_not_allowed';
      e.details = [];
      e.requestId = null;
      throw e;
    }
    return prefix + (p.startsWith('/') ? p : `/${p}`);
  };
  const fetchFn = async (path, init = {}) => fetch(url(path), { credentials: 'same-origin', ...init });
  async function request(method, path, body, init = {}) {
    const headers = new Headers(init.headers);
    let payload = body;
    if (body !== undefined && body !== null && !isRawBody(body)) {
      payload = JSON.stringify(body);
      if (!headers.has('content-type')) headers.set('content-type', 'application/json');
    }
    if (!headers.has('accept')) headers.set('accept', 'application/json');
    const res = await fetchFn(path, { ...init, method, headers, body: payload ?? undefined });
    if (!res.ok) throw await httpError(res, method, path);
    if (res.status === 204 || res.status === 205) return undefined;
    const type = res.headers.get('content-type') ?? '';
    return /[/+]json\b/.test(type) ? res.json() : res.text();
  }
  return Object.freeze({
    get: (path, init) => request('GET', path, undefined, init),
    post: (path, body, init) => request('POST', path, body, init),
    put: (path, body, init) => request('PUT', path, body, init),
    patch: (path, body, init) => request('PATCH', path, body, init),
    delete: (path, init) => request('DELETE', path, undefined, init),
    fetch: fetchFn,
  });
}

function contextFor(remote, params = []) {
  return {
    tenantId: tenant,
    plugin: { name: remote.name, version: remote.version },
    params: Object.freeze(Object.fromEntries(params)),
    sdk: {
      ui: {
        registerPanel(panel) { console.info('registerPanel', remote.name, panel?.id); },
        registerRoute(route) { console.info('registerRoute', remote.name, route?.path); },
      },
      events: {
        // The shell's own topics (`plugins.changed`), and the events the plugin's manifest
        // subscribes its UI to (`events.subscribe: [{type, shell: true}]`) whose type matches.
        subscribe(topic, handler) {
          if (!subscribers.has(topic)) subscribers.set(topic, new Set());
          subscribers.get(topic).add(handler);
          if (!eventSubscribers.has(remote.name)) eventSubscribers.set(remote.name, new Set());
          const entry = { pattern: topic, handler };
          eventSubscribers.get(remote.name).add(entry);
          return () => {
            subscribers.get(topic)?.delete(handler);
            eventSubscribers.get(remote.name)?.delete(entry);
          };
        },
      },
      http: httpFor(remote.name),
    },
  };
}

async function report(remote, ok, stage, error) {
  try {
    await fetch('/api/shell/reports', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ plugin: remote.name, version: remote.version, ok, stage, message: ok ? '' : String(error?.message ?? error) }),
    });
  } catch (e) { console.error('report failed', e); }
}

// === Cards ===

function card(remote, title) {
  const el = document.createElement('article');
  el.className = 'panel';
  el.dataset.plugin = remote.name;
  const h = document.createElement('h2');
  h.textContent = title; // always text, never HTML
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.textContent = `${remote.name} ${remote.version}`;
  const body = document.createElement('div');
  body.className = 'panel-body';
  el.append(h, meta, body);
  return { el, body };
}

function errorCard(remote, stage, error) {
  const { el, body } = card(remote, `${remote.name}: failed to ${stage}`);
  el.classList.add('error-card');
  el.dataset.error = stage;
  body.textContent = String(error?.message ?? error);
  return el;
}

// === Routes ===

/** `Module#Export` (a leading `./` tolerated) or a bare `Export` (= `Routes#Export`). */
function componentRef(component) {
  const s = String(component ?? '');
  const i = s.indexOf('#');
  const module = (i < 0 ? 'Routes' : s.slice(0, i)).replace(/^\.\//, '');
  const exportName = i < 0 ? s : s.slice(i + 1);
  if (!MODULE_NAME.test(module) || !EXPORT_NAME.test(exportName)) return null;
  return { module: `./${module}`, exportName };
}

/** A path's segments: no leading slash, one trailing slash ignored; `/` has none. */
function segments(path) {
  let s = path.startsWith('/') ? path.slice(1) : path;
  if (s.endsWith('/')) s = s.slice(0, -1);
  return s === '' ? [] : s.split('/');
}

const STATIC = 0;
const PARAM = 1;
const CATCH_ALL = 2;

/** A route path as parts: static text, `:name`, or a final `*`. */
function compileRoute(path) {
  const segs = segments(String(path ?? ''));
  return segs.map((s, i) => {
    if (s === '*' && i === segs.length - 1) return { kind: CATCH_ALL, name: '*' };
    if (s.startsWith(':') && s.length > 1) return { kind: PARAM, name: s.slice(1) };
    return { kind: STATIC, text: s };
  });
}

function decode(s) {
  try { return decodeURIComponent(s); } catch { return null; }
}

/** Matches path segments against a route's parts: `{ params: [[name, value]], rank }` or null. */
function matchRoute(parts, segs) {
  const params = [];
  const rank = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (p.kind === CATCH_ALL) {
      const rest = decode(segs.slice(i).join('/'));
      if (rest === null) return null;
      params.push(['*', rest]);
      rank.push(CATCH_ALL);
      return { params, rank };
    }
    if (i >= segs.length) return null;
    const value = decode(segs[i]);
    if (value === null) return null;
    if (p.kind === STATIC) {
      if (value !== p.text) return null;
    } else {
      if (value === '') return null;
      params.push([p.name, value]);
    }
    rank.push(p.kind);
  }
  return segs.length === parts.length ? { params, rank } : null;
}

/** Negative when rank `a` is more specific than `b`, segment by segment. */
function compareRank(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? -1;
    const y = b[i] ?? -1;
    if (x !== y) return x - y;
  }
  return 0;
}

function currentPath() {
  const p = location.hash.replace(/^#/, '');
  const q = p.indexOf('?');
  return (q < 0 ? p : p.slice(0, q)) || '/';
}

function hasParams(route) {
  return route.parts.some((p) => p.kind !== STATIC);
}

function closePage() {
  if (!page) return;
  try { page.unmount?.(); } catch (e) { console.error('unmount failed', e); }
  page = null;
  pageEl.replaceChildren();
}

function renderRoute() {
  const path = currentPath();
  const segs = segments(path);
  let best = null;
  for (const entry of mounted.values()) {
    if (entry.state !== 'ready') continue;
    for (const route of entry.routes) {
      const m = matchRoute(route.parts, segs);
      if (m && (!best || compareRank(m.rank, best.rank) < 0)) best = { entry, route, ...m };
    }
  }
  if (page && best && page.entry === best.entry && page.route === best.route && page.path === path) return;
  closePage();
  pageEl.hidden = !best;
  if (!best) return;
  const { entry, route, params } = best;
  page = { entry, route, path, unmount: null };
  try {
    if (!route.ref) throw new Error(`${route.component} is not a component reference (Module#Export)`);
    const comp = entry.modules.get(route.ref.module)?.[route.ref.exportName];
    if (!comp || typeof comp.mount !== 'function') throw new Error(`${route.ref.module} exports no component ${route.ref.exportName}`);
    const u = comp.mount(pageEl, contextFor(entry.remote, params));
    page.unmount = typeof u === 'function' ? u : null;
  } catch (e) {
    pageEl.replaceChildren(errorCard(entry.remote, 'render the page', e));
    report(entry.remote, false, 'route', e);
  }
}

// === Loading ===

function isCurrent(entry) {
  return mounted.get(entry.remote.name) === entry;
}

/** The exposed modules a remote's contributions need. */
function neededModules(remote) {
  const names = new Set();
  if ((remote.contributions?.panels ?? []).length > 0) names.add('./Panel');
  for (const r of remote.contributions?.routes ?? []) {
    const ref = componentRef(r.component);
    if (ref) names.add(ref.module);
  }
  return [...names];
}

function removeScripts(name) {
  for (const s of document.head.querySelectorAll(`script[data-plugin="${CSS.escape(name)}"]`)) s.remove();
}

/** Loads the remote entry with SRI from a fresh script element; resolves to the container. */
function loadContainer(remote) {
  removeScripts(remote.name);
  // Forget what an earlier attempt (or version) left: its container, and its bundler's
  // chunk-loading array (named after output.uniqueName, which remotes set to their scope).
  // A new runtime would otherwise adopt the chunks the old one loaded.
  for (const g of [remote.scope, `webpackChunk${remote.scope}`, `rspackChunk${remote.scope}`]) {
    try { window[g] = undefined; } catch { /* not ours to clear */ }
  }
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = remote.remoteEntry;
    s.integrity = remote.integrity;
    s.crossOrigin = 'anonymous';
    s.dataset.plugin = remote.name;
    s.onload = () => {
      const c = window[remote.scope];
      if (c && typeof c.get === 'function' && typeof c.init === 'function') resolve(c);
      else reject(new Error(`the remote entry does not define container ${remote.scope}`));
    };
    s.onerror = () => reject(new Error(`the remote entry ${remote.remoteEntry} did not load (integrity mismatch or network error)`));
    document.head.append(s);
  });
}

async function exposed(container, name) {
  const factory = await container.get(name);
  const mod = factory();
  return mod?.default && !mod.mount ? { ...mod.default, ...mod } : mod;
}

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`loading did not finish within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One load attempt: script, init, every needed module; then shows the plugin or its error. */
async function load(entry) {
  if (entry.loading || entry.state === 'ready' || !isCurrent(entry)) return;
  clearTimeout(entry.timer);
  entry.timer = null;
  entry.loading = true;
  entry.retrySoon = false;
  entry.startedAt = Date.now();
  const attempt = ++entry.attempt;
  const { remote } = entry;
  try {
    const modules = await withTimeout((async () => {
      const container = await loadContainer(remote);
      await container.init({});
      const names = neededModules(remote);
      const mods = await Promise.all(names.map((n) => exposed(container, n)));
      return new Map(names.map((n, i) => [n, mods[i]]));
    })(), ATTEMPT_TIMEOUT_MS);
    if (!isCurrent(entry) || attempt !== entry.attempt) return;
    entry.modules = modules;
    entry.state = 'ready';
    entry.failures = 0;
    entry.failureReported = false;
    show(entry);
  } catch (e) {
    if (!isCurrent(entry) || attempt !== entry.attempt) return;
    entry.state = 'failed';
    entry.failures += 1;
    showLoadError(entry, e);
    if (!entry.failureReported) {
      entry.failureReported = true;
      report(remote, false, 'load', e);
    }
    if (entry.retrySoon) setTimeout(() => load(entry), 0); // asked for while this attempt ran
    else schedule(entry);
  } finally {
    if (attempt === entry.attempt) entry.loading = false;
  }
}

function schedule(entry) {
  clearTimeout(entry.timer);
  const base = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(entry.failures - 1, 16));
  const delay = base * (0.9 + Math.random() * 0.2);
  entry.timer = setTimeout(() => load(entry), delay);
}

/**
 * Retries a failed load now (the list arrived again, or the event stream reconnected). While
 * an attempt runs, retries right after it should it fail, unless it began just now (a reconnect
 * brings both `open` and the list: one attempt for both).
 */
function retryNow(entry) {
  if (entry.state === 'ready') return;
  if (!entry.loading) load(entry);
  else if (Date.now() - entry.startedAt > 250) entry.retrySoon = true;
}

function showLoadError(entry, error) {
  const fresh = errorCard(entry.remote, 'load', error);
  const retry = document.createElement('div');
  retry.className = 'retry';
  retry.textContent = `Retrying automatically (failed ${entry.failures} time${entry.failures === 1 ? '' : 's'}).`;
  fresh.append(retry);
  if (entry.errorEl?.isConnected) entry.errorEl.replaceChildren(...fresh.childNodes);
  else {
    entry.errorEl = fresh;
    panelsEl.append(fresh);
  }
}

/** Mounts a loaded plugin's panels where its error card was (if any) and registers its routes. */
function show(entry) {
  const { remote } = entry;
  const anchor = entry.errorEl?.isConnected ? entry.errorEl : null;
  const place = (el) => (anchor ? anchor.before(el) : panelsEl.append(el));
  let failed = false;
  for (const p of remote.contributions?.panels ?? []) {
    const { el, body } = card(remote, p.title);
    el.dataset.panel = p.id;
    place(el);
    try {
      const unmount = entry.modules.get('./Panel').mount(body, contextFor(remote));
      entry.panels.push({ id: p.id, el, unmount: typeof unmount === 'function' ? unmount : null });
    } catch (e) {
      const err = errorCard(remote, 'mount', e);
      el.replaceWith(err);
      entry.panels.push({ id: p.id, el: err, unmount: null });
      failed = true;
      report(remote, false, 'mount', e);
    }
  }
  anchor?.remove();
  entry.errorEl = null;
  for (const r of remote.contributions?.routes ?? []) {
    const route = { ...r, parts: compileRoute(r.path), ref: componentRef(r.component) };
    entry.routes.push(route);
    if (hasParams(route)) continue; // the plugin links to it, with values
    const a = document.createElement('a');
    a.href = `#${r.path}`;
    a.textContent = r.path;
    a.dataset.plugin = remote.name;
    routesEl.append(a);
  }
  if (!failed && !entry.okReported) {
    entry.okReported = true;
    report(remote, true, 'mount');
  }
  renderRoute();
}

function mountPlugin(remote) {
  const entry = {
    remote, state: 'loading', modules: new Map(), panels: [], routes: [], errorEl: null,
    attempt: 0, failures: 0, timer: null, loading: false, startedAt: 0, retrySoon: false,
    failureReported: false, okReported: false,
  };
  mounted.set(remote.name, entry);
  load(entry);
}

function unmountPlugin(name) {
  const entry = mounted.get(name);
  if (!entry) return;
  mounted.delete(name);
  clearTimeout(entry.timer);
  if (page?.entry === entry) closePage();
  for (const p of entry.panels) {
    try { p.unmount?.(); } catch (e) { console.error('unmount failed', e); }
    p.el?.remove();
  }
  entry.errorEl?.remove();
  for (const a of routesEl.querySelectorAll(`a[data-plugin="${CSS.escape(name)}"]`)) a.remove();
  removeScripts(name);
  renderRoute();
}

/** What identifies a listed remote: a change of any of it means a fresh mount. */
function identity(r) {
  return JSON.stringify([r.version, r.scope, r.remoteEntry, r.integrity, r.contributions ?? null]);
}

function apply(list) {
  const next = new Map(list.map((r) => [r.name, r]));
  for (const [name, entry] of [...mounted]) {
    const r = next.get(name);
    if (!r || identity(r) !== identity(entry.remote)) unmountPlugin(name);
  }
  for (const r of list) {
    const entry = mounted.get(r.name);
    if (!entry) mountPlugin(r);
    else retryNow(entry);
  }
  emptyEl.hidden = list.length > 0;
  statusEl.textContent = `${list.length} plugin${list.length === 1 ? '' : 's'}`;
  publish('plugins.changed', list.map((r) => ({ name: r.name, version: r.version })));
}

window.addEventListener('hashchange', renderRoute);

// === The event stream ===
// The browser reconnects by itself after a network error; an answer it cannot use (an error
// status) closes the stream for good, so then the shell opens a new one, with backoff.

// === Who is signed in ===
// With sign-in configured the header names the user and offers to sign out; an anonymous
// shell shows nothing.
fetch('/api/me').then((r) => (r.ok ? r.json() : null)).then((me) => {
  if (me && typeof me.tenant === 'string') tenant = me.tenant;
  if (!me || me.sub === 'anonymous') return;
  document.getElementById('user-name').textContent = me.name;
  document.getElementById('user').hidden = false;
  document.getElementById('sign-out').addEventListener('click', async () => {
    const r = await fetch('/auth/logout', { method: 'POST' });
    if (!r.ok) return;
    // Signed out of the shell (not of the provider): say so, and offer to sign in again.
    document.getElementById('user').hidden = true;
    const main = document.querySelector('main');
    main.replaceChildren();
    const p = document.createElement('p');
    p.id = 'signed-out';
    p.textContent = 'You are signed out. ';
    const a = document.createElement('a');
    a.href = '/auth/login?return=/';
    a.textContent = 'Sign in again';
    p.append(a);
    main.append(p);
  });
}).catch(() => {});

let reconnects = 0;
function connect(broken = false) {
  const events = new EventSource('/api/shell/events');
  events.addEventListener('remotes', (e) => {
    let list;
    try { list = JSON.parse(e.data); } catch (err) { console.error('bad remotes event', err); return; }
    if (Array.isArray(list)) apply(list);
  });
  events.addEventListener('plugin-event', (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch (err) { console.error('bad plugin-event', err); return; }
    if (msg && typeof msg.plugin === 'string' && msg.event) deliverEvent(msg.plugin, msg.event);
  });
  events.addEventListener('open', () => {
    reconnects = 0;
    if (!broken) return;
    broken = false;
    for (const entry of mounted.values()) retryNow(entry);
  });
  events.addEventListener('error', () => {
    broken = true;
    statusEl.textContent = 'reconnecting ...';
    if (events.readyState === EventSource.CLOSED) {
      // A session that ended (sign-in configured): sign in again, then come back here.
      fetch('/api/me').then((r) => {
        if (r.status === 401) location.assign('/auth/login?return=' + encodeURIComponent(location.pathname + location.search + location.hash));
      }).catch(() => {});
      const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(reconnects++, 16));
      setTimeout(() => connect(true), delay * (0.9 + Math.random() * 0.2));
    }
  });
}
connect();
