/**
 * A cut link costs a pause, not a command: the agent keeps running and
 * buffering, reconnects, and the session resumes where the acks say, so
 * output arrives once and in order. Restarts and an expired grace period
 * end the session the clear way.
 */
import t from 'tap';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { Agent } from '../agent/agent';
import type { Command } from '../agent/commands/command';
import { commands } from '../agent/commands/registry';
import { TetherHub } from '../master-plugin/hub';
import type { RemoteAgent } from '../master-plugin/remote';
import { connect } from '../wire/transport';
import { FaultProxy } from './helpers/fault-proxy';
import { tetherAgent } from './helpers/tether-procs';
import { prng } from './helpers/line-sim';
import { alive } from './helpers/processes';
import { makeTempDir, sleep, waitFor } from './helpers/support';

function shellArgs(script: string, workdir: string) {
  return {
    command: ['sh', '-c', script], workdir, env: {}, want_stdout: true, want_stderr: true,
    timeout: 120, maxTime: null, usePTY: false, logEnviron: false, logfiles: {},
  };
}

async function setup(t: Tap.Test, hubOptions: { grace?: number } = {}, extraCommands: Record<string, Command> = {}) {
  const dir = await makeTempDir('tether-resume-');
  const hub = new TetherHub({ workers: { w: 'r' }, keepalive: 1, ...hubOptions });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const proxy = new FaultProxy(address.port);
  await proxy.start();
  const logs: string[] = [];
  const agent = new Agent({
      name: 'w', secret: 'r', basedir: dir, commands: { ...commands, ...extraCommands }, masterLabel: 'proxy', maxBackoffMs: 300,
      open: () => connect({ kind: 'tcp', host: '127.0.0.1', port: proxy.port }), log: (l) => logs.push(l),
    });
  const running = agent.run();
  t.teardown(async () => {
    agent.stop();
    await running;
    await proxy.close();
    await hub.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const remote = await hub.waitForAgent('w', 5000);
  return { dir, hub, proxy, agent, remote, logs };
}

t.test('a command survives resets and silent drops, every line once and in order', async (t) => {
  const { proxy, remote, hub } = await setup(t);
  let out = '';
  let rc: unknown;
  const resumed: RemoteAgent[] = [];
  hub.on('agentResumed', (a: RemoteAgent) => resumed.push(a));
  const cmd = remote.run('shell', shellArgs('i=0; while [ $i -lt 1200 ]; do echo "line $i"; i=$((i+1)); sleep 0.005; done', '.'), {
    stdout: (c) => void (out += c),
    update: (k, v) => void (k === 'rc' && (rc = v)),
  });
  const random = prng(42);
  for (let cut = 0; cut < 6; cut++) {
    await sleep(300 + random() * 500);
    if (cut % 2 === 0) proxy.reset();
    else proxy.silence();
    const before = resumed.length;
    await waitFor(`the session to resume after cut ${cut}`, () => resumed.length > before, { timeoutMs: 10_000, intervalMs: 20 });
  }
  const result = await cmd.result;
  t.same(result, { failure: null });
  t.equal(rc, 0);
  const lines = out.trimEnd().split('\n');
  t.equal(lines.length, 1200, 'no line lost or doubled');
  t.ok(lines.every((l, i) => l === `line ${i}`), 'in order');
  t.equal(resumed.length, 6, 'the session resumed after each cut');
  t.ok(resumed.every((a) => a === remote), 'it stayed the same agent connection');
  t.equal(proxy.connections, 7);
  const next = remote.run('shell', shellArgs('true', '.'), {});
  t.same(await next.result, { failure: null });
  t.equal(next.stream, cmd.stream + 1, 'the resumed session keeps counting stream ids');
});

t.test('with the link up a fast command waits for a slow master; with it down it writes on into the spool', async (t) => {
  const chunk = 64 * 1024;
  const chunks = 64;
  let written = 0;
  const burst: Command = async (_args, io) => {
    for (let i = 0; i < chunks; i++) {
      await io.stdout(Buffer.alloc(chunk, 0x61 + (i % 26)));
      written++;
    }
  };
  const { proxy, remote } = await setup(t, {}, { burst });
  let release!: () => void;
  const slowMaster = new Promise<void>((resolve) => (release = resolve));
  const received: Buffer[] = [];
  const cmd = remote.run('burst', {}, {
    // The master holds the first chunk (and so all credit) until released.
    stdout: async (c) => {
      received.push(c);
      await slowMaster;
    },
  });
  await sleep(500);
  const window = 256 * 1024;
  t.ok(written > 0 && written * chunk <= 2 * window + chunk, `${written} of ${chunks} writes done: one window sent, one waiting, then the command waits`);
  const held = written;
  proxy.silence();
  await waitFor('the writes to go on once the agent found the link dead', () => written > held + 1, { timeoutMs: 15_000, intervalMs: 20 });
  t.pass(`with the link down the command went on (${written} writes)`);
  release();
  t.same(await cmd.result, { failure: null });
  const all = Buffer.concat(received);
  t.equal(all.length, chunk * chunks, 'every byte arrived after the resume');
  t.ok(all.every((b, i) => b === 0x61 + (Math.floor(i / chunk) % 26)), 'in order');
});

t.test('an agent process restart fails the commands of its old session with a clear message', async (t) => {
  const hub = new TetherHub({ workers: { rig: 'restart-secret' }, keepalive: 1 });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const first = await tetherAgent({ port: address.port, name: 'rig', secret: 'restart-secret' });
  const second = await tetherAgent({ port: address.port, name: 'rig', secret: 'restart-secret' });
  t.teardown(async () => {
    await first.stop();
    await second.stop();
    await hub.close();
    for (const p of [first, second]) rmSync(p.dir, { recursive: true, force: true });
  });
  await first.start();
  const remote = await hub.waitForAgent('rig', 10_000);
  const cmd = remote.run('shell', shellArgs('sleep 30', '.'), {});
  await sleep(300);
  process.kill(first.pid!, 'SIGKILL');
  await second.start();
  await t.rejects(cmd.result, /restarted or connected again: commands of its previous session are lost/);
  const fresh = await hub.waitForAgent('rig', 10_000);
  t.not(fresh, remote, 'a new session');
});

t.test('past the grace period the master ends the session and the agent kills the orphaned tree', async (t) => {
  const { proxy, remote, dir, logs } = await setup(t, { grace: 1 });
  const pidFile = path.join(dir, 'pid');
  const cmd = remote.run('shell', shellArgs(`sh -c 'echo $$ > ${pidFile}; exec sleep 60' & wait`, '.'), {});
  await waitFor('the command to write its pid', () => existsSync(pidFile), { timeoutMs: 10_000, intervalMs: 20 });
  await sleep(100);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  t.ok(alive(pid), 'the grandchild runs');
  proxy.refusing = true;
  proxy.reset();
  await t.rejects(cmd.result, /did not reconnect within 1 s/, 'the command fails as a lost worker');
  proxy.refusing = false;
  await waitFor('the orphaned process tree to be killed', () => !alive(pid), { timeoutMs: 10_000, intervalMs: 50 });
  t.notOk(alive(pid), 'the orphaned process tree is gone');
  t.ok(logs.some((l) => /no longer knows this agent's session: stopping its 1 orphaned command/.test(l)), 'the agent says why');
});
