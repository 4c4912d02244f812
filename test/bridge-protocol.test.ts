/**
 * The bridge against a scripted master speaking the exact wire shapes of
 * buildbot/worker/protocols/manager/msgpack.py (3.7), for what the real master
 * cannot show deterministically: coalescing, backpressure, download pulls,
 * interrupts, disconnects and error paths.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { decode, encode } from '@msgpack/msgpack';
import { BuildbotBridge, BridgeOptions } from '../master-plugin/buildbot-bridge';
import { pullDownload } from '../master-plugin/buildbot-transfer';
import type { CommandResult, CommandSink, RemoteAgent, RemoteCommand } from '../master-plugin/remote';
import { sleep } from './helpers/support';

type Msg = Record<string, any>;

const PASSWORD = 's3cr3t-pw';
const PYTHON = process.env.TETHER_BUILDBOT_PYTHON ?? '/usr/bin/python3';

/** A master: accepts one worker, sends requests, answers the worker's requests through `onRequest`. */
class FakeMaster {
  readonly wss: WebSocketServer;
  ws: WebSocket | null = null;
  authHeaders: string[] = [];
  paths: string[] = [];
  /** Every request the worker sent, in order. */
  readonly requests: Msg[] = [];
  private seq = 0;
  private readonly waiting = new Map<number, (m: Msg) => void>();
  private requestWaiters: Array<{ pred: (m: Msg) => boolean; resolve: (m: Msg) => void }> = [];
  /** Decides the answer to a worker request: a result, or {exception: text}, or a promise of either. */
  onRequest: (m: Msg) => unknown = () => null;
  connected: Promise<void>;
  closedByWorker: Promise<void>;

