// The hello plugin's panel (exposed as ./Panel). The shell calls mount(el, ctx) and the returned
// function when it removes the panel. Text is set with textContent, never as HTML.
import { definePanel, type PluginContext, type Unmount } from '@tessera/plugin-sdk';

export function mount(el: HTMLElement, ctx: PluginContext): Unmount {
  const box = document.createElement('section');
  box.className = 'hello-panel';
  box.dataset.plugin = ctx.plugin.name;
  const title = document.createElement('h3');
  title.textContent = 'Hello from the hello plugin';
  const detail = document.createElement('p');
  detail.textContent = `${ctx.plugin.name} ${ctx.plugin.version}, a Module Federation remote served through the core.`;
  // A link to the parameterised page (`/hello/:name` in plugin.yaml): the shell gives such a
  // route no nav link of its own, so the plugin links to it.
  const link = document.createElement('a');
  link.href = '#/hello/world';
  link.textContent = 'Greet the world';
  box.append(title, detail, link);
  el.append(box);
  // Follow the shell's plugin list while mounted.
  const unsubscribe = ctx.sdk.events.subscribe('plugins.changed', (list) => {
    box.dataset.plugins = String(list.length);
  });
  return () => {
    unsubscribe();
    box.remove();
  };
}

export default definePanel({ mount });
