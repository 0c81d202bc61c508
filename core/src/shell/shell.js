// The reference shell: loads every Ready plugin's Module Federation remote through the core,
// mounts its panels and pages, and follows the list live (Server-Sent Events). Each remote is
// loaded with a script tag carrying its sha384 integrity, so tampered bytes never run; each
// contribution is isolated, so one that fails shows an error card and the rest keep working,
// and the failure is reported to the core (the UiLoaded condition).

const panelsEl = document.getElementById('panels');
const routesEl = document.getElementById('routes');
const pageEl = document.getElementById('page');
const emptyEl = document.getElementById('empty');
const statusEl = document.getElementById('status');

/** name -> { remote, container, panels: [{id, el, unmount}], routes: [{path, component}] } */
const mounted = new Map();
const subscribers = new Map(); // topic -> Set(handler)
let pageUnmount = null;

function publish(topic, payload) {
  for (const h of subscribers.get(topic) ?? []) {
    try { h(payload); } catch (e) { console.error('subscriber failed', e); }
  }
}

function contextFor(remote) {
  return {
    tenantId: 'default',
    plugin: { name: remote.name, version: remote.version },
    sdk: {
      ui: {
        registerPanel(panel) { console.info('registerPanel', remote.name, panel?.id); },
        registerRoute(route) { console.info('registerRoute', remote.name, route?.path); },
      },
      events: {
        subscribe(topic, handler) {
          if (!subscribers.has(topic)) subscribers.set(topic, new Set());
          subscribers.get(topic).add(handler);
          return () => subscribers.get(topic)?.delete(handler);
        },
      },
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

/** Loads the remote entry with SRI; resolves to the container. */
function loadContainer(remote) {
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

async function mountPlugin(remote) {
  const entry = { remote, container: null, panels: [], routes: [] };
  mounted.set(remote.name, entry);
  const panels = remote.contributions?.panels ?? [];
  const routes = remote.contributions?.routes ?? [];
  let container;
  try {
    container = await loadContainer(remote);
    await container.init({});
    entry.container = container;
  } catch (e) {
    const el = errorCard(remote, 'load', e);
    panelsEl.append(el);
    entry.panels.push({ id: `${remote.name}.error`, el, unmount: null });
    report(remote, false, 'load', e);
    return;
  }
  if (mounted.get(remote.name) !== entry) return; // replaced meanwhile
  let failed = false;
  for (const p of panels) {
    const { el, body } = card(remote, p.title);
    el.dataset.panel = p.id;
    panelsEl.append(el);
    try {
      const mod = await exposed(container, './Panel');
      const unmount = mod.mount(body, contextFor(remote));
      entry.panels.push({ id: p.id, el, unmount: typeof unmount === 'function' ? unmount : null });
    } catch (e) {
      el.replaceWith(errorCard(remote, 'mount', e));
      entry.panels.push({ id: p.id, el: panelsEl.querySelector(`[data-plugin="${CSS.escape(remote.name)}"].error-card`), unmount: null });
      failed = true;
      report(remote, false, 'mount', e);
    }
  }
  for (const r of routes) {
    const a = document.createElement('a');
    a.href = `#${r.path}`;
    a.textContent = r.path;
    a.dataset.plugin = remote.name;
    routesEl.append(a);
    entry.routes.push(r);
  }
  if (!failed) report(remote, true, 'mount');
  renderRoute();
}

function unmountPlugin(name) {
  const entry = mounted.get(name);
  if (!entry) return;
  mounted.delete(name);
  for (const p of entry.panels) {
    try { p.unmount?.(); } catch (e) { console.error('unmount failed', e); }
    p.el?.remove();
  }
  for (const a of routesEl.querySelectorAll(`a[data-plugin="${CSS.escape(name)}"]`)) a.remove();
  for (const s of document.head.querySelectorAll(`script[data-plugin="${CSS.escape(name)}"]`)) s.remove();
  renderRoute();
}

async function renderRoute() {
  const path = location.hash.replace(/^#/, '') || '/';
  if (pageUnmount) { try { pageUnmount(); } catch (e) { console.error(e); } pageUnmount = null; }
  pageEl.replaceChildren();
  let found = null;
  for (const entry of mounted.values()) {
    const r = entry.routes.find((r) => r.path === path);
    if (r && entry.container) { found = { entry, r }; break; }
  }
  pageEl.hidden = !found;
  if (!found) return;
  const { entry, r } = found;
  try {
    const mod = await exposed(entry.container, './Routes');
    const comp = mod[r.component];
    if (!comp || typeof comp.mount !== 'function') throw new Error(`./Routes exports no component ${r.component}`);
    const u = comp.mount(pageEl, contextFor(entry.remote));
    pageUnmount = typeof u === 'function' ? u : null;
  } catch (e) {
    pageEl.replaceChildren(errorCard(entry.remote, 'render the page', e));
    report(entry.remote, false, 'route', e);
  }
}

function apply(list) {
  const next = new Map(list.map((r) => [r.name, r]));
  for (const [name, entry] of [...mounted]) {
    const r = next.get(name);
    if (!r || r.version !== entry.remote.version || r.integrity !== entry.remote.integrity) unmountPlugin(name);
  }
  for (const r of list) if (!mounted.has(r.name)) mountPlugin(r);
  emptyEl.hidden = list.length > 0;
  statusEl.textContent = `${list.length} plugin${list.length === 1 ? '' : 's'}`;
  publish('plugins.changed', list.map((r) => ({ name: r.name, version: r.version })));
}

window.addEventListener('hashchange', renderRoute);

const events = new EventSource('/api/shell/events');
events.addEventListener('remotes', (e) => apply(JSON.parse(e.data)));
events.onerror = () => { statusEl.textContent = 'reconnecting ...'; };
