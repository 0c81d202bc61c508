// The hello plugin's panel (exposed as ./Panel). The shell calls mount(el, ctx) and the returned
// function when it removes the panel. Text is set with textContent, never as HTML.
import type { PluginContext, Unmount } from './context';

export function mount(el: HTMLElement, ctx: PluginContext): Unmount {
  const box = document.createElement('section');
  box.className = 'hello-panel';
  box.dataset.plugin = ctx.plugin.name;
  const title = document.createElement('h3');
  title.textContent = 'Hello from the hello plugin';
  const detail = document.createElement('p');
  detail.textContent = `${ctx.plugin.name} ${ctx.plugin.version}, a Module Federation remote served through the core.`;
  box.append(title, detail);
  el.append(box);
  return () => box.remove();
}

export default { mount };