  constructor(readonly password = PASSWORD) {
    this.wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      verifyClient: (info: { req: IncomingMessage }, cb: (ok: boolean, code?: number) => void) => {
        const h = info.req.headers.authorization ?? '';
        this.authHeaders.push(h);
        this.paths.push(info.req.url ?? '');
        const ok = h === 'Basic ' + Buffer.from(`tw:${this.password}`).toString('base64');
        cb(ok, ok ? undefined : 401);
      },
    });
    let onConn!: () => void;
    let onClose!: () => void;
    this.connected = new Promise((r) => (onConn = r));
    this.closedByWorker = new Promise((r) => (onClose = r));
    this.wss.on('connection', (ws) => {
      this.ws = ws;
      ws.on('message', (data) => this.onMessage(decode(data as Buffer) as Msg));
      ws.on('close', () => onClose());
      onConn();
    });
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}`;
  }

  private onMessage(m: Msg): void {
    if (m.op === 'response') {
      const w = this.waiting.get(m.seq_number);
      this.waiting.delete(m.seq_number);
      w?.(m);
      return;
    }
    this.requests.push(m);
    for (const w of [...this.requestWaiters]) {
      if (w.pred(m)) {
        this.requestWaiters.splice(this.requestWaiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
    Promise.resolve(this.onRequest(m)).then((r: any) => {
      const out: Msg = { op: 'response', seq_number: m.seq_number, result: null };
      if (r && typeof r === 'object' && 'exception' in r) {
        out.result = r.exception;
        out.is_exception = true;
      } else out.result = r ?? null;
      this.ws?.send(encode(out));
    });
  }

  /** Sends a master request; resolves with the whole response message. */
  call(op: string, fields: Msg = {}): Promise<Msg> {
    const seq = this.seq++;
    return new Promise((resolve) => {
      this.waiting.set(seq, resolve);
      this.ws!.send(encode({ op, ...fields, seq_number: seq }));
    });
  }

  waitRequest(pred: (m: Msg) => boolean): Promise<Msg> {
    const found = this.requests.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => this.requestWaiters.push({ pred, resolve }));
  }

  /** What Buildbot 3.7 does when a worker attaches. */
  async handshake(): Promise<Msg> {
    await this.connected;
    await this.call('print', { message: 'attached' });
    const info = await this.call('get_worker_info');
    await this.call('set_worker_settings', {
      args: {
        newline_re: '(\\r\\n|\\r(?=.)|\\033\\[u|\\033\\[[0-9]+;[0-9]+[Hf]|\\033\\[2J|\\x08+)',
        max_line_length: 4096,
        buffer_timeout: 5,
        buffer_size: 64 * 1024,
      },
    });
    return info;
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    await new Promise<void>((r) => this.wss.close(() => r()));
  }
}

/** A scripted command: the test drives the sink and settles the result. */
class FakeCommand implements RemoteCommand {
  readonly stream = 1;
  readonly result: Promise<CommandResult>;
  settle!: (r: CommandResult) => void;
  fail!: (e: Error) => void;
  interrupts: string[] = [];
  written: Buffer[] = [];
  ended = false;
  writeDelay = 0;
  constructor(
    readonly name: string,
    readonly args: Record<string, unknown>,
    readonly sink: CommandSink,
  ) {
    this.result = new Promise((res, rej) => {
      this.settle = res;
      this.fail = rej;
    });
  }
  async writeFile(chunk: Buffer): Promise<void> {
    this.written.push(Buffer.from(chunk));
    if (this.writeDelay) await new Promise((r) => setTimeout(r, this.writeDelay));
  }
  async endFile(): Promise<void> {
    this.ended = true;
  }
  async writeStdin(): Promise<void> {}
  interrupt(why: string): void {
    this.interrupts.push(why);
  }
}

class FakeAgent implements RemoteAgent {
  readonly name = 'dev1';
  readonly info = { os: 'linux', arch: 'arm', hostname: 'dev1', basedir: '/agent/base', environ: { A: 'b' }, version: '0.1.0' };
  readonly closed: Promise<void>;
  end!: () => void;
  prints: string[] = [];
  shutdowns = 0;
  commands: FakeCommand[] = [];
  private cmdWaiters: Array<(c: FakeCommand) => void> = [];
  constructor() {
    this.closed = new Promise((r) => (this.end = r));
  }
  run(command: string, args: Record<string, unknown>, sink: CommandSink): RemoteCommand {
    if (command === 'rmfile' && args.path === 'explode') throw new Error('agent refused');
    const c = new FakeCommand(command, args, sink);
    this.commands.push(c);
    for (const w of this.cmdWaiters.splice(0)) w(c);
    return c;
  }
  nextCommand(): Promise<FakeCommand> {
    return new Promise((r) => this.cmdWaiters.push(r));
  }
  print(text: string): void {
    this.prints.push(text);
  }
  disconnect(): void {}
  shutdown(): void {
    this.shutdowns++;
  }
}

async function setup(t: any, opts: Partial<BridgeOptions> = {}) {
  const master = new FakeMaster();
  await once(master.wss, 'listening');
  const agent = new FakeAgent();
  const logs: string[] = [];
  const bridge = new BuildbotBridge(agent, {
    buildbotUrl: master.url,
    workerName: 'tw',
    password: PASSWORD,
    log: (l) => logs.push(l),
    ...opts,
  });
  const started = bridge.start();
  const info = await master.handshake();
  await started;
  t.teardown(async () => {
    await bridge.close();
    await master.close();
  });
  return { master, agent, bridge, logs, info };
}

let cmdSeq = 100;
async function startCommand(master: FakeMaster, agent: FakeAgent, name: string, args: Msg, builder = 'b1') {
  const id = String(cmdSeq++);
  const next = agent.nextCommand();
  const resp = await master.call('start_command', { builder_name: builder, command_id: id, command_name: name, args });
  return { id, resp, cmd: await next };
}

const updatesOf = (master: FakeMaster, id: string) =>
  master.requests.filter((m) => m.op === 'update' && m.command_id === id).flatMap((m) => m.args as any[]);

const text = (updates: any[], key: string) =>
  updates
    .filter((u) => u[0] === key)
    .map((u) => u[1][0])
    .join('');

t.test('auth, path and handshake answers', async (t) => {
  const { master, agent, info, logs } = await setup(t);
  t.equal(master.paths[0], '/', 'connects to the root path like buildbot-worker');
  t.equal(master.authHeaders[0], 'Basic ' + Buffer.from(`tw:${PASSWORD}`).toString('base64'));
  t.same(agent.prints, ['attached']);
  const r = info.result;
  t.equal(r.basedir, '/agent/base');
  t.equal(r.system, 'posix');
  t.equal(r.host, 'dev1');
  t.equal(r.version, '0.1.0');
  t.equal(r.delete_leftover_dirs, false);
  t.equal(r.worker_commands.shell, '3.1');
  t.equal(r.worker_commands.uploadFile, '3.1');
  t.same(r.environ, { A: 'b' });
  const ka = await master.call('keepalive');
  t.equal(ka.result, null);
  t.notOk('is_exception' in ka);
  const bad = await master.call('get_commands');
  t.equal(bad.is_exception, true);
  t.equal(bad.result, 'Command get_commands does not exist.');
  const unk = await master.call('start_command', { command_id: '1', command_name: 'frobnicate', args: {} });
  t.equal(unk.is_exception, true);
  t.match(unk.result, /unrecognized WorkerCommand 'frobnicate'/);
  const refused = await master.call('start_command', { command_id: '2', command_name: 'rmfile', args: { path: '/agent/base/explode' } });
  t.equal(refused.is_exception, true);
  t.match(refused.result, /agent refused/);
  const missing = await master.call('set_worker_settings', { args: { newline_re: 'x' } });
  t.equal(missing.is_exception, true);
  const p = await master.call('print', { message: 'hello there' });
  t.equal(p.result, null);
  t.same(agent.prints, ['attached', 'hello there']);
  await master.call('shutdown');
  t.equal(agent.shutdowns, 1);
  t.notOk(logs.join('\n').includes(PASSWORD), 'the password is never logged');
});

t.test('wrong password is refused with a clear error', async (t) => {
  const master = new FakeMaster('other');
  await once(master.wss, 'listening');
  const logs: string[] = [];
  const bridge = new BuildbotBridge(new FakeAgent(), { buildbotUrl: master.url, workerName: 'tw', password: PASSWORD, log: (l) => logs.push(l) });
  await t.rejects(bridge.start(), /HTTP 401/);
  await bridge.closed;
  t.notOk(logs.join('\n').includes(PASSWORD));
  await master.close();
});

t.test('master closing before attaching rejects start()', async (t) => {
  const master = new FakeMaster();
  await once(master.wss, 'listening');
  master.wss.on('connection', (ws) => ws.close());
  const bridge = new BuildbotBridge(new FakeAgent(), { buildbotUrl: master.url, workerName: 'tw', password: PASSWORD, log: () => {} });
  await t.rejects(bridge.start(), /closed the connection before attaching/);
  await master.close();
});

t.test('shell: workdir mapping, stdout lines, coalescing, rc, complete', async (t) => {
  const { master, agent } = await setup(t);
  const { id, resp, cmd } = await startCommand(master, agent, 'shell', {
    workdir: '/agent/base/b1/build',
    command: ['make'],
    want_stdout: true,
    logfiles: {},
  });
  t.equal(resp.result, null);
  t.equal(cmd.name, 'shell');
  t.equal(cmd.args.workdir, 'b1/build', 'workdir is relative to the agent basedir');
  t.same(cmd.args.command, ['make']);
  const s = cmd.sink;
  // é split between chunks, partial lines, many small chunks
  const all = Buffer.from('line one\nd\u00e9j\u00e0 vu\npartial', 'utf8');
  for (let i = 0; i < all.length; i += 3) await s.stdout!(all.subarray(i, i + 3));
  await s.stderr!(Buffer.from('oops\n'));
  await s.header!('headline\n');
  await s.log!('build.log', Buffer.from('L1\nL2'));
  await new Promise((r) => setTimeout(r, 50));
  const mid = updatesOf(master, id);
  t.equal(text(mid, 'stdout'), 'line one\nd\u00e9j\u00e0 vu\n', 'only whole lines are sent; the partial one is held');
  const stdoutMsgs = master.requests.filter((m) => m.op === 'update' && m.command_id === id && m.args.some((u: any) => u[0] === 'stdout'));
  t.equal(stdoutMsgs.length, 1, `small chunks are coalesced into one update (${stdoutMsgs.length})`);
  const first = mid.find((u) => u[0] === 'stdout');
  t.same(first[1][1], [8, 16], 'newline positions');
  t.equal(first[1][2].length, 2, 'one time per line');
  t.type(first[1][2][0], 'number');
  t.same(mid.find((u) => u[0] === 'log')[1].slice(0, 1), ['build.log']);
  t.same(mid.find((u) => u[0] === 'log')[1][1][0], 'L1\n');
  t.equal(text(mid, 'stderr'), 'oops\n');
  t.equal(text(mid, 'header'), 'headline\n');
  await s.update!('rc', 2);
  await s.update!('elapsed', 0.5);
  cmd.settle({ failure: null });
  const complete = await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  t.equal(complete.args, null);
  const all2 = updatesOf(master, id);
  t.equal(text(all2, 'stdout'), 'line one\nd\u00e9j\u00e0 vu\npartial\n', 'the partial line is sent with a newline before rc');
  const keys = all2.map((u) => u[0]);
  t.ok(keys.indexOf('rc') > keys.lastIndexOf('stdout'), 'rc after the output');
  t.ok(keys.indexOf('log') < keys.indexOf('rc'));
  t.same(all2.find((u) => u[0] === 'rc'), ['rc', 2]);
  t.same(all2.find((u) => u[0] === 'elapsed'), ['elapsed', 0.5]);
  const lastUpdateIdx = master.requests.map((m, i) => (m.op === 'update' && m.command_id === id ? i : -1)).reduce((a, b) => Math.max(a, b));
  t.ok(master.requests.indexOf(complete) > lastUpdateIdx, 'complete is sent after every update');
});

t.test('a line after a quiet spell goes out at once; streaming lines gather into fewer updates', async (t) => {
  // Streaming lines wait up to 200 ms here, so that 'at once' (5 ms) stands far apart from it.
  const { master, agent } = await setup(t, { streamingFlushDelayMs: 200 });
  const { id, cmd } = await startCommand(master, agent, 'shell', { workdir: 'build', command: ['make'], want_stdout: true, logfiles: {} });
  const stdoutUpdates = () => master.requests.filter((m) => m.op === 'update' && m.command_id === id && m.args.some((u: any) => u[0] === 'stdout'));
  const sent = Date.now();
  await cmd.sink.stdout!(Buffer.from('the first line\n'));
  await master.waitRequest((m) => m.op === 'update' && m.command_id === id);
  t.ok(Date.now() - sent < 150, `the first line went out after ${Date.now() - sent} ms (5 ms coalescing)`);
  // Now a line every 5 ms for 300 ms or more: 60 lines; at a flush per 5 ms that would be about 60 updates.
  for (let i = 0; i < 60; i++) {
    await cmd.sink.stdout!(Buffer.from(`streaming line ${i}\n`));
    await sleep(5);
  }
  await sleep(300);
  const during = stdoutUpdates().length - 1;
  t.ok(during >= 1 && during <= 10, `60 streaming lines went in ${during} updates (about one per 200 ms)`);
  cmd.settle({ failure: null });
  await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  const lines = stdoutUpdates().flatMap((m) => m.args.filter((u: any) => u[0] === 'stdout').map((u: any) => u[1][0])).join('');
  t.equal(lines.split('\n').length - 1, 61, 'every line arrived');
});

/** buildbot-worker's shaping of the same bytes: its LineBoundaryFinder and buffer_manager, fed 8192-byte pipe reads. */
const WORKER_SHAPING = String.raw`
import json, sys, codecs
from buildbot_worker.util.buffer_manager import BufferManager
from buildbot_worker.util.lineboundaries import LineBoundaryFinder
from twisted.internet.task import Clock

