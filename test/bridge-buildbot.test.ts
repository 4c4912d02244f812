/**
 * The bridge against a REAL Buildbot master (Debian's buildbot 3.7): a master in a
 * temp dir with the msgpack_experimental_v7 port, a worker, a builder, and a
 * SingleBranchScheduler fed by `buildbot sendchange` over the PB change port (no
 * buildbot-www needed). The agent is a local test double that really runs shell
 * commands and reads/writes real files. Results are read from the master's sqlite
 * DB (logCompressionMethod 'raw' so log chunks are plain text).
 *
 * Last, the worker attaches again over wss://, through TLS in front of the
 * msgpack port (Buildbot's has none of its own), as a remote tether-master would.
 *
 * download_file is not run end to end here: the stock 3.7 msgpack master drops
 * update_read_file's data (see bridge-protocol.test.ts for the pull loop).
 */
import t from 'tap';
import { spawn, execFile, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import * as tls from 'node:tls';
import { BuildbotBridge } from '../master-plugin/buildbot-bridge';
import type { CommandResult, CommandSink, RemoteAgent, RemoteCommand } from '../master-plugin/remote';
import { selfSigned } from './helpers/certs';
import { freePort, listenLoopback, sleep, waitFor, withTimeout } from './helpers/support';

const BUILDBOT = '/usr/bin/buildbot';
const PYTHON = '/usr/bin/python3';

// test/preflight.js (run by `npm test`) installs Buildbot or stops with the command to run.
if (!fs.existsSync(BUILDBOT) || !fs.existsSync(PYTHON)) {
  throw new Error(`Buildbot is not installed (${BUILDBOT}): run 'apt-get install buildbot'`);
}

function run(cmd: string, args: string[], opts: { cwd?: string; timeout?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: opts.cwd, timeout: opts.timeout ?? 60_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

// ------------------------------------------------------------------ the agent double

interface Seen {
  command: string;
  args: Record<string, unknown>;
}

class LocalCommand implements RemoteCommand {
  readonly stream: number;
  readonly result: Promise<CommandResult>;
  readonly abort = new AbortController();
  private fileSink: fs.WriteStream | null = null;
  private fileEnded!: () => void;
  readonly fileDone = new Promise<void>((r) => (this.fileEnded = r));
  constructor(stream: number, body: (c: LocalCommand) => Promise<void>) {
    this.stream = stream;
    this.result = body(this).then(
      () => ({ failure: null }),
      (e: Error) => ({ failure: { code: 'ERROR', message: e.message } }),
    );
  }
  openDownload(file: string): void {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.fileSink = fs.createWriteStream(file);
  }
  async writeFile(chunk: Buffer): Promise<void> {
    if (!this.fileSink) throw new Error('no download in progress');
    if (!this.fileSink.write(chunk)) await new Promise<void>((r) => this.fileSink!.once('drain', () => r()));
  }
  async endFile(): Promise<void> {
    if (this.fileSink) await new Promise<void>((r) => this.fileSink!.end(r));
    this.fileEnded();
  }
  async writeStdin(): Promise<void> {}
  interrupt(why: string): void {
    this.abort.abort(why);
  }
}

/** Runs what Buildbot asks, locally, under basedir; records every command and its arguments. */
class LocalAgent implements RemoteAgent {
  readonly name = 'local-double';
  readonly info: Record<string, unknown>;
  readonly closed: Promise<void>;
  readonly seen: Seen[] = [];
  readonly absolutePaths: string[] = [];
  end!: () => void;
  private streams = 0;
  constructor(readonly basedir: string) {
    this.info = {
      os: 'linux',
      arch: process.arch,
      hostname: 'tether-test-device',
      basedir,
      environ: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      version: 'tether-test 0.0.0',
      admin: 'Tether Tests <tests@example.invalid>',
    };
    this.closed = new Promise((r) => (this.end = r));
  }
  print(): void {}
  disconnect(): void {}
  shutdown(): void {}

  /** Agent paths must be relative to the basedir. */
  private resolve(p: unknown): string {
    if (typeof p !== 'string') throw new Error(`path is not a string: ${String(p)}`);
    if (path.isAbsolute(p)) this.absolutePaths.push(p);
    return path.resolve(this.basedir, p);
  }

  run(command: string, args: Record<string, unknown>, sink: CommandSink): RemoteCommand {
    this.seen.push({ command, args });
    return new LocalCommand(++this.streams, async (c) => {
      switch (command) {
        case 'shell':
          return this.shell(c, args, sink);
        case 'listdir': {
          const dir = this.resolve(args.path);
          const files = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
          await sink.update!('files', files);
          await sink.update!('rc', 0);
          return;
        }
        case 'mkdir':
          for (const p of args.paths as string[]) fs.mkdirSync(this.resolve(p), { recursive: true });
          await sink.update!('rc', 0);
          return;
        case 'rmdir':
          for (const p of args.paths as string[]) fs.rmSync(this.resolve(p), { recursive: true, force: true });
          await sink.update!('rc', 0);
          return;
        case 'stat': {
          const st = fs.statSync(this.resolve(args.path));
          await sink.update!('stat', [st.mode, st.ino, st.dev, st.nlink, st.uid, st.gid, st.size, st.atimeMs / 1000, st.mtimeMs / 1000, st.ctimeMs / 1000]);
          await sink.update!('rc', 0);
          return;
        }
        case 'upload_file':
          return this.uploadFile(args, sink);
        case 'upload_directory':
          return this.uploadDirectory(c, args, sink);
        case 'download_file':
          c.openDownload(this.resolve(args.path));
          await c.fileDone;
          await sink.update!('rc', 0);
          return;
        default:
          throw new Error(`test double does not implement ${command}`);
      }
    });
  }

  private async shell(c: LocalCommand, args: Record<string, unknown>, sink: CommandSink): Promise<void> {
    const cwd = this.resolve(args.workdir);
    fs.mkdirSync(cwd, { recursive: true });
    const argv = Array.isArray(args.command) ? (args.command as string[]).map(String) : ['/bin/sh', '-c', String(args.command)];
    const env: Record<string, string> = { ...(process.env as Record<string, string>) };
    for (const [k, v] of Object.entries((args.env as Record<string, unknown>) ?? {})) {
      if (v === null) delete env[k];
      else env[k] = Array.isArray(v) ? v.join(path.delimiter) : String(v);
    }
    await sink.header!(`test double running ${JSON.stringify(argv)} in ${String(args.workdir)}\n`);
    const started = Date.now();
    const child = spawn(argv[0], argv.slice(1), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    c.abort.signal.addEventListener('abort', () => child.kill('SIGKILL'));
    // deliver output in 7-byte pieces so multi-byte characters get split between chunks
    let chain = Promise.resolve();
    const pipe = (stream: NodeJS.ReadableStream, fn: (b: Buffer) => void | Promise<void>) =>
      stream.on('data', (d: Buffer) => {
        stream.pause();
        chain = chain.then(async () => {
          for (let i = 0; i < d.length; i += 7) await fn(d.subarray(i, i + 7));
          stream.resume();
        });
      });
    pipe(child.stdout!, (b) => sink.stdout!(b));
    pipe(child.stderr!, (b) => sink.stderr!(b));
    const rc = await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve(code ?? (signal ? -1 : 0)));
    });
    await chain;
    await sink.update!('rc', rc);
    await sink.update!('elapsed', (Date.now() - started) / 1000);
  }

  private async uploadFile(args: Record<string, unknown>, sink: CommandSink): Promise<void> {
    const file = this.resolve(args.path);
    const blocksize = Number(args.blocksize) || 16384;
    await sink.header!(`sending ${String(args.path)}\n`);
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      await sink.fileClose!();
      await sink.update!('stderr', `Cannot open file '${String(args.path)}' for upload`);
      await sink.update!('rc', 1);
      return;
    }
    try {
      const buf = Buffer.alloc(blocksize);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, blocksize, null);
        if (n === 0) break;
        await sink.fileData!(Buffer.from(buf.subarray(0, n)));
      }
    } finally {
      fs.closeSync(fd);
    }
    const st = fs.statSync(file);
    await sink.fileClose!(args.keepstamp ? { atime: st.atimeMs / 1000, mtime: st.mtimeMs / 1000 } : undefined);
    await sink.update!('rc', 0);
  }

  private async uploadDirectory(c: LocalCommand, args: Record<string, unknown>, sink: CommandSink): Promise<void> {
    const dir = this.resolve(args.path);
    const z = args.compress === 'gz' ? ['-z'] : args.compress === 'bz2' ? ['-j'] : [];
    await sink.header!(`sending ${String(args.path)}\n`);
    const tar = spawn('tar', ['-c', ...z, '-f', '-', '-C', dir, '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    c.abort.signal.addEventListener('abort', () => tar.kill('SIGKILL'));
    for await (const chunk of tar.stdout!) await sink.fileData!(chunk as Buffer);
    const code = await new Promise<number | null>((r) => (tar.exitCode !== null ? r(tar.exitCode) : tar.on('close', r)));
    if (code !== 0) throw new Error(`tar exited with ${code}`);
    await sink.fileClose!();
    await sink.update!('rc', 0);
  }
}

// ------------------------------------------------------------------ the master

const DB_QUERY = `
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
q = lambda s: c.execute(s).fetchall()
out = {
  'builds': [dict(id=r[0], results=r[1], complete=r[2] is not None) for r in q('select id, results, complete_at from builds')],
  'steps': [dict(id=r[0], buildid=r[1], name=r[2], results=r[3], state=r[4]) for r in q('select id, buildid, name, results, state_string from steps order by id')],
  'logs': [dict(id=r[0], stepid=r[1], name=r[2], type=r[3]) for r in q('select id, stepid, name, type from logs')],
  'chunks': [dict(logid=r[0], first=r[1], content=(r[2].decode('utf-8') if isinstance(r[2], bytes) else r[2]), compressed=r[3]) for r in q('select logid, first_line, content, compressed from logchunks order by logid, first_line')],
  'workers': [dict(name=r[0], info=json.loads(r[1])) for r in q('select name, info from workers')],
  'connected': [r[0] for r in q('select workerid from connected_workers')],
}
print(json.dumps(out))
`;

interface DbState {
  builds: Array<{ id: number; results: number | null; complete: boolean }>;
  steps: Array<{ id: number; buildid: number; name: string; results: number | null; state: string }>;
  logs: Array<{ id: number; stepid: number; name: string; type: string }>;
  chunks: Array<{ logid: number; first: number; content: string; compressed: number }>;
  workers: Array<{ name: string; info: Record<string, unknown> }>;
  connected: number[];
}

t.test('a real Buildbot 3.7 master runs steps on the agent through the bridge', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tether-bridge-'));
  const masterDir = path.join(root, 'master');
  const agentDir = path.join(root, 'agent');
  const uploads = path.join(root, 'uploads');
  fs.mkdirSync(agentDir);
  fs.mkdirSync(uploads);
  const [msgPort, pbPort] = [await freePort(), await freePort()];
  let master: ChildProcess | null = null;
  t.teardown(async () => {
    if (master && master.exitCode === null && master.pid) {
      process.kill(-master.pid, 'SIGTERM');
      for (let i = 0; i < 100 && master.exitCode === null && master.signalCode === null; i++) await sleep(100);
      if (master.exitCode === null && master.signalCode === null) process.kill(-master.pid, 'SIGKILL');
    }
    if (!process.env.TETHER_KEEP_TMP) fs.rmSync(root, { recursive: true, force: true });
    else t.comment(`kept ${root}`);
  });

  await run(BUILDBOT, ['create-master', '-r', masterDir], { cwd: root });
  const cfg = `
from buildbot.plugins import worker, schedulers, steps, util, changes
c = BuildmasterConfig = {}
c['workers'] = [worker.Worker('tw', 'pw:with/odd chars')]
c['protocols'] = {'msgpack_experimental_v7': {'port': ${msgPort}}, 'pb': {'port': 'tcp:${pbPort}:interface=127.0.0.1'}}
c['change_source'] = [changes.PBChangeSource(user='change', passwd='changepw')]
c['schedulers'] = [
    schedulers.SingleBranchScheduler(name='on-change', change_filter=util.ChangeFilter(branch='main'),
                                     treeStableTimer=None, builderNames=['b1']),
    schedulers.ForceScheduler(name='force', builderNames=['b1']),
]
f = util.BuildFactory()
f.addStep(steps.ShellCommand(name='say', command=['sh', '-c',
    'printf "hello from tether\\\\nd\\\\303\\\\251j\\\\303\\\\240 vu \\\\342\\\\202\\\\254\\\\n"; echo to-stderr >&2; printf "no newline at end"']))
f.addStep(steps.ShellCommand(name='many', command=['seq', '1', '200000']))
f.addStep(steps.ShellCommand(name='fails', command=['sh', '-c', 'echo failing; exit 3']))
f.addStep(steps.FileUpload(name='up', workersrc='payload.bin', masterdest=${JSON.stringify(path.join(uploads, 'payload.bin'))}))
f.addStep(steps.FileUpload(name='up-stamp', workersrc='payload.bin', keepstamp=True,
                           masterdest=${JSON.stringify(path.join(uploads, 'stamped.bin'))}))
f.addStep(steps.DirectoryUpload(name='up-dir', workersrc='tree', compress='gz',
                                masterdest=${JSON.stringify(path.join(uploads, 'tree'))}))
c['builders'] = [util.BuilderConfig(name='b1', workernames=['tw'], factory=f)]
c['title'] = 'tether bridge test'
c['buildbotURL'] = 'http://127.0.0.1:1/'
c['db'] = {'db_url': 'sqlite:///state.sqlite'}
c['logCompressionMethod'] = 'raw'
c['buildbotNetUsageData'] = None
`;
  fs.writeFileSync(path.join(masterDir, 'master.cfg'), cfg);
  await run(BUILDBOT, ['checkconfig', masterDir], { cwd: root });

  master = spawn(BUILDBOT, ['start', '--nodaemon', masterDir], { cwd: root, detached: true, stdio: 'ignore' });
  const twistdLog = path.join(masterDir, 'twistd.log');
  const readLog = () => (fs.existsSync(twistdLog) ? fs.readFileSync(twistdLog, 'utf8') : '');
  for (let i = 0; ; i++) {
    const l = readLog();
    if (l.includes('BuildMaster is running')) break;
    if (l.includes('BuildMaster startup failed') || master.exitCode !== null || i > 600) {
      t.fail(`master did not start:\n${l.slice(-3000)}`);
      return;
    }
    await sleep(100);
  }
  const dbFile = path.join(masterDir, 'state.sqlite');
  const db = async (): Promise<DbState> => JSON.parse(await run(PYTHON, ['-c', DB_QUERY, dbFile]));

  const agent = new LocalAgent(agentDir);
  const logs: string[] = [];
  const bridge = new BuildbotBridge(agent, {
    buildbotUrl: `ws://127.0.0.1:${msgPort}`,
    workerName: 'tw',
    password: 'pw:with/odd chars',
    log: (l) => logs.push(l),
  });
  await bridge.start();
  t.pass('Buildbot accepted the worker');

  // Buildbot makes the builder dirs (listdir + mkdir through start_command) once attached
  for (let i = 0; i < 100 && !fs.existsSync(path.join(agentDir, 'b1')); i++) await sleep(100);
  t.ok(fs.existsSync(path.join(agentDir, 'b1')), 'builder dir created on the agent, relative to its basedir');
  t.ok(fs.existsSync(path.join(agentDir, 'info')));
  const listdir = agent.seen.find((s) => s.command === 'listdir');
  t.same(listdir?.args, { path: '.' }, 'the master lists the basedir itself: "."');

  // the payloads
  const payload = Buffer.concat([randomBytes(300 * 1024 + 17), Buffer.from('\u00e9 end', 'utf8')]);
  fs.mkdirSync(path.join(agentDir, 'b1', 'build', 'tree', 'sub'), { recursive: true });
  fs.writeFileSync(path.join(agentDir, 'b1', 'build', 'payload.bin'), payload);
  fs.writeFileSync(path.join(agentDir, 'b1', 'build', 'tree', 'a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(agentDir, 'b1', 'build', 'tree', 'sub', 'b.bin'), payload.subarray(0, 5000));

  await run(BUILDBOT, ['sendchange', `--master=127.0.0.1:${pbPort}`, '--auth=change:changepw', '--who=tests', '--branch=main', '--comments=go', 'README'], { cwd: root });

  let state: DbState = await db();
  for (let i = 0; i < 1200 && !(state.builds.length > 0 && state.builds.every((b) => b.complete)); i++) {
    await sleep(250);
    state = await db();
  }
  t.equal(state.builds.length, 1, 'one build ran');
  t.ok(state.builds[0]?.complete, 'the build completed');
  if (!state.builds[0]?.complete) {
    t.comment(readLog().slice(-5000));
    t.comment(logs.join('\n'));
    return;
  }

  const step = (name: string) => state.steps.find((s) => s.name === name)!;
  const stdio = (name: string) => {
    const l = state.logs.find((x) => x.stepid === step(name).id && x.name === 'stdio');
    return l ? state.chunks.filter((c) => c.logid === l.id).map((c) => c.content).join('\n') : '';
  };
  t.ok(state.chunks.every((c) => c.compressed === 0), 'raw log chunks');

  // ShellCommand stdout / stderr
  t.equal(step('say').results, 0, 'say: SUCCESS');
  const say = stdio('say');
  t.match(say, /^ohello from tether$/m, 'stdout line arrived');
  t.match(say, /^od\u00e9j\u00e0 vu \u20ac$/m, 'multi-byte characters split across 7-byte chunks survive');
  t.match(say, /^eto-stderr$/m, 'stderr arrived');
  t.match(say, /^ono newline at end$/m, 'a final partial line arrives, newline-terminated');
  t.match(say, /^hprogram finished with exit code 0$/m);
  t.ok(say.indexOf('ono newline at end') < say.indexOf('hprogram finished'), 'held output comes before the exit code');
  t.match(say, /^htest double running/m, 'header lines arrive');

  // volume: ~1.3 MB of output in 7-byte pieces, several 64 KiB updates, every line in order
  t.equal(step('many').results, 0, 'many: SUCCESS');
  const many = stdio('many').split('\n').filter((l) => l.startsWith('o'));
  t.equal(many.length, 200000, 'all 200000 lines arrived');
  t.ok(many.every((l, i) => l === `o${i + 1}`), 'in order, none split or merged');

  // rc != 0 fails the step
  t.equal(step('fails').results, 2, 'fails: FAILURE (rc 3)');
  t.match(stdio('fails'), /^ofailing$/m);
  t.match(stdio('fails'), /^hprogram finished with exit code 3$/m);
  t.equal(state.builds[0].results, 2, 'the build failed because of it');

  // FileUpload byte-exact
  t.equal(step('up').results, 0, 'upload: SUCCESS');
  const got = fs.readFileSync(path.join(uploads, 'payload.bin'));
  t.equal(got.length, payload.length);
  t.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(payload).digest('hex'), 'uploaded file is byte-exact');
  t.equal(step('up-stamp').results, 0, 'keepstamp upload succeeds although the 3.7 master cannot set the times');
  t.ok(fs.readFileSync(path.join(uploads, 'stamped.bin')).equals(payload));
  t.match(logs.join('\n'), /could not set the uploaded file's times/);

  // DirectoryUpload
  t.equal(step('up-dir').results, 0, 'directory upload: SUCCESS');
  t.equal(fs.readFileSync(path.join(uploads, 'tree', 'a.txt'), 'utf8'), 'alpha\n');
  t.ok(fs.readFileSync(path.join(uploads, 'tree', 'sub', 'b.bin')).equals(payload.subarray(0, 5000)));

  // the mapping: everything the agent saw was relative to its basedir
  t.same(agent.absolutePaths, [], 'no absolute path reached the agent');
  const shells = agent.seen.filter((s) => s.command === 'shell');
  t.same(
    shells.map((s) => s.args.workdir),
    ['b1/build', 'b1/build', 'b1/build'],
  );
  t.same(
    agent.seen.filter((s) => s.command === 'upload_file').map((s) => s.args.path),
    ['b1/build/payload.bin', 'b1/build/payload.bin'],
  );

  // worker info as Buildbot stored it
  const w = state.workers.find((x) => x.name === 'tw')!;
  t.equal(w.info.host, 'tether-test-device');
  t.equal(w.info.version, 'tether-test 0.0.0');
  t.equal(w.info.admin, 'Tether Tests <tests@example.invalid>');
  t.equal(state.connected.length, 1, 'worker is connected');

  t.notOk(logs.join('\n').includes('pw:with/odd chars'), 'password never logged');
  t.notOk(readLog().includes('Unhandled error'), 'no unhandled errors in the master log');

  // the agent session ending disconnects the worker
  agent.end();
  await bridge.closed;
  if (process.env.TETHER_BRIDGE_LOG) t.comment(logs.join('\n'));
  t.equal(bridge.closeReason, 'agent session ended');
  for (let i = 0; i < 100 && (await db()).connected.length > 0; i++) await sleep(100);
  t.same((await db()).connected, [], 'Buildbot saw the worker disconnect');

  // wss://, as stunnel would serve it: TLS to a pinned certificate, then the plain msgpack port
  const cert = selfSigned(root, 'buildbot');
  const terminator = tls.createServer({ cert: fs.readFileSync(cert.cert), key: fs.readFileSync(cert.key) }, (socket) => {
    const upstream = net.connect(msgPort, '127.0.0.1');
    socket.pipe(upstream).pipe(socket);
    for (const [s, other] of [[socket, upstream], [upstream, socket]]) {
      s.on('error', () => s.destroy());
      s.on('close', () => other.destroy());
    }
  });
  const tlsPort = await listenLoopback(terminator);
  const overTls = new BuildbotBridge(new LocalAgent(agentDir), {
    buildbotUrl: `wss://localhost:${tlsPort}`,
    buildbotCa: fs.readFileSync(cert.cert),
    workerName: 'tw',
    password: 'pw:with/odd chars',
    log: (l) => logs.push(l),
  });
  await withTimeout(overTls.start(), 30_000, 'Buildbot to accept the worker over wss://');
  await waitFor('Buildbot to list the worker as connected', async () => (await db()).connected.length === 1, { timeoutMs: 10_000 });
  t.pass('over wss://, Buildbot accepted the worker');
  await overTls.close();
  await withTimeout(new Promise((resolve) => terminator.close(resolve)), 10_000, 'the TLS terminator to close');
});
