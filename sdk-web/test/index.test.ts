import { test } from 'node:test';
import assert from 'node:assert/strict';
import { definePanel, defineRoutes, ContractError, SDK_VERSION } from '../src/index.js';

test('definePanel keeps mount and freezes the module', () => {
  let calls = 0;
  const p = definePanel({ mount: () => { calls++; return () => {}; } });
  p.mount({} as HTMLElement, {} as never);
  assert.equal(calls, 1);
  assert.ok(Object.isFrozen(p));
});

test('definePanel refuses a module without mount', () => {
  assert.throws(() => definePanel({} as never), ContractError);
  assert.throws(() => definePanel({ mount: 'x' } as never), /mount\(el, ctx\)/);
});

test('defineRoutes checks every component and its name', () => {
  const r = defineRoutes({ HelloPage: { mount: () => undefined } });
  assert.deepEqual(Object.keys(r), ['HelloPage']);
  assert.throws(() => defineRoutes({}), /no components/);
  assert.throws(() => defineRoutes({ Bad: {} as never }), /component "Bad"/);
  assert.throws(() => defineRoutes({ 'has space': { mount: () => undefined } }), /not a component name/);
});

test('the SDK version is the one the core speaks', () => {
  assert.equal(SDK_VERSION, '1.0.0');
});
