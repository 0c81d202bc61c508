/**
 * @tessera/plugin-sdk — the contract between a plugin's UI and the Tessera web shell.
 *
 * A plugin's UI is a Module Federation remote (`remoteEntry.js`). It exposes `./Panel`, mounted
 * once per panel declared in plugin.yaml's `ui.contributions.panels`, and one or more modules
 * of page components for `ui.contributions.routes`. The shell calls `mount(el, ctx)` and, when
 * the plugin is disabled, degraded or replaced by a new version, the function `mount` returned.
 *
 * ## Routes: `Module#Export`
 *
 * A route's `component` names an export of an exposed module: `Reports#MonthlyPage` is the
 * export `MonthlyPage` of the exposed module `./Reports`; a bare `HelloPage` means
 * `Routes#HelloPage`. `./Routes` is declared with {@link defineRoutes}; any other module with
 * {@link defineModule}. To add `./Reports`:
 *
 * ```ts
 * // src/Reports.ts
 * import { defineModule, type PluginContext } from '@tessera/plugin-sdk';
 * export const MonthlyPage = {
 *   mount(el: HTMLElement, ctx: PluginContext) {
 *     const h = document.createElement('h2');
 *     h.textContent = `Report for ${ctx.params.month}`; // text, never HTML
 *     el.append(h);
 *     return () => h.remove();
 *   },
 * };
 * export default defineModule({ MonthlyPage });
 * ```
 *
 * expose it next to the others in the bundler's Module Federation options:
 *
 * ```js
 * exposes: { './Panel': './src/Panel.ts', './Routes': './src/Routes.ts', './Reports': './src/Reports.ts' }
 * ```
 *
 * and refer to it from plugin.yaml:
 *
 * ```yaml
 * ui:
 *   contributions:
 *     routes:
 *       - path: /reports/:month
 *         component: Reports#MonthlyPage
 * ```
 *
 * ## Route parameters
 *
 * A route path may hold `:name` segments and end in a catch-all `*` (`/items/:sku`,
 * `/docs/*`). The shell matches the location's hash path against them (static segments before
 * parameters, parameters before the catch-all; a trailing slash ignored), decodes the values
 * and hands them to the component as `ctx.params` (`{ sku: 'A-42' }`; the catch-all as
 * `ctx.params['*']`). A route with parameters gets no link in the shell's navigation: the
 * plugin links to it (`<a href="#/items/A-42">`). Values come from the URL: render them as
 * text (`textContent`), never as HTML.
 *
 * ## Building the remote
 *
 * The container is a global named `plugin_<name>` (`-` as `_`), library type `var`,
 * `publicPath: 'auto'`. Set the bundler's `output.uniqueName` to that name too: when the shell
 * loads a new build of a plugin into an open page, it clears that build's container and its
 * chunk-loading global (`webpackChunk<uniqueName>` / `rspackChunk<uniqueName>`), so the new
 * runtime never adopts chunks of the old one. Name chunks by content hash
 * (`chunkFilename: '[id].[contenthash].js'`) and pin them with Subresource Integrity
 * (`crossOriginLoading: 'anonymous'` and the bundler's SRI plugin, sha384): the core pins
 * `remoteEntry.js` and `remoteEntry.js` pins every chunk. The template plugin's
 * `ui/build.mjs` does all of this.
 */

/** Version of this SDK (what `compat.frontend_sdk` ranges are checked against). */
export const SDK_VERSION = '1.3.0';

/** Removes what `mount` rendered and releases what it holds. */
export type Unmount = () => void;

/** Renders into `el`; returns how to undo it. */
export type MountFn = (el: HTMLElement, ctx: PluginContext) => Unmount | void;

/** A panel module (`./Panel`). */
export interface Panel {
  mount: MountFn;
}

/** A page component: an export of `./Routes` or of another module declared with `defineModule`. */
export interface Route {
  mount: MountFn;
}

/** Handles a shell-level event. */
export type EventHandler<T = unknown> = (payload: T) => void;

/** Shell-level topics and their payloads. */
export interface Topics {
  /** The list of mounted plugins changed. */
  'plugins.changed': Array<{ name: string; version: string }>;
}

/**
 * An event from the core's event bus, as a `shell: true` subscription of the plugin's manifest
 * delivers it (a CloudEvents 1.0 envelope). Since SDK 1.3.0.
 */
export interface CloudEvent<T = unknown> {
  specversion: '1.0';
  /** Unique per source. */
  id: string;
  /** `/plugins/<publisher>`. */
  source: string;
  /** e.g. `billing.invoice.created`. */
  type: string;
  subject?: string;
  /** When the core accepted it (RFC 3339). */
  time: string;
  /** The tenant it belongs to; a shell only receives its user's tenant's events and untenanted ones. */
  tenant?: string;
  datacontenttype: 'application/json';
  data: T;
}

/**
 * Whether event type `type` matches `pattern`, as the core matches subscriptions: `*` stands
 * for one dot-separated segment, a last `>` for the rest (`billing.invoice.*`, `billing.>`).
 * Since SDK 1.3.0.
 */
export function typeMatches(pattern: string, type: string): boolean {
  const p = pattern.split('.');
  const t = type.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>' && i === p.length - 1) return t.length > i;
    if (i >= t.length || (p[i] !== '*' && p[i] !== t[i])) return false;
  }
  return p.length === t.length;
}

/** Options of a call through `sdk.http`: those of `fetch`, but the method and body. */
export type HttpInit = Omit<RequestInit, 'method' | 'body'>;

