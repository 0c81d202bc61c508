// Builds the remote into dist/: remoteEntry.js (container `plugin_hello`, library type `var`,
// publicPath `auto`) plus its chunks. Prints what it wrote; exits non-zero on any error.
// Subresource Integrity: the shell loads remoteEntry.js with the sha384 the core pinned, and
// remoteEntry.js pins the sha384 of every chunk it loads (SubresourceIntegrityPlugin), so a
// chunk whose bytes differ from the build's is refused by the browser. Chunk names carry a
// content hash, so a rebuilt chunk gets a new URL (and remoteEntry.js, which names it, new
// bytes); remoteEntry.js keeps its name, the one plugin.yaml's ui.remotePath points at.
// ModuleFederationPluginV1 is rspack's webpack-5-compatible container plugin: the classic
// container protocol (init(shareScope), get('./Panel')) with no extra runtime package.
import { rspack } from '@rspack/core';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const started = Date.now();
console.log('building the hello UI remote with rspack ...');

const compiler = rspack({
  context: here,
  mode: 'production',
  devtool: false,
  entry: {},
  output: {
    path: path.join(here, 'dist'),
    publicPath: 'auto',
    chunkFilename: '[id].[contenthash].js',
    // Chunk script tags carry `integrity` and `crossorigin="anonymous"` (required for SRI).
    crossOriginLoading: 'anonymous',
    clean: true,
    uniqueName: 'plugin_hello',
  },
  resolve: {
    extensions: ['.ts', '.js'],
    // In this repository the SDK comes from its source; a plugin outside it installs
    // @tessera/plugin-sdk from npm and drops this alias.
    alias: { '@tessera/plugin-sdk': path.join(here, '../../sdk-web/src/index.ts') },
  },
  module: {
    rules: [
      {
        test: /\.ts$/,
        loader: 'builtin:swc-loader',
        options: { jsc: { parser: { syntax: 'typescript' }, target: 'es2020' } },
        type: 'javascript/auto',
      },
    ],
  },
  plugins: [
    new rspack.container.ModuleFederationPluginV1({
      name: 'plugin_hello',
      filename: 'remoteEntry.js',
      library: { type: 'var', name: 'plugin_hello' },
      exposes: { './Panel': './src/Panel.ts', './Routes': './src/Routes.ts' },
    }),
    // No HTML page here: the integrities go into the chunk loader of remoteEntry.js.
    new rspack.SubresourceIntegrityPlugin({ hashFuncNames: ['sha384'], htmlPlugin: false, enabled: true }),
  ],
});

// `node build.mjs --watch` rebuilds on every change of src/ (the UI dev server of
// docker-compose.plugin.yml); a failed rebuild is reported and the watch goes on.
const watching = process.argv.includes('--watch');

function report(err, stats) {
  if (err) {
    console.error(err);
    return false;
  }
  if (stats.hasErrors()) {
    console.error(stats.toString({ all: false, errors: true }));
    return false;
  }
  const assets = stats.toJson({ assets: true }).assets ?? [];
  for (const a of assets) console.log(`  dist/${a.name}  ${a.size} bytes`);
  return true;
}

if (watching) {
  compiler.watch({ aggregateTimeout: 200 }, (err, stats) => {
    if (report(err, stats)) console.log(`rebuilt at ${new Date().toISOString()}; watching src/`);
  });
} else {
  compiler.run((err, stats) => {
    if (!report(err, stats)) process.exit(1);
    console.log(`done in ${Date.now() - started} ms`);
    compiler.close(() => {});
  });
}
