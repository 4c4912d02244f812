/**
 * What the agent loads: on a board every module costs memory for the agent's
 * whole life (node:tls alone is 7 MB on the single binary's Node 24). The
 * agent's entry point and a TCP connection load neither TLS, zlib nor npm
 * tar, and no process loads cbor-x's native addon; TLS and zlib load once a
 * tls endpoint or a deflated body needs them. Checked in a fresh Node
 * process by the modules it has loaded, not by its memory.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/support';

interface Loaded {
  builtins: string[];
  files: string[];
}

interface Footprint {
  atStart: Loaded;
  onTcp: Loaded;
  onTls: Loaded;
  onDeflate: Loaded;
}

/** Runs the agent's entry point in a fresh Node, then a TCP and a TLS connection and a deflated body; what was loaded after each. */
function footprint(): Footprint {
  const build = (module: string) => JSON.stringify(path.join(REPO_ROOT, 'build', module));
  const script = `
    const net = require('node:net');
    const watched = /^NativeModule (tls|zlib)$/;
    const loaded = () => ({
      builtins: process.moduleLoadList.filter((m) => watched.test(m)).map((m) => m.slice('NativeModule '.length)),
      files: Object.keys(require.cache).filter((f) => /[\\\\/]node_modules[\\\\/](tar|cbor-extract)[\\\\/]/.test(f)).map((f) => f.includes('tar') ? 'tar' : 'cbor-extract'),
    });
    require(${build('agent/environment.js')});
    require(${build('agent/cli.js')});
    const { openEndpoint } = require(${build('wire/transport.js')});
    const { Compressor } = require(${build('wire/compression.js')});
    (async () => {
      const out = { atStart: loaded() };
      const server = net.createServer((socket) => socket.destroy());
      await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
      const { port } = server.address();
      (await openEndpoint({ kind: 'tcp', host: '127.0.0.1', port })).transport.destroy();
      out.onTcp = loaded();
      await openEndpoint({ kind: 'tls', host: '127.0.0.1', port }).then((o) => o.transport.destroy(), () => undefined);
      out.onTls = loaded();
      new Compressor().pack(Buffer.alloc(1000, 'a'));
      out.onDeflate = loaded();
      server.close();
      process.stdout.write(JSON.stringify(out));
    })();
  `;
  // env(1) drops NODE_OPTIONS just before node starts: tap's loader would otherwise load modules of its own.
  const out = execFileSync('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, '-e', script], { encoding: 'utf8', cwd: REPO_ROOT });
  return JSON.parse(out) as Footprint;
}

t.test('the agent loads TLS and zlib when it needs them, npm tar and the native CBOR addon not at all', async (t) => {
  const got = footprint();
  t.same(got.atStart, { builtins: [], files: [] }, "the agent's entry point: no tls, zlib, tar or cbor-extract");
  t.same(got.onTcp, { builtins: [], files: [] }, 'connected over TCP: still none');
  t.same(got.onTls.builtins, ['tls'], 'a tls endpoint loads node:tls');
  t.same(got.onDeflate.builtins, ['tls', 'zlib'], 'a deflated body loads node:zlib');
  t.same(got.onDeflate.files, [], 'tar and cbor-extract: never loaded');
});
