/**
 * The link to Buildbot carries the worker's secret (the Basic auth header):
 * in clear only to loopback, elsewhere only inside TLS to a verified master.
 * Against a WebSocket server on loopback that records the headers it gets,
 * behind a proxy that records every byte the connection sends.
 */
import t, { type Test } from 'tap';
import * as http from 'node:http';
import * as https from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { encode } from '@msgpack/msgpack';
import { BuildbotConnection } from '../master-plugin/buildbot-connection';
import { basicAuthHeader } from '../master-plugin/buildbot-protocol';
import { buildbotUrl, loopbackLookup } from '../master-plugin/buildbot-url';
import { selfSigned } from './helpers/certs';
import { tempDir, withTimeout } from './helpers/support';
import { teeProxy } from './helpers/wire-net';

const SECRET = 'board-secret-0123456789abcdef';
const HEADER = basicAuthHeader('board', SECRET);

/** A Buildbot stand-in on loopback (wss when given a certificate): records the Authorization headers, accepts any worker. */
async function fakeMaster(t: Test, tls?: { cert: string; key: string }) {
  const server = tls ? https.createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }) : http.createServer();
  const headers: string[] = [];
  const wss = new WebSocketServer({ server, verifyClient: ({ req }) => (headers.push(req.headers.authorization ?? ''), true) });
  // what Buildbot sends once it has attached the worker
  wss.on('connection', (ws) => ws.send(encode({ op: 'set_worker_settings', seq_number: 0, args: {} })));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const client of wss.clients) client.terminate();
    wss.close();
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as AddressInfo).port, headers };
}

/** open() on a connection accepted at Buildbot's set_worker_settings, as the bridge does. */
async function open(t: Test, url: string, ca?: string): Promise<{ logs: string[] }> {
  const logs: string[] = [];
  let closed!: () => void;
  const gone = new Promise<void>((resolve) => (closed = resolve));
  const connection: BuildbotConnection = new BuildbotConnection({
    url, workerName: 'board', password: SECRET, ca: ca === undefined ? undefined : readFileSync(ca),
    connectTimeoutMs: 5000, pingIntervalMs: 0, maxPayload: 1 << 20,
    log: (line) => logs.push(line),
    handle: (op) => (op === 'set_worker_settings' ? connection.accept() : null),
    onClosed: () => closed(),
  });
  t.teardown(() => {
    connection.close('test over');
    return withTimeout(gone, 5000, 'the connection to close');
  });
  await withTimeout(connection.open(), 6000, 'open()');
  return { logs };
}

t.test('ws:// only to loopback: the URLs --buildbot takes', async (t) => {
  for (const url of ['ws://127.0.0.1:9989', 'ws://127.9.8.7:9989/x', 'ws://127.1:9989', 'ws://[::1]:9989', 'ws://LOCALHOST:9989',
    'wss://buildbot.example:9989', 'wss://10.0.0.5:9989']) {
    t.doesNotThrow(() => buildbotUrl(url), url);
  }
  for (const url of ['ws://10.0.0.5:9989', 'ws://buildbot.example:9989', 'ws://[fe80::1]:9989', 'ws://0.0.0.0:9989', 'ws://localhost.example:9989']) {
    t.throws(() => buildbotUrl(url), { name: 'UsageError', message: /is refused: over ws:\/\/ each worker's secret.*in clear.*wss:\/\/.*ws:\/\/127\.0\.0\.1/ }, url);
  }
  t.throws(() => buildbotUrl('http://127.0.0.1:9989'), { name: 'UsageError', message: /takes ws:\/\/HOST:PORT or wss:\/\/HOST:PORT/ });
  t.throws(() => buildbotUrl('https://board:pw@buildbot.example:9989'), { name: 'UsageError', message: /^(?!.*pw).*no user or password/ });
});

t.test('"localhost" in clear is looked up to loopback addresses only', async (t) => {
  const lookup = (host: string, all: boolean) =>
    new Promise<{ error: Error | null; found: unknown }>((resolve) => loopbackLookup(host, { all }, (error, found) => resolve({ error, found })));
  const one = await lookup('localhost', false);
  t.equal(one.error, null);
  t.match(one.found, /^(127\.|::1$)/);
  // an address that is not loopback, as a hosts file or a DNS answer might give (a literal is not looked up on the network)
  for (const all of [false, true]) t.match((await lookup('192.0.2.1', all)).error, /192\.0\.2\.1 resolves to no loopback address/);
});

t.test('the connection refuses ws:// to another host before connecting', async (t) => {
  const logs: string[] = [];
  const connection = new BuildbotConnection({
    url: 'ws://192.0.2.1:9989', workerName: 'board', password: SECRET, connectTimeoutMs: 500, pingIntervalMs: 0,
    maxPayload: 1 << 20, log: (line) => logs.push(line), handle: () => null, onClosed: () => undefined,
  });
  await t.rejects(withTimeout(connection.open(), 2000, 'open()'), /ws:\/\/192\.0\.2\.1:9989 is refused: .* in clear/);
  t.notMatch(logs.join('\n'), /connecting to/, 'no connection was attempted');
});

t.test('ws:// to loopback works, by address or as localhost', async (t) => {
  const master = await fakeMaster(t);
  const tee = await teeProxy(master.port);
  t.teardown(() => tee.close());
  await open(t, `ws://localhost:${tee.port}`);
  await open(t, `ws://127.0.0.1:${master.port}`);
  t.same(master.headers, [HEADER, HEADER]);
  t.ok(Buffer.concat(tee.upstream).includes(HEADER), 'in clear, the header is on the (loopback) wire: the tee sees it');
});

t.test('wss:// carries the header inside TLS, to a certificate it verifies', async (t) => {
  const dir = await tempDir(t, 'tether-buildbot-link-');
  const cert = selfSigned(dir, 'buildbot');
  const other = selfSigned(dir, 'other');
  const master = await fakeMaster(t, cert);
  const tee = await teeProxy(master.port);
  t.teardown(() => tee.close());
  const onTheWire = () => Buffer.concat(tee.upstream);
  const url = `wss://127.0.0.1:${tee.port}`;

  await t.rejects(open(t, url), /certificate is not trusted .*--buildbot-ca FILE/, "a self-signed certificate, Node's CAs");
  await t.rejects(open(t, url, other.cert), /certificate is not trusted/, 'another pinned certificate');
  t.teardown(() => void delete process.env.NODE_TLS_REJECT_UNAUTHORIZED);
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  await t.rejects(open(t, url), /certificate is not trusted/, 'NODE_TLS_REJECT_UNAUTHORIZED=0 does not turn the check off');
  delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  t.same(master.headers, [], 'no upgrade request reached the server');
  t.ok(tee.upstream.length > 0, 'the TLS handshakes went through the tee');
  t.notOk(onTheWire().includes(HEADER.slice('Basic '.length)) || onTheWire().includes(SECRET), 'the secret was not sent');

  const { logs } = await open(t, `wss://localhost:${tee.port}`, cert.cert);
  t.same(master.headers, [HEADER], 'the server got the header');
  for (const clear of ['Authorization', HEADER.slice('Basic '.length), SECRET, 'Upgrade: websocket']) {
    t.notOk(onTheWire().includes(clear), `the wire holds no '${clear.slice(0, 13)}...' in clear`);
  }
  t.notMatch(logs.join('\n'), SECRET, 'nor the log');
});
