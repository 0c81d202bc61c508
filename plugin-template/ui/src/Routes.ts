// The hello plugin's pages (exposed as ./Routes): one component per route in plugin.yaml's
// ui.contributions.routes, by the name given there (`component: HelloPage`).
import { defineRoutes, type PluginContext, type Unmount } from '@tessera/plugin-sdk';

export const HelloPage = {
  mount(el: HTMLElement, ctx: PluginContext): Unmount {
    const page = document.createElement('article');
    page.className = 'hello-page';
    const h = document.createElement('h2');
    h.textContent = 'Hello page';
    const p = document.createElement('p');
    p.textContent = `Rendered by ${ctx.plugin.name} ${ctx.plugin.version}.`;
    page.append(h, p);
    el.append(page);
    return () => page.remove();
  },
};

export default defineRoutes({ HelloPage });
