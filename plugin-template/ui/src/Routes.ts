// The hello plugin's pages (exposed as ./Routes): one component per route in plugin.yaml's
// ui.contributions.routes, named there as `Routes#<export>` (`component: Routes#HelloPage`).
// A route with parameters (`/hello/:name`) gets their values in `ctx.params`, already decoded.
// Text is set with textContent, never as HTML: a parameter is whatever the URL says.
import { defineRoutes, type PluginContext, type Unmount } from '@tessera/plugin-sdk';

/** `/hello` */
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

/** `/hello/:name` */
export const GreetingPage = {
  mount(el: HTMLElement, ctx: PluginContext): Unmount {
    const page = document.createElement('article');
    page.className = 'greeting-page';
    const h = document.createElement('h2');
    h.textContent = `Hello, ${ctx.params.name ?? 'nobody'}!`;
    page.append(h);
    el.append(page);
    return () => page.remove();
  },
};

export default defineRoutes({ HelloPage, GreetingPage });
