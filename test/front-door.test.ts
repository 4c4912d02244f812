/**
 * The master's front door, tried as an attacker would, on loopback: idle
 * connections that never start TLS are closed at the handshake timeout; a
 * master holding its cap of unauthenticated connections, or flooded with new
 * ones, still lets a real agent in within 2 s (tether-master as a real
 * process, with fewer file descriptors than the connections thrown at it);
 * a failed proof is answered only after a delay that costs that connection,
 * not its address; a full door drops the least advanced connection, oldest
 * first; drops are logged with a rate limit.
 */
import t, { type Test } from 'tap';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { FrontDoor, Progress } from '../master-plugin/front-door';
import { TetherHub } from '../master-plugin/hub';
import { TetherError } from '../wire/errors';
import { type Message, MsgType } from '../wire/messages';
import { connect } from '../wire/transport';
import { selfSigned } from './helpers/certs';
import { MASTER_BIN } from './helpers/tether-procs';
import { Peer, startAgent, startHub } from './helpers/wire-net';
import { REPO_ROOT, freePort, listenLoopback, tempDir, waitFor, withTimeout } from './helpers/support';

const is = (type: Message['type']) => (m: Message) => m.type === type;

async function certificate(t: Test): Promise<{ cert: string; key: string }> {
  const dir = await tempDir(t, 'tether-front-door-');
  return selfSigned(dir, 'master');
}

function rawConnect(port: number, localAddress = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Resolves when the master closed the socket (read to the end: what it wrote last does not matter). */
function closed(socket: net.Socket): Promise<void> {
  socket.on('error', () => undefined);
  socket.resume();
  return socket.destroyed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()));
}

t.test('on tls://, connections that never start TLS, or go silent after it, are closed at the handshake timeout', async (t) => {
  const { cert, key } = await certificate(t);
  const hub = new TetherHub({ workers: { rig: 'sesame' }, cert, key, handshakeTimeout: 0.5 });
  const address = await hub.listen('tls://127.0.0.1:0');
  t.teardown(() => hub.close());

  const started = Date.now();
  const idle = await Promise.all(Array.from({ length: 10 }, () => rawConnect(address.port)));
  const silent = await Promise.all([0, 1].map(() => connect(address, { ca: cert }) as Promise<net.Socket>));
  t.teardown(() => [...idle, ...silent].forEach((s) => s.destroy()));
  await withTimeout(Promise.all([...idle, ...silent].map(closed)), 3000, 'the idle connections to be closed');
  t.ok(Date.now() - started >= 500, 'not before the timeout');
  t.pass('10 connections without TLS and 2 silent after TLS were closed');

  const agent = startAgent(address.port, 'rig', 'sesame', { ca: cert });
  t.teardown(() => agent.stop());
  await hub.waitForAgent('rig', 5000);
  t.pass('an agent that does its handshake in time connects');
});

/** tether-master (the built program) under `ulimit -n`, listening on tls://. */
async function limitedMaster(t: Test, fds: number): Promise<{ proc: ChildProcess; port: number; ca: string; stderr: () => string; openFds: () => number }> {
  const { cert, key } = await certificate(t);
  const port = await freePort();
  const proc = spawn('sh', ['-c', `ulimit -n ${fds} && exec "$@"`, 'sh', process.execPath, MASTER_BIN,
    '--listen', `tls://127.0.0.1:${port}`, '--cert', cert, '--key', key, '--worker', 'rig:sesame'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    await exited;
  });
  t.teardown(() => {
    if (!t.passing()) t.comment(`tether-master stderr:\n${stderr.slice(-5000)}`);
  });
  await waitFor('tether-master to listen', () => /listening on/.test(stderr), { timeoutMs: 20_000 });
  return { proc, port, ca: cert, stderr: () => stderr, openFds: () => fs.readdirSync(`/proc/${proc.pid}/fd`).length };
}

