/**
 * @tessera/plugin-sdk — the contract between a plugin's UI and the Tessera web shell.
 *
 * A plugin's Module Federation remote exposes `./Panel` (mounted once per panel declared in
 * plugin.yaml's `ui.contributions.panels`) and `./Routes` (one component per route's
 * `component`). The shell calls `mount(el, ctx)` and, when the plugin is disabled, degraded or
 * replaced by a new version, the function `mount` returned.
 */

/** Version of this SDK (what `compat.frontend_sdk` ranges are checked against). */
export const SDK_VERSION = '1.0.0';

/** Removes what `mount` rendered and releases what it holds. */
export type Unmount = () => void;

/** Renders into `el`; returns how to undo it. */
export type MountFn = (el: HTMLElement, ctx: PluginContext) => Unmount | void;

/** A panel module (`./Panel`). */
export interface Panel {
  mount: MountFn;
}

/** A page component of `./Routes`. */
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

/** What the shell offers a mounted contribution. */
export interface SDK {
  ui: {
    registerPanel(panel: { id: string; title: string }): void;
    registerRoute(route: { path: string; component: string }): void;
  };
  events: {
    /** Subscribes to a topic; returns the function that unsubscribes. */
    subscribe<K extends keyof Topics>(topic: K, handler: EventHandler<Topics[K]>): () => void;
    subscribe(topic: string, handler: EventHandler): () => void;
  };
}

/** Handed to every `mount`. */
export interface PluginContext {
  sdk: SDK;
  tenantId: string;
  plugin: { name: string; version: string };
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

/** Declares the `./Routes` module: one component per `component` name used in plugin.yaml. */
export function defineRoutes<T extends Record<string, Route>>(routes: T): Readonly<T> {
  if (!routes || typeof routes !== 'object') {
    throw new ContractError('defineRoutes: expects an object of named components');
  }
  const names = Object.keys(routes);
  if (names.length === 0) throw new ContractError('defineRoutes: no components');
  for (const name of names) {
    if (!/^[A-Za-z0-9_$./-]+$/.test(name)) {
      throw new ContractError(`defineRoutes: "${name}" is not a component name plugin.yaml can refer to`);
    }
    if (typeof routes[name]?.mount !== 'function') {
      throw new ContractError(`defineRoutes: component "${name}" needs a mount(el, ctx) function`);
    }
  }
  return Object.freeze({ ...routes });
}
