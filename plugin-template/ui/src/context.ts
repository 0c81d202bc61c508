// What the shell hands a panel or page when it mounts it. The published types will come from
// @tessera/plugin-sdk; until then the template declares the shape it relies on.
export interface PluginContext {
  plugin: { name: string; version: string };
  tenantId?: string;
  sdk?: unknown;
}

/** A mounted contribution returns a function that unmounts it. */
export type Unmount = () => void;