/**
 * Calls to the plugin's own backend, through the core: `get('/v1/items')` is
 * `GET /api/proxy/<plugin>/v1/items`, which the core passes to `backendUrl + basePath +
 * '/v1/items'` with a call token for the signed-in user. Bodies other than strings, `FormData`,
 * `Blob`, buffers, `URLSearchParams` and streams are sent as JSON; JSON answers are parsed, others
 * returned as text. A status other than 2xx rejects with an {@link HttpError} carrying the error
 * envelope's `code` (the core's, such as `plugin_not_ready` while the plugin is disabled, or the
 * plugin's own). `fetch` returns the `Response` as it is. Since SDK 1.2.0.
 */
export interface HttpClient {
  get<T = unknown>(path: string, init?: HttpInit): Promise<T>;
  post<T = unknown>(path: string, body?: unknown, init?: HttpInit): Promise<T>;
  put<T = unknown>(path: string, body?: unknown, init?: HttpInit): Promise<T>;
  patch<T = unknown>(path: string, body?: unknown, init?: HttpInit): Promise<T>;
  delete<T = unknown>(path: string, init?: HttpInit): Promise<T>;
  fetch(path: string, init?: RequestInit): Promise<Response>;
}

/**
 * A call through `sdk.http` that did not succeed. `instanceof HttpError` holds for what the
 * shell throws (it is recognised by shape, so it works across bundles). Since SDK 1.2.0.
 */
export class HttpError extends Error {
  /** The HTTP status. */
  readonly status: number;
  /** The envelope's `code` (`http_<status>` when the answer had none). */
  readonly code: string;
  /** The envelope's `details`. */
  readonly details: unknown[];
  /** The request id, to find the call in the core's and the plugin's logs. */
  readonly requestId: string | null;

  constructor(message: string, status: number, code: string, details: unknown[] = [], requestId: string | null = null) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.requestId = requestId;
  }

  static [Symbol.hasInstance](value: unknown): boolean {
    return isHttpError(value);
  }
}

/** Whether `e` is an {@link HttpError} (thrown by any copy of the SDK or by the shell). */
export function isHttpError(e: unknown): e is HttpError {
  if (typeof e !== 'object' || e === null) return false;
  const v = e as { name?: unknown; status?: unknown; code?: unknown };
  return v.name === 'HttpError' && typeof v.status === 'number' && typeof v.code === 'string';
}

/** What the shell offers a mounted contribution. */
export interface SDK {
  ui: {
    registerPanel(panel: { id: string; title: string }): void;
    registerRoute(route: { path: string; component: string }): void;
  };
  events: {
    /**
     * Subscribes to a shell topic (`plugins.changed`), or to events of the core's bus: the
     * handler receives each event whose type matches `type` (`*` one segment, a last `>` the
     * rest) among those the plugin's manifest subscribes its UI to
     * (`events.subscribe: [{type, shell: true}]`), live, while the page is open. Returns the
     * function that unsubscribes; call it from the `mount`'s cleanup.
     */
    subscribe<K extends keyof Topics>(topic: K, handler: EventHandler<Topics[K]>): () => void;
    subscribe<T = unknown>(type: string, handler: EventHandler<CloudEvent<T>>): () => void;
  };
  /** The plugin's own backend, through the core. Since SDK 1.2.0. */
  http: HttpClient;
}

/** Handed to every `mount`. */
export interface PluginContext {
  sdk: SDK;
  tenantId: string;
  plugin: { name: string; version: string };
  /**
   * The route's parameters, decoded: `/items/:sku` at `#/items/A-42` gives `{ sku: 'A-42' }`,
   * a catch-all `*` its rest under `'*'`. Empty for panels and routes without parameters.
   * Since SDK 1.1.0.
   */
  params: Readonly<Record<string, string>>;
}

/** Thrown by the helpers when a module does not meet the contract. */
export class ContractError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ContractError';
  }
}

/** Declares the `./Panel` module, checking its shape when the module loads. */
export function definePanel(panel: Panel): Panel {
  if (!panel || typeof panel.mount !== 'function') {
    throw new ContractError('definePanel: a panel needs a mount(el, ctx) function');
  }
  return Object.freeze({ mount: panel.mount });
}

/** What an export name must look like: a JavaScript identifier (the `Export` of `Module#Export`). */
export const EXPORT_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function checkComponents<T extends Record<string, Route>>(helper: string, components: T): Readonly<T> {
  if (!components || typeof components !== 'object') {
    throw new ContractError(`${helper}: expects an object of named components`);
  }
  const names = Object.keys(components);
  if (names.length === 0) throw new ContractError(`${helper}: no components`);
  for (const name of names) {
    if (!EXPORT_NAME.test(name)) {
      throw new ContractError(
        `${helper}: "${name}" is not a component name plugin.yaml can refer to (a JavaScript identifier, as in Routes#HelloPage)`,
      );
    }
    if (typeof components[name]?.mount !== 'function') {
      throw new ContractError(`${helper}: component "${name}" needs a mount(el, ctx) function`);
    }
  }
  return Object.freeze({ ...components });
}

/**
 * Declares the `./Routes` module: one component per export name used in plugin.yaml
 * (`component: Routes#HelloPage`, or the bare `HelloPage`). Export the components by name too
 * (`export const HelloPage = ...`), and this object as the default export.
 */
export function defineRoutes<T extends Record<string, Route>>(routes: T): Readonly<T> {
  return checkComponents('defineRoutes', routes);
}

/**
 * Declares another exposed module of page components, e.g. `./Reports` for
 * `component: Reports#MonthlyPage` (see the example at the top of this package). Same checks
 * as {@link defineRoutes}; the module must also be listed in the remote's `exposes`.
 */
export function defineModule<T extends Record<string, Route>>(components: T): Readonly<T> {
  return checkComponents('defineModule', components);
}