/** The flood helper (test/helpers/flood.ts) as a child process; resolves once it opened `atLeast` connections. */
async function flood(t: Test, port: number, mode: 'hold' | 'flood', perAddress: number, addresses: string[], atLeast: number) {
  const proc = spawn(process.execPath, ['--import=@tapjs/typescript/import', path.join(REPO_ROOT, 'test', 'helpers', 'flood.ts'),
    String(port), mode, String(perAddress), ...addresses], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  };
  t.teardown(stop);
  let last = { opened: 0, open: 0 };
  proc.stdout!.on('data', (d: Buffer) => {
    const lines = d.toString().trim().split('\n');
    last = JSON.parse(lines[lines.length - 1]) as typeof last;
  });
  await waitFor(`the flood to open ${atLeast} connections`, () => last.opened >= atLeast, { timeoutMs: 30_000, intervalMs: 50 });
  return { stop, counts: () => last };
}

/** Starts a real agent over tls:// and resolves with how long it took to authenticate. */
async function agentConnects(t: Test, port: number, ca: string, withinMs: number): Promise<number> {
  const started = Date.now();
  const agent = startAgent(port, 'rig', 'sesame', { ca });
  t.teardown(() => agent.stop());
  await waitFor('the agent to connect', () => agent.logs.some((l) => /connected to .* as 'rig'/.test(l)), { timeoutMs: withinMs, intervalMs: 10 })
    .catch((error: Error) => {
      throw new Error(`${error.message}; agent log:\n${agent.logs.join('\n')}`);
    });
  return Date.now() - started;
}

// The hub's default cap: 256 unauthenticated connections in all (and 32 from one address).
const CAP = 256;
// Below the connections thrown at it, above the cap plus what Node itself holds open.
const FD_LIMIT = 330;
const ADDRESSES = Array.from({ length: 10 }, (_, i) => `127.0.0.${i + 1}`);

t.test('past the cap of unauthenticated connections, a real agent still connects within 2 s', async (t) => {
  t.test('the cap held full of idle connections', async (t) => {
    const master = await limitedMaster(t, FD_LIMIT);
    const held = await flood(t, master.port, 'hold', 40, ADDRESSES, 400);
    await waitFor('the master to drop the idle connections past its cap', () => held.counts().open <= CAP, { timeoutMs: 10_000, intervalMs: 20 });
    t.equal(held.counts().open, CAP, `of ${held.counts().opened} idle connections, the cap's worth are held open`);
    const ms = await agentConnects(t, master.port, master.ca, 2000);
    t.pass(`the agent connected in ${ms} ms past them`);
    t.ok(master.openFds() <= CAP + 64, `the master holds ${master.openFds()} file descriptors`);
  });

  t.test("a flood of new connections, from the agent's address too", async (t) => {
    const master = await limitedMaster(t, FD_LIMIT);
    const flooding = await flood(t, master.port, 'flood', 40, ADDRESSES, 2000);
    const ms = await agentConnects(t, master.port, master.ca, 2000);
    const { opened } = flooding.counts();
    t.pass(`the agent connected in ${ms} ms while ${opened} connections had been opened`);
    t.ok(master.openFds() <= CAP + 64, `the master holds ${master.openFds()} file descriptors`);
    await flooding.stop();
    const drops = master.stderr().split('\n').filter((l) => /dropped|more connections/.test(l));
    t.ok(drops.length >= 1 && drops.length <= 4, `${opened - CAP} and more drops made ${drops.length} log lines:\n${drops.join('\n')}`);
  });
});