sent = []
bm = BufferManager(Clock(), lambda m: sent.append(json.loads(json.dumps(m))), 64 * 1024, 5)
lbf = LineBoundaryFinder(4096, r'(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)')
decoder = codecs.getincrementaldecoder('utf-8')(errors='replace')
data = sys.stdin.buffer.read()
for at in range(0, len(data), 8192):
    lines = lbf.append(decoder.decode(data[at:at + 8192]), 1.0)
    if lines is not None:
        bm.append('stdout', lines)
bm.append('rc', 0)
bm.flush()
json.dump([[[k, v[0], v[1]] if k == 'stdout' else [k, v] for k, v in m] for m in sent], sys.stdout)
`;

t.test("Buildbot gets updates shaped like buildbot-worker's for the same output", async (t) => {
  // a window wide enough that nothing waits: every chunk goes in within one tick, as a fast pipe's would
  const { master, agent } = await setup(t, { maxUnackedBytes: 64 * 1024 * 1024 });
  const { id, cmd } = await startCommand(master, agent, 'shell', { workdir: 'build', command: ['make'], want_stdout: true, logfiles: {} });
  // 1.5 MB of lines of 1 to 199 characters (some with a multi-byte character), in 64 KiB chunks as Node reads a pipe
  let text = '';
  for (let i = 0; text.length < 1_500_000; i++) text += `${i % 7 === 0 ? 'é' : ''}${'x'.repeat((i * 37) % 199)}\n`;
  const bytes = Buffer.from(text, 'utf8');
  for (let at = 0; at < bytes.length; at += 65536) void cmd.sink.stdout!(bytes.subarray(at, at + 65536));
  void cmd.sink.update!('rc', 0);
  cmd.settle({ failure: null });
  await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  const got = master.requests
    .filter((m) => m.op === 'update' && m.command_id === id)
    .map((m) => m.args.map(([k, v]: any[]) => (k === 'stdout' ? [k, v[0], v[1]] : [k, v])));
  const r = spawnSync(PYTHON, ['-c', WORKER_SHAPING], { input: bytes, maxBuffer: 64 * 1024 * 1024 });
  t.equal(r.status, 0, String(r.stderr));
  const expected = JSON.parse(r.stdout.toString());
  t.ok(expected.length > 20, `buildbot-worker sends ${expected.length} updates`);
  t.equal(got.length, expected.length, 'as many updates');
  t.same(got, expected, 'the same updates: keys, text and newline indexes');
});

t.test('complete carries the failure text', async (t) => {
  const { master, agent } = await setup(t);
  const { id, cmd } = await startCommand(master, agent, 'mkdir', { paths: ['/agent/base/b1', '/agent/base/info'] });
  t.same(cmd.args.paths, ['b1', 'info']);
  cmd.settle({ failure: { code: 'EACCES', message: 'permission denied' } });
  const c = await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  t.equal(c.args, 'EACCES: permission denied');
  const { id: id2, cmd: c2 } = await startCommand(master, agent, 'listdir', { path: '/agent/base' });
  t.equal(c2.args.path, '.');
  c2.fail(new Error('link lost'));
  const c2c = await master.waitRequest((m) => m.op === 'complete' && m.command_id === id2);
  t.match(c2c.args, /lost the command: link lost/);
});

/** Buildbot answers no update until release() is called. */
function holdUpdates(master: FakeMaster): () => void {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  master.onRequest = async (m) => {
    if (m.op === 'update') await gate;
    return null;
  };
  return release;
}

t.test('backpressure: a slow master holds the agent', async (t) => {
  const { master, agent, bridge } = await setup(t, { maxUnackedBytes: 8 * 1024 });
  const release = holdUpdates(master);
  const { id, cmd } = await startCommand(master, agent, 'shell', { workdir: '/agent/base/b1/build', command: 'x' });
  const line = Buffer.from('y'.repeat(1023) + '\n');
  let pending: Promise<void> | void = undefined;
  let sent = 0;
  for (let i = 0; i < 64; i++) {
    pending = cmd.sink.stdout!(line);
    sent++;
    if (pending) break;
  }
  t.ok(pending instanceof Promise, `the sink pushes back after ${sent} KiB`);
  t.ok(sent <= 10, 'within the configured window');
  let resolved = false;
  (pending as Promise<void>).then(() => (resolved = true));
  await new Promise((r) => setTimeout(r, 60));
  t.notOk(resolved, 'still held while Buildbot has not acknowledged');
  release();
  await pending;
  t.pass('released once Buildbot acknowledged');
  cmd.settle({ failure: null });
  await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  t.equal(text(updatesOf(master, id), 'stdout').length, sent * 1024);
  for (let i = 0; i < 50 && bridge.runningCommands > 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(bridge.runningCommands, 0, 'the command is forgotten once Buildbot acknowledged complete');
});

t.test('a master that is behind: no part-filled update while the agent is held back', async (t) => {
  const { master, agent } = await setup(t, { maxUnackedBytes: 256 * 1024 });
  const release = holdUpdates(master);
  const { id, cmd } = await startCommand(master, agent, 'shell', { workdir: 'build', command: 'x' });
  const updates = () => master.requests.filter((m) => m.op === 'update' && m.command_id === id);
  // three pipe reads per chunk: whole updates take six, so a part-filled one is left when the window closes
  const chunk = Buffer.from('y'.repeat(63) + '\n').subarray(0, 64);
  const bytes = Buffer.concat(Array(3 * 128).fill(chunk));
  let held: Promise<void> | void = undefined;
  let chunks = 0;
  while (!held && chunks < 100) {
    held = cmd.sink.stdout!(bytes);
    chunks++;
  }
  t.ok(held instanceof Promise, `held back after ${chunks} chunks`);
  await new Promise((r) => setTimeout(r, 20));
  const before = updates().length;
  const sent = text(updatesOf(master, id), 'stdout').length;
  t.ok(sent > 0 && sent < chunks * bytes.length, `${chunks * bytes.length - sent} bytes of lines are buffered, less than an update`);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(updates().length, before, 'the timer (50 ms) sent nothing more while the agent was held');
  release();
  await held;
  cmd.settle({ failure: null });
  await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  t.equal(text(updatesOf(master, id), 'stdout').length, chunks * bytes.length, 'every line arrived');
});

t.test('upload_file: writer calls are awaited one by one, then close and utime', async (t) => {
  const { master, agent, logs } = await setup(t);
  const seen: string[] = [];
  let slow = true;
  master.onRequest = async (m) => {
    seen.push(m.op);
    if (m.op === 'update_upload_file_write' && slow) await new Promise((r) => setTimeout(r, 40));
    if (m.op === 'update_upload_file_utime') return { exception: "remote_utime() takes 2 positional arguments but 3 were given" };
    return null;
  };
  const { id, cmd } = await startCommand(master, agent, 'upload_file', {
    workdir: 'build',
    workersrc: 'out.bin',
    path: '/agent/base/b1/build/out.bin',
    maxsize: null,
    blocksize: 16384,
    keepstamp: true,
  });
  t.equal(cmd.args.path, 'b1/build/out.bin');
  t.equal(cmd.args.workdir, 'build', 'other arguments are left as Buildbot sent them');
  const t0 = Date.now();
  // Each piece is a whole write (256 KiB: gathering goes up to that, whatever the blocksize).
  const first = Buffer.alloc(256 * 1024, 7);
  const p = cmd.sink.fileData!(first);
  t.ok(p instanceof Promise);
  await p;
  t.ok(Date.now() - t0 >= 35, 'fileData resolves only after Buildbot answered');
  slow = false;
  await cmd.sink.fileData!(Buffer.alloc(256 * 1024, 8));
  await cmd.sink.fileClose!({ atime: 1000, mtime: 2000 });
  await cmd.sink.update!('rc', 0);
  cmd.settle({ failure: null });
  const c = await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  t.equal(c.args, null, 'a master that cannot set times does not fail the upload');
  const writes = master.requests.filter((m) => m.op === 'update_upload_file_write');
  t.ok(Buffer.from(writes[0].args as Uint8Array).equals(first), 'data goes as msgpack bin in args');
  t.equal(writes[0].command_id, id, 'the writer is referred to by the command_id');
  const utime = master.requests.find((m) => m.op === 'update_upload_file_utime')!;
  t.same([utime.access_time, utime.modified_time], [1000, 2000]);
  const order = seen.filter((o) => o !== 'update');
  t.same(order, ['update_upload_file_write', 'update_upload_file_write', 'update_upload_file_close', 'update_upload_file_utime', 'complete']);
  t.match(logs.join('\n'), /could not set the uploaded file's times/);
});

t.test('upload pieces are gathered into writes of the blocksize, at least 256 KiB; close writes the rest first', async (t) => {
  const { master, agent } = await setup(t);
  const kib = 1024;
  const { id, cmd } = await startCommand(master, agent, 'upload_file', { path: '/agent/base/x', blocksize: 300 * kib, maxsize: null });
  const piece = (n: number) => Buffer.alloc(100 * kib, n);
  t.equal(cmd.sink.fileData!(piece(1)), undefined, 'less than a block: taken at once');
  t.equal(cmd.sink.fileData!(piece(2)), undefined);
  await cmd.sink.fileData!(piece(3));
  await cmd.sink.fileData!(Buffer.from('rest'));
  await cmd.sink.fileClose!();
  cmd.settle({ failure: null });
  await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  const ops = master.requests.filter((m) => m.command_id === id && m.op !== 'update');
  t.same(ops.map((m) => m.op), ['update_upload_file_write', 'update_upload_file_write', 'update_upload_file_close', 'complete']);
  const written = ops.slice(0, 2).map((m) => Buffer.from(m.args as Uint8Array));
  t.ok(written[0].equals(Buffer.concat([piece(1), piece(2), piece(3)])), 'three pieces in one write of the 300 KiB blocksize');
  t.equal(written[1].toString(), 'rest');

  // DirectoryUpload's 16 KiB blocksize: gathered to 256 KiB all the same.
  const dir = await startCommand(master, agent, 'upload_directory', { path: '/agent/base/d', blocksize: 16 * kib, maxsize: null, compress: null });
  for (let i = 0; i < 16; i++) await dir.cmd.sink.fileData!(Buffer.alloc(16 * kib, i));
  await dir.cmd.sink.fileClose!();
  dir.cmd.settle({ failure: null });
  await master.waitRequest((m) => m.op === 'complete' && m.command_id === dir.id);
  t.equal(master.requests.filter((m) => m.command_id === dir.id && m.op === 'update_upload_directory_write').length, 1, '16 pieces of 16 KiB: one write');
});

t.test('upload_directory uses the directory writer ops', async (t) => {
  const { master, agent } = await setup(t);
  const { id, cmd } = await startCommand(master, agent, 'upload_directory', {
    workdir: 'build',
    workersrc: 'dist',
    path: '/agent/base/b1/build/dist',
    maxsize: null,
    blocksize: 16384,
    compress: 'gz',
  });
  await cmd.sink.fileData!(Buffer.from('tar bytes'));
  await cmd.sink.fileClose!();
  cmd.settle({ failure: null });
  await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  const ops = master.requests.filter((m) => m.command_id === id && m.op !== 'update').map((m) => m.op);
  t.same(ops, ['update_upload_directory_write', 'update_upload_directory_unpack', 'complete']);
});

t.test('a writer error fails the command and interrupts the agent', async (t) => {
  const { master, agent } = await setup(t);
  master.onRequest = (m) => (m.op === 'update_upload_file_write' ? { exception: "unknown \"command_id\"" } : null);
  const { id, cmd } = await startCommand(master, agent, 'upload_file', { path: '/agent/base/x', blocksize: 3, maxsize: null });
  await cmd.sink.fileData!(Buffer.alloc(256 * 1024));
  t.equal(cmd.interrupts.length, 1);
  await cmd.sink.fileData!(Buffer.alloc(256 * 1024));
  t.equal(master.requests.filter((m) => m.op === 'update_upload_file_write').length, 1, 'nothing more is written');
  cmd.settle({ failure: null });
  const c = await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  t.match(c.args, /upload to Buildbot failed/);
});

t.test('download_file: pulls blocks from the reader and pushes them to the agent', async (t) => {
  const { master, agent } = await setup(t);
  const file = Buffer.alloc(10000);
  for (let i = 0; i < file.length; i++) file[i] = (i * 7) & 0xff;
  let pos = 0;
  master.onRequest = (m) => {
    if (m.op === 'update_read_file') {
      const d = file.subarray(pos, pos + m.length);
      pos += d.length;
      return d;
    }
    return null;
  };
  const { id, cmd } = await startCommand(master, agent, 'download_file', {
    workdir: 'build',
    workerdest: 'in.bin',
    path: '/agent/base/b1/build/in.bin',
    maxsize: null,
    blocksize: 4096,
    mode: null,
  });
  t.equal(cmd.args.path, 'b1/build/in.bin');
  const close = await master.waitRequest((m) => m.op === 'update_read_file_close' && m.command_id === id);
  t.ok(close);
  t.ok(cmd.ended, 'endFile after the last block');
  t.same(Buffer.concat(cmd.written), file);
  const reads = master.requests.filter((m) => m.op === 'update_read_file' && m.command_id === id);
  t.same(reads.map((r) => r.length), [4096, 4096, 4096, 4096], 'blocksize reads until an empty block');
  cmd.sink.update!('rc', 0);
  cmd.settle({ failure: null });
  const c = await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
  t.ok(master.requests.indexOf(close) < master.requests.indexOf(c), 'the reader is closed before complete');
});

t.test('pullDownload: maxsize, nil data, stop, errors', async (t) => {
  const mk = (blocks: unknown[]) => {
    const reads: number[] = [];
    const written: Buffer[] = [];
    let closed = 0;
    let ended = 0;
    return {
      reads,
      written,
      get closed() {
        return closed;
      },
      get ended() {
        return ended;
      },
      p: {
        read: async (n: number) => {
          reads.push(n);
          return blocks.length > 0 ? blocks.shift() : new Uint8Array(0);
        },
        close: async () => {
          closed++;
        },
        write: async (c: Buffer) => {
          written.push(c);
        },
        end: async () => {
          ended++;
        },
      },
    };
  };
  const a = mk([Buffer.alloc(10, 1), Buffer.alloc(10, 2), Buffer.alloc(10, 3)]);
  const ra = await pullDownload({ ...a.p, blocksize: 10, maxsize: 25 });
  t.same(a.reads, [10, 10, 5]);
  t.equal(ra.bytes, 25);
  t.equal(ra.hitMaxsize, true);
  t.equal(a.closed, 1);
  t.equal(a.ended, 1);
  t.equal(Buffer.concat(a.written).length, 25, 'an over-long answer is cut to the asked length');

  const warns: string[] = [];
  const b = mk([null]);
  const rb = await pullDownload({ ...b.p, blocksize: 10, warn: (l) => warns.push(l) });
  t.equal(rb.nilData, true);
  t.equal(rb.bytes, 0);
  t.equal(b.ended, 1);
  t.match(warns.join(), /without data/);

  const c = mk(['text block', new Uint8Array(0)]);
  await pullDownload({ ...c.p, blocksize: 100 });
  t.equal(Buffer.concat(c.written).toString(), 'text block', 'a str answer is UTF-8 (the master decodes bytes for us)');

  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  const d = mk([]);
  const never = { ...d.p, read: () => new Promise<unknown>(() => {}) };
  const pd = pullDownload({ ...never, blocksize: 10, stop: stopped });
  stop();
  const rd = await pd;
  t.equal(rd.ended, false, 'no endFile when the command is already over');
  t.equal(d.closed, 1, 'the reader is closed anyway');

  const e = mk([]);
  await t.rejects(pullDownload({ ...e.p, read: async () => Promise.reject(new Error('boom')) }), /boom/);
  t.equal(e.closed, 1);
});

t.test('interrupt_command reaches the agent; unknown ids are ignored', async (t) => {
  const { master, agent } = await setup(t);
  const { id, cmd } = await startCommand(master, agent, 'shell', { workdir: '/agent/base/b1/build', command: 'sleep 100' });
  await cmd.sink.stdout!(Buffer.from('half a line'));
  const r = await master.call('interrupt_command', { builder_name: 'b1', command_id: id, why: 'stopped by user' });
  t.equal(r.result, null);
  t.same(cmd.interrupts, ['stopped by user']);
  const out = await master.waitRequest((m) => m.op === 'update' && m.command_id === id);
  t.same(out.args[0][1][0], 'half a line\n', 'held output is flushed on interrupt, as buildbot-worker does');
  const r2 = await master.call('interrupt_command', { builder_name: 'b1', command_id: 'nope', why: 'x' });
  t.equal(r2.result, null);
  t.notOk(r2.is_exception);
  cmd.settle({ failure: null });
  await master.waitRequest((m) => m.op === 'complete' && m.command_id === id);
});

t.test('Buildbot disconnecting interrupts running commands and resolves closed', async (t) => {
  const { master, agent, bridge } = await setup(t);
  const { cmd } = await startCommand(master, agent, 'shell', { workdir: '/agent/base/b1/build', command: 'x' });
  master.ws!.close(1001, 'master going down');
  await bridge.closed;
  t.match(bridge.closeReason!, /Buildbot closed the connection \(code 1001, master going down\)/);
  t.equal(cmd.interrupts.length, 1);
  t.match(cmd.interrupts[0], /connection lost/);
  t.equal(cmd.sink.stdout!(Buffer.from('late\n')), undefined, 'late output is dropped without holding the agent');
  cmd.settle({ failure: null });
});

t.test('the agent session ending disconnects the worker', async (t) => {
  const { master, agent, bridge } = await setup(t);
  agent.end();
  await master.closedByWorker;
  await bridge.closed;
  t.equal(bridge.closeReason, 'agent session ended');
});
