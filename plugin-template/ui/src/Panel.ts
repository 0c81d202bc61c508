// The hello plugin's panel (exposed as ./Panel). The shell calls mount(el, ctx) and the returned
// function when it removes the panel. Text is set with textContent, never as HTML.
//
// It calls its own backend through the core with ctx.sdk.http: `get('/v1/greeting')` reaches
// the backend's `GET /api/v1/greeting` (basePath /api) with a call token for the signed-in
// user, and `/v1/caller` answers who the backend was told is calling.
import { definePanel, isHttpError, type PluginContext, type Unmount } from '@tessera/plugin-sdk';

interface Greeting {
  greeting: string;
}

interface CallerInfo {
  sub: string;
  tenant: string;
}

export function mount(el: HTMLElement, ctx: PluginContext): Unmount {
  const box = document.createElement('section');
  box.className = 'hello-panel';
  box.dataset.plugin = ctx.plugin.name;
  const title = document.createElement('h3');
  title.textContent = 'Hello from the hello plugin';
  const greeting = document.createElement('p');
  greeting.className = 'hello-greeting';
  greeting.textContent = 'Asking the backend…';
  const caller = document.createElement('p');
  caller.className = 'hello-caller';
  const detail = document.createElement('p');
  detail.textContent = `${ctx.plugin.name} ${ctx.plugin.version}, a Module Federation remote served through the core.`;
  // A link to the parameterised page (`/hello/:name` in plugin.yaml): the shell gives such a
  // route no nav link of its own, so the plugin links to it.
  const link = document.createElement('a');
  link.href = '#/hello/world';
  link.textContent = 'Greet the world';
  box.append(title, greeting, caller, detail, link);
  el.append(box);

  let mounted = true;
  Promise.all([
    ctx.sdk.http.get<Greeting>('/v1/greeting'),
    ctx.sdk.http.get<CallerInfo>('/v1/caller'),
  ]).then(
    ([g, who]) => {
      if (!mounted) return;
      greeting.textContent = g.greeting;
      caller.textContent = `The backend says you are ${who.sub} (tenant ${who.tenant}).`;
    },
    (e: unknown) => {
      if (!mounted) return;
      box.dataset.error = isHttpError(e) ? e.code : 'network';
      greeting.textContent = isHttpError(e)
        ? `The backend did not answer: ${e.code} (HTTP ${e.status})`
        : `The backend did not answer: ${String(e)}`;
    },
  );
  // Follow the shell's plugin list while mounted.
  const unsubscribe = ctx.sdk.events.subscribe('plugins.changed', (list) => {
    box.dataset.plugins = String(list.length);
  });
  return () => {
    mounted = false;
    unsubscribe();
    box.remove();
  };
}

export default definePanel({ mount });
