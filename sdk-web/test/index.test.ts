import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  definePanel,
  defineRoutes,
  defineModule,
  ContractError,
  EXPORT_NAME,
  SDK_VERSION,
  HttpError,
  isHttpError,
  typeMatches,
  type PluginContext,
  type Route,
} from '../src/index.js';

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

test('defineRoutes takes JavaScript identifiers as export names, nothing else', () => {
  const page: Route = { mount: () => undefined };
  const r = defineRoutes({ GreetingPage: page, _private: page, $dollar: page, Page2: page });
  assert.deepEqual(Object.keys(r), ['GreetingPage', '_private', '$dollar', 'Page2']);
  assert.ok(Object.isFrozen(r));
  // Module paths and `Module#Export` belong in plugin.yaml, not in the module's export names.
  for (const bad of ['Routes#HelloPage', './Routes', 'a.b', 'a-b', 'a/b', '2fast', '', 'é']) {
    assert.throws(() => defineRoutes({ [bad]: page }), /defineRoutes: ".*" is not a component name/, bad);
  }
  assert.equal(EXPORT_NAME.test('HelloPage'), true);
  assert.equal(EXPORT_NAME.test('Hello Page'), false);
});

test('defineModule declares another exposed module with the same checks', () => {
  const MonthlyPage: Route = { mount: () => undefined };
  const m = defineModule({ MonthlyPage });
  assert.equal(m.MonthlyPage, MonthlyPage);
  assert.ok(Object.isFrozen(m));
  assert.throws(() => defineModule({}), /defineModule: no components/);
  assert.throws(() => defineModule(null as never), ContractError);
  assert.throws(() => defineModule({ MonthlyPage: {} as never }), /defineModule: component "MonthlyPage"/);
  assert.throws(() => defineModule({ 'Reports#MonthlyPage': MonthlyPage }), /defineModule: "Reports#MonthlyPage" is not a component name/);
});

test('a component reads its route parameters from ctx.params', () => {
  const seen: string[] = [];
  const routes = defineRoutes({
    ItemPage: {
      mount: (_el, ctx) => {
        seen.push(`${ctx.plugin.name}:${ctx.params.sku}:${ctx.params['*'] ?? ''}`);
      },
    },
  });
  const ctx: PluginContext = {
    sdk: {} as PluginContext['sdk'],
    tenantId: 'default',
    plugin: { name: 'inventory', version: '1.0.0' },
    params: Object.freeze({ sku: 'A-42' }),
  };
  routes.ItemPage.mount({} as HTMLElement, ctx);
  assert.deepEqual(seen, ['inventory:A-42:']);
});

test('the SDK version is the one the core speaks, and the package version', () => {
  assert.equal(SDK_VERSION, '1.3.0');
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  assert.equal(pkg.version, SDK_VERSION);
});

test('HttpError is recognised by shape, as the shell throws it', () => {
  const own = new HttpError('plugin hello is not being served', 503, 'plugin_not_ready', [], 'rid-1');
  assert.ok(own instanceof HttpError);
  assert.ok(own instanceof Error);
  assert.equal(own.code, 'plugin_not_ready');
  // What the shell throws: a plain Error shaped as an HttpError.
  const thrown = Object.assign(new Error('upstream'), { name: 'HttpError', status: 502, code: 'upstream_failed', details: [] });
  assert.ok(thrown instanceof HttpError);
  assert.ok(isHttpError(thrown));
  assert.ok(!(new Error('x') instanceof HttpError));
  assert.ok(!isHttpError({ name: 'HttpError', status: '500', code: 'x' }));
  assert.ok(!isHttpError(null));
});

test('event types match patterns as the core matches subscriptions', () => {
  const cases: Array<[string, string, boolean]> = [
    ['billing.invoice.created', 'billing.invoice.created', true],
    ['billing.invoice.*', 'billing.invoice.created', true],
    ['billing.invoice.*', 'billing.invoice.created.v2', false],
    ['billing.invoice.*', 'billing.invoice', false],
    ['billing.>', 'billing.invoice.created', true],
    ['billing.>', 'billing', false],
    ['*.invoice.created', 'shop.invoice.created', true],
    ['billing.invoice', 'billing.invoice.created', false],
    ['plugins.changed', 'plugins.changed', true],
  ];
  for (const [pattern, type, want] of cases) assert.equal(typeMatches(pattern, type), want, `${pattern} vs ${type}`);
});