t.test('a failed proof is answered after the delay, which costs that connection, not its address', async (t) => {
  const DELAY = 0.8;
  const fx = await startHub({ rig: 'sesame' }, { failureDelay: DELAY });
  t.teardown(() => fx.close());
  const ATTEMPTS = 4;
  const errorsAt: number[] = [];
  const attempts = Array.from({ length: ATTEMPTS }, async () => {
    const peer = await Peer.connect(fx.port);
    t.teardown(() => peer.destroy());
    peer.sendLink({ type: MsgType.HELLO, params: { versionMin: 2, versionMax: 2, name: 'rig', nonce: randomBytes(32), caps: 0, maxFrame: 65536 } });
    await peer.waitFor(is(MsgType.CHALLENGE), 5000, 'CHALLENGE');
    const sent = Date.now();
    peer.sendLink({ type: MsgType.PROOF, proof: randomBytes(32) });
    const error = await peer.waitFor(is(MsgType.ERROR), 5000, 'ERROR');
    errorsAt.push(Date.now());
    await peer.waitClosed(5000);
    return { ms: Date.now() - sent, code: error.type === MsgType.ERROR ? error.code : -1 };
  });
  // A real agent from the same address, meanwhile, is not slowed by them.
  const agent = startAgent(fx.port, 'rig', 'sesame');
  t.teardown(() => agent.stop());
  await fx.hub.waitForAgent('rig', 5000);
  const agentAt = Date.now();
  const results = await Promise.all(attempts);
  for (const r of results) {
    t.equal(r.code, new TetherError('AUTH_FAILED', '').wireCode, 'ERROR AUTH_FAILED');
    t.ok(r.ms >= DELAY * 1000, `answered after ${r.ms} ms, not before the ${DELAY * 1000} ms delay`);
  }
  t.ok(errorsAt.every((at) => at > agentAt), 'the real agent from the same address got in before any bad proof was answered');
  const failures = fx.rejected.filter((r) => r.error.code === 'AUTH_FAILED').length;
  t.equal(failures, ATTEMPTS, `${ATTEMPTS} attempts, ${ATTEMPTS} failures: each connection had one try`);
});

t.test('a full door drops the least advanced connection, oldest first, and never the newcomer', async (t) => {
  const log: string[] = [];
  const door = new FrontDoor({ handshakeTimeoutMs: 60_000, maxUnauthenticated: 4, maxUnauthenticatedPerAddress: 3, log: (l) => log.push(l) });
  t.teardown(() => door.close());
  const sockets: net.Socket[] = [];
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  /** A real accepted socket from `from` (a loopback address), admitted at the door. */
  const server = net.createServer();
  const port = await listenLoopback(server);
  t.teardown(() => server.close());
  const arrive = async (from: string) => {
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    sockets.push(await rawConnect(port, from));
    const socket = await accepted;
    sockets.push(socket);
    return door.arrive(socket);
  };
  const hello = await arrive('127.0.0.1');
  hello.reached(Progress.HELLO);
  const ready = await arrive('127.0.0.1');
  ready.reached(Progress.READY);
  const idle = await arrive('127.0.0.1');
  const newcomer = await arrive('127.0.0.1'); // a 4th from this address: past 3
  t.match(idle.dropped, { code: 'FLOW_CONTROL', message: /dropped before TLS to make room: 3 from 127\.0\.0\.1/ }, 'the one without TLS goes');
  t.equal(newcomer.dropped, null, 'the newcomer stays');
  const other = await arrive('127.0.0.2'); // 4 in all: full, nobody dropped yet
  const third = await arrive('127.0.0.3'); // past 4 in all
  t.equal(newcomer.dropped?.code, 'FLOW_CONTROL', 'then the oldest of those without TLS');
  t.equal(other.dropped, null, 'not the younger one');
  third.reached(Progress.READY);
  const fourth = await arrive('127.0.0.4');
  t.equal(other.dropped?.code, 'FLOW_CONTROL', 'the last one without TLS');
  fourth.reached(Progress.READY);
  const fifth = await arrive('127.0.0.5');
  t.equal(ready.dropped?.code, 'FLOW_CONTROL', 'then the oldest without HELLO');
  t.equal(hello.dropped, null, 'the one that sent HELLO is never dropped while another has not');
  await waitFor('the dropped sockets to close', () => [idle, newcomer, other, ready].every((v) => v.socket.destroyed), { timeoutMs: 2000 });
  hello.authenticated();
  const sixth = await arrive('127.0.0.6'); // 4 in all again: third, fourth, fifth, sixth
  for (const v of [third, fourth, fifth, sixth]) v.reached(Progress.HELLO);
  await arrive('127.0.0.7');
  t.equal(hello.dropped, null, 'an authenticated connection no longer counts');
  t.equal(third.dropped?.code, 'FLOW_CONTROL', 'when all have sent HELLO, the oldest goes');
  t.equal(log.length, 1, `drops are logged once per interval: ${log.join(' | ')}`);
});
