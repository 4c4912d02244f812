/**
 * `tether-master put` and `get` as users run them: real processes on
 * loopback, byte-exact copies, silent unless standard error is a terminal.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { renderProgress } from '../master-plugin/progress';
import { AGENT_BIN, MASTER_BIN } from './helpers/tether-procs';
import { freePort, listening, tempDir } from './helpers/support';

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

function collect(proc: ChildProcess): Promise<Exit> {
  let out = '';
  let err = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => proc.once('close', (code) => resolve({ code, stdout: out, stderr: err })));
}

let basedir = '';
let work = '';

t.before(async () => {
  const dir = await tempDir(t, 'tether-files-');
  basedir = path.join(dir, 'basedir');
  work = path.join(dir, 'local');
  fs.mkdirSync(work);
});

/** Runs `tether-master <argv...>` (put/get) with a fresh agent whose basedir is `basedir`. */
async function transfer(t: Test, argv: string[], opts: { tty?: boolean } = {}): Promise<Exit> {
  const port = await freePort();
  const master = [MASTER_BIN, argv[0], '--listen', `tcp://127.0.0.1:${port}`, '--worker', 'rig:sesame', '--wait', '20', ...argv.slice(1)];
  const proc = opts.tty
    ? spawn('script', ['-qefc', [process.execPath, ...master].map((a) => `'${a}'`).join(' '), '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'], cwd: work })
    : spawn(process.execPath, master, { stdio: ['ignore', 'pipe', 'pipe'], cwd: work });
  const done = collect(proc);
  await listening(port);
  const agent = spawn(process.execPath, [
    AGENT_BIN, '--master', `tcp://127.0.0.1:${port}`, '--name', 'rig', '--secret', 'sesame', '--basedir', basedir,
  ], { stdio: 'ignore' });
  const agentGone = new Promise((r) => agent.once('exit', r));
  t.teardown(async () => {
    if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGTERM');
    await agentGone;
  });
  const r = await done;
  agent.kill('SIGTERM');
  await agentGone;
  return r;
}

t.test('put and get copy 3 MB byte for byte, silently when stderr is not a terminal', async (t) => {
  const data = randomBytes(3 * 1024 * 1024 + 17);
  fs.writeFileSync(path.join(work, 'blob.bin'), data);

  const put = await transfer(t, ['put', 'blob.bin', 'incoming/blob.bin']);
  t.equal(put.code, 0, put.stderr);
  t.equal(put.stdout, '', 'nothing on stdout');
  t.equal(put.stderr, '', 'no progress bar when stderr is not a terminal');
  t.ok(data.equals(fs.readFileSync(path.join(basedir, 'incoming', 'blob.bin'))), 'the agent has the same bytes');

  const get = await transfer(t, ['get', 'incoming/blob.bin', 'back.bin']);
  t.equal(get.code, 0, get.stderr);
  t.equal(get.stdout, '');
  t.equal(get.stderr, '');
  t.ok(data.equals(fs.readFileSync(path.join(work, 'back.bin'))), 'the copy back is the same bytes');
  t.same(fs.readdirSync(work).sort(), ['back.bin', 'blob.bin'], 'no partial file left behind');

  fs.mkdirSync(path.join(work, 'into'));
  const intoDir = await transfer(t, ['get', 'incoming/blob.bin', 'into']);
  t.equal(intoDir.code, 0, intoDir.stderr);
  t.ok(data.equals(fs.readFileSync(path.join(work, 'into', 'blob.bin'))), 'a local directory gets the remote name');
});

t.test('put keeps the permission bits; a REMOTE ending in / gets the local name', async (t) => {
  fs.writeFileSync(path.join(work, 'run.sh'), '#!/bin/sh\necho ran\n', { mode: 0o755 });
  fs.chmodSync(path.join(work, 'run.sh'), 0o755);
  const r = await transfer(t, ['put', 'run.sh', 'bin/']);
  t.equal(r.code, 0, r.stderr);
  t.equal(fs.statSync(path.join(basedir, 'bin', 'run.sh')).mode & 0o777, 0o755);
});

t.test('errors: one line, exit 1', async (t) => {
  const missing = await transfer(t, ['get', 'no/such/file', 'x.bin']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^tether-master: reading no\/such\/file on agent 'rig' failed: Cannot open file '.*no\/such\/file' for upload\n$/);
  t.notOk(fs.existsSync(path.join(work, 'x.bin')));
  t.same(fs.readdirSync(work).filter((f) => f.startsWith('.')), [], 'no partial file left behind');

  const port = await freePort();
  const local = await collect(spawn(process.execPath, [
    MASTER_BIN, 'put', '--listen', `tcp://127.0.0.1:${port}`, '--worker', 'rig:s', 'not-here.bin', 'x',
  ], { stdio: ['ignore', 'pipe', 'pipe'], cwd: work }));
  t.equal(local.code, 1);
  t.equal(local.stderr, 'tether-master: cannot read not-here.bin: no such file\n', 'before waiting for the agent');
});

t.test('a progress bar when stderr is a terminal', async (t) => {
  fs.writeFileSync(path.join(work, 'big.bin'), randomBytes(2 * 1024 * 1024));
  const r = await transfer(t, ['put', 'big.bin', 'big.bin'], { tty: true });
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /put big\.bin \[#+\] 100% 2\.0 MiB\/2\.0 MiB/, 'script(1) shows the terminal output');
});

t.test('the progress line', async (t) => {
  t.equal(renderProgress('get x', 512, 1024, 1, 60), 'get x [############------------]  50% 512 B/1.0 KiB 512 B/s');
  t.equal(renderProgress('get x', 512, 1024, 1, 40), 'get x  50% 512 B/1.0 KiB 512 B/s', 'no room for a bar');
  t.match(renderProgress('put y', 3 * 1024 * 1024, 3 * 1024 * 1024, 2, 80), /^put y \[#+\] 100% 3\.0 MiB\/3\.0 MiB 1\.5 MiB\/s$/);
  t.equal(renderProgress('get z', 2048, null, 0, 80), 'get z 2.0 KiB');
  t.ok(renderProgress('put w', 1, 10, 1, 80).length < 80, 'fits the terminal');
});
