/**
 * The library API that exec, put/get and the demo are built on (runShell,
 * putFile, getFile, listDir, statFile, awaitAgent), in process against a
 * real agent with the real command registry.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Agent } from '../agent/agent';
import { commands } from '../agent/commands/registry';
import { TetherHub, awaitAgent, exitStatus, getFile, listDir, putFile, runShell, statFile, RemoteCommandError } from '../master-plugin/index';
import type { TetherError } from '../wire/errors';
import { connect } from '../wire/transport';
import { startPair } from './helpers/pair';
import { makeTempDir } from './helpers/support';

async function pair(t: Test) {
  const dir = await makeTempDir('tether-api-');
  const p = await startPair(commands, { basedir: path.join(dir, 'base') });
  t.teardown(async () => {
    await p.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { ...p, dir, basedir: path.join(dir, 'base') };
}

t.test('runShell: output per stream, rc, signal, headers', async (t) => {
  const { remote } = await pair(t);
  const headers: string[] = [];
  const run = runShell(remote, ['sh', '-c', 'echo a; echo b >&2; echo c; exit 4'], { onHeader: (h) => void headers.push(h) });
  const seen = { stdout: '', stderr: '' };
  for await (const { stream, data } of run.output) seen[stream] += data.toString();
  const result = await run.result;
  t.same(seen, { stdout: 'a\nc\n', stderr: 'b\n' });
  t.equal(result.rc, 4);
  t.equal(exitStatus(result), 4);
  t.type(result.elapsed, 'number');
  t.ok(headers.some((h) => h.startsWith('sh -c')), 'the command line is a header');

  const killed = await runShell(remote, 'kill -USR1 $$').result;
  t.same({ rc: killed.rc, signal: killed.signal }, { rc: -1, signal: 10 });
  t.equal(exitStatus(killed), 138);
});

t.test('runShell: output that is not read does not block a small command; abandoning the iteration does not block a big one', async (t) => {
  const { remote } = await pair(t);
  const small = await runShell(remote, 'echo hi').result;
  t.equal(small.rc, 0);

  const big = runShell(remote, 'head -c 8000000 /dev/zero');
  let got = 0;
  for await (const { data } of big.output) {
    got += data.length;
    if (got > 100_000) break;
  }
  const result = await big.result;
  t.equal(result.rc, 0, 'the command ran to the end once the reader stopped');
});

t.test('runShell: onOutput, stdin, interrupt, a failing callback', async (t) => {
  const { remote } = await pair(t);
  let out = '';
  const cat = runShell(remote, 'cat', { stdin: true, onOutput: ({ data }) => void (out += data.toString()) });
  await cat.write('one\n');
  await cat.write(Buffer.from('two\n'));
  await cat.end();
  t.equal((await cat.result).rc, 0);
  t.equal(out, 'one\ntwo\n');

  const sleeper = runShell(remote, 'sleep 30');
  setTimeout(() => sleeper.interrupt('test'), 200);
  const r = await sleeper.result;
  t.equal(r.signal, 9, 'the interrupt kills with SIGKILL');

  const failing = runShell(remote, 'while :; do echo x; sleep 0.05; done', {
    onOutput: () => {
      throw new Error('consumer failed');
    },
  });
  await t.rejects(failing.result, /consumer failed/);
  t.equal((await runShell(remote, 'true').result).rc, 0, 'the agent connection is still fine');
});

t.test('putFile, getFile, statFile, listDir', async (t) => {
  const { remote, dir, basedir } = await pair(t);
  const data = randomBytes(700_001);
  const local = path.join(dir, 'src.bin');
  fs.writeFileSync(local, data);
  const progress: number[] = [];
  const put = await putFile(remote, local, 'd/copy.bin', { onProgress: (done) => void progress.push(done) });
  t.equal(put.bytes, data.length);
  t.equal(progress[progress.length - 1], data.length);
  t.ok(data.equals(fs.readFileSync(path.join(basedir, 'd', 'copy.bin'))));

  const st = await statFile(remote, 'd/copy.bin');
  t.match(st, { size: data.length, isFile: true, isDirectory: false });
  t.equal(await statFile(remote, 'd/nope'), null);
  t.same(await listDir(remote, 'd'), ['copy.bin']);

  const totals: Array<number | null> = [];
  const back = path.join(dir, 'back.bin');
  const got = await getFile(remote, 'd/copy.bin', back, { onProgress: (_d, total) => void totals.push(total) });
  t.equal(got.bytes, data.length);
  t.ok(data.equals(fs.readFileSync(back)));
  t.equal(totals[0], data.length, 'the total is known up front when progress is asked for');

  await t.rejects(getFile(remote, 'd/nope', path.join(dir, 'x')), RemoteCommandError);
  t.notOk(fs.existsSync(path.join(dir, 'x')));
  await t.rejects(listDir(remote, 'nope'), /listing nope on agent 'w1' failed: listdir: No such file or directory/);
  fs.mkdirSync(path.join(basedir, 'ro'));
  fs.chmodSync(path.join(basedir, 'ro'), 0o500);
  t.teardown(() => fs.chmodSync(path.join(basedir, 'ro'), 0o700));
  if (process.getuid?.() !== 0) {
    await t.rejects(putFile(remote, local, 'ro/x.bin'), /Cannot open file '.*ro\/x\.bin' for download/);
  }
});

t.test('awaitAgent with a wait of 30 days (beyond one Node timer) waits, and takes the agent that comes', async (t) => {
  const hub = new TetherHub({ workers: { rig: 'right' } });
  const address = await hub.listen('tcp://127.0.0.1:0');
  t.teardown(() => hub.close());
  const waiting = awaitAgent(hub, 'rig', { timeoutMs: 30 * 24 * 3600 * 1000 });
  const early = await Promise.race([waiting.then(() => 'an agent', (e: Error) => e.message), new Promise((r) => setTimeout(() => r(null), 300))]);
  t.equal(early, null, 'still waiting after 300 ms');
  const agent = new Agent({ name: 'rig', secret: 'right', basedir: '/tmp', commands, masterLabel: 'm', open: () => connect(address) });
  const running = agent.run();
  t.teardown(async () => {
    agent.stop();
    await running;
  });
  t.equal((await waiting).name, 'rig');
});

t.test('awaitAgent: a wrong secret is logged at once and the wait goes on; the error counts the failed attempts', async (t) => {
  const hub = new TetherHub({ workers: { rig: 'right' } });
  const address = await hub.listen('tcp://127.0.0.1:0');
  t.teardown(() => hub.close());
  const agent = new Agent({
    name: 'rig', secret: 'wrong', basedir: '/tmp', commands, masterLabel: 'm', open: () => connect(address), maxBackoffMs: 100,
  });
  const running = agent.run();
  const stopAgent = async () => {
    agent.stop();
    await running;
  };
  t.teardown(stopAgent);
  const logged: string[] = [];
  const started = Date.now();
  const error = await awaitAgent(hub, 'rig', { timeoutMs: 1500, log: (l) => logged.push(l) }).catch((e: TetherError) => e);
  t.ok(Date.now() - started >= 1500, 'the wait went on until its end');
  t.match(error, { code: 'AUTH_FAILED', message: /^agent 'rig' did not connect within 2 s \((\d+) attempts? as 'rig' failed authentication: check the secret\)$/ });
  const attempts = Number(/\((\d+) attempt/.exec((error as Error).message)?.[1]);
  t.ok(attempts >= 2, `${attempts} attempts counted`);
  t.match(logged[0], /^an agent calling itself 'rig' \(from 127\.0\.0\.1:\d+\) failed authentication; still waiting for one that passes$/);
  t.equal(logged.length, 2, `one line at once, one summary at the end: ${logged.join(' | ')}`);
  t.match(logged[1], new RegExp(`^${attempts - 1} more failed attempts as 'rig' in the last \\d+ s$`));
  await t.rejects(hub.waitForAgent('rig', 500), { code: 'AUTH_FAILED', message: /failed authentication: check the secret/ }, 'TetherHub.waitForAgent says so too');
  await stopAgent();
  await t.rejects(awaitAgent(hub, 'other', { timeoutMs: 1000, masterUrl: 'tcp://h:1' }), {
    code: 'PEER_TIMEOUT',
    message: "agent 'other' did not connect within 1 s: is tether-agent running with --master tcp://h:1 --name other?",
  });
});
