// The panel example of docs/events.md, type-checked with the SDK's types.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { definePanel, typeMatches, type CloudEvent, type PluginContext } from '../src/index.js';

interface Invoice { invoice: string; total_cents: number }

export function mount(el: HTMLElement, ctx: PluginContext) {
  const list: string[] = [];
  const off = ctx.sdk.events.subscribe<Invoice>('billing.invoice.*', (event: CloudEvent<Invoice>) => {
    list.push(`${event.data.invoice}: ${event.data.total_cents / 100}`);
  });
  const offTopic = ctx.sdk.events.subscribe('plugins.changed', (plugins) => { list.push(String(plugins.length)); });
  return () => { off(); offTopic(); void el; };
}

test('the docs panel subscribes with the SDK types', () => {
  const handlers: Array<[string, (e: unknown) => void]> = [];
  const ctx = {
    sdk: { events: { subscribe: (t: string, h: (e: unknown) => void) => { handlers.push([t, h]); return () => {}; } } },
  } as unknown as PluginContext;
  const unmount = definePanel({ mount }).mount({} as HTMLElement, ctx);
  assert.deepEqual(handlers.map(([t]) => t), ['billing.invoice.*', 'plugins.changed']);
  assert.ok(typeMatches(handlers[0][0], 'billing.invoice.created'));
  if (typeof unmount === 'function') unmount();
});
