/**
 * SIGTERM or SIGINT stops the agent in bounded time (agent/stop.ts): its
 * commands get their own interrupt, what still runs KILL_AFTER_MS later is
 * KILLed with its whole process group, the master gets each command's result
 * and then the session's end, and the agent exits 0. A second signal hurries
 * the KILL; with the link down the agent does not wait for it. Real agent
 * processes, a hub on loopback, a command whose processes ignore SIGTERM.
 * (Run `npx tsc -p tsconfig.json` first: the agent runs from build/.)
 */
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Agent } from '../agent/agent';
import { commands } from '../agent/commands/registry';
import { KILL_AFTER_MS, STOP_BOUND_MS } from '../agent/stop';
import { TetherHub } from '../master-plugin/hub';
import type { RemoteAgent } from '../master-plugin/remote';
import { connect } from '../wire/transport';
import { FaultProxy } from './helpers/fault-proxy';
import { groupMembers, readPid } from './helpers/processes';
import { tetherAgent } from './helpers/tether-procs';
import { REPO_ROOT, tempDir, waitFor, withTimeout } from './helpers/support';

const skip = fs.existsSync('/proc/self/stat') ? false : 'needs Linux /proc';
const SECRET = 'stop-secret';

function shellArgs(script: string) {
  return {
    command: ['sh', '-c', script], workdir: '.', env: {}, want_stdout: true, want_stderr: true,
    timeout: null, maxTime: null, usePTY: false, logEnviron: false, logfiles: {},
  };
}

/**
 * A hub, an agent (through a FaultProxy with `proxied`) and, running on it,
 * the tester's command: a shell that ignores TERM, as does its `sleep 30`,
 * interrupted with TERM and, a second later, TERM again (sigtermTime 1).
 */
async function running(t: Test, { proxied = false } = {}) {
  const hub = new TetherHub({ workers: { rig: SECRET }, keepalive: 1 });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const proxy = proxied ? new FaultProxy(address.port) : null;
  await proxy?.start();
  const agent = await tetherAgent({ port: proxy?.port ?? address.port, name: 'rig', secret: SECRET });
  let leader = 0;
  t.teardown(async () => {
    await agent.stop();
    // should the agent have left its command running: the group it was started in
    if (leader && groupMembers(leader).length > 0) process.kill(-leader, 'SIGKILL');
    await proxy?.close();
    await hub.close();
    fs.rmSync(agent.dir, { recursive: true, force: true });
  });
  await agent.start();
  const remote = await hub.waitForAgent('rig', 10_000);
  const seen = { header: '', rc: undefined as unknown };
  const cmd = remote.run('shell', {
    ...shellArgs('trap "" TERM; echo $$ > leader.pid; sleep 30'), interruptSignal: 'TERM', sigtermTime: 1,
  }, {
    header: (text) => void (seen.header += text),
    update: (key, value) => void (key === 'rc' && (seen.rc = value)),
  });
  const result = cmd.result.catch((error: Error) => error);
  leader = await readPid(path.join(agent.basedir, 'leader.pid'));
  await waitFor('sh and its sleep in the group', () => groupMembers(leader).length === 2, { timeoutMs: 10_000, intervalMs: 20 });
  return { hub, proxy, agent, remote, leader, seen, result };
}

/** The agent's exit, or the timeout's error after `ms`. */
function exitWithin(agent: { ended(): Promise<unknown> }, ms: number): Promise<unknown> {
  return withTimeout(agent.ended(), ms, 'the agent to exit').catch((error: Error) => error.message);
}

/** How the session ended, as the master tells a command started after it. */
async function sessionEnd(remote: RemoteAgent): Promise<unknown> {
  await withTimeout(remote.closed, 5000, 'the session to end');
  return remote.run('shell', shellArgs('true'), {}).result.then((r) => r, (error: Error) => error);
}

t.test('SIGTERM: the command gets its signal, its group KILL after the grace, the master its result; exit 0 in the bound', { skip }, async (t) => {
  const { agent, remote, leader, seen, result } = await running(t);
  const sent = Date.now();
  process.kill(agent.pid!, 'SIGTERM');
  const exit = await exitWithin(agent, STOP_BOUND_MS + 5000);
  const took = Date.now() - sent;
  t.same(exit, { code: 0, signal: null }, 'the agent exits 0');
  t.ok(took >= KILL_AFTER_MS && took < STOP_BOUND_MS, `after the grace for the command's own signal, within the bound (${took} ms)`);
  t.same(groupMembers(leader), [], 'nothing of the command\'s process group runs');
  t.same(await result, { failure: null }, 'the master got the command\'s completion');
  t.match(seen.header, '\ncommand interrupted, attempting to kill\n', 'an interrupt, as Buildbot words it');
  t.match(seen.header, 'process killed by signal 9\n', 'ended by the KILL');
  t.equal(seen.rc, -1);
  t.match(await sessionEnd(remote), { code: 'SHUTDOWN', message: 'peer closed the session: the agent is stopping' },
    'then the session ended with the agent\'s reason');
  t.match(agent.output, /tether-agent: SIGTERM: stopping/);
  t.match(agent.output, `tether-agent: SIGKILL to process group ${leader} (sh -c 'trap "" TERM; echo $$ > leader.pid; sleep 30'), `);
});

t.test('a second SIGTERM KILLs the group at once and still reports it; exit 0', { skip }, async (t) => {
  const { agent, leader, seen, result } = await running(t);
  const sent = Date.now();
  process.kill(agent.pid!, 'SIGTERM');
  await agent.waitForOutput(/SIGTERM: stopping/, 5000);
  process.kill(agent.pid!, 'SIGTERM');
  const exit = await exitWithin(agent, STOP_BOUND_MS + 5000);
  const took = Date.now() - sent;
  t.same(exit, { code: 0, signal: null }, 'the agent exits 0, not by the signal');
  t.ok(took < KILL_AFTER_MS, `before the grace would have ended (${took} ms)`);
  t.same(groupMembers(leader), [], 'nothing of the command\'s process group runs');
  t.same(await result, { failure: null }, 'the master got the command\'s completion');
  t.match(seen.header, 'process killed by signal 9\n');
  t.equal(seen.rc, -1);
  t.match(agent.output, /tether-agent: SIGTERM again: /);
});

t.test('SIGINT with the link down: the group is KILLed all the same and the agent exits 0 in the bound', { skip }, async (t) => {
  const { agent, proxy, leader } = await running(t, { proxied: true });
  proxy!.refusing = true;
  proxy!.reset();
  await agent.waitForOutput(/lost the link/, 10_000);
  const sent = Date.now();
  process.kill(agent.pid!, 'SIGINT');
  const exit = await exitWithin(agent, STOP_BOUND_MS + 5000);
  const took = Date.now() - sent;
  t.same(exit, { code: 0, signal: null }, 'the agent exits 0');
  t.ok(took < STOP_BOUND_MS, `within the bound (${took} ms)`);
  t.same(groupMembers(leader), [], 'nothing of the command\'s process group runs');
  t.match(agent.output, /tether-agent: SIGINT: stopping/);
});

t.test('while it stops, the agent starts no command: the master gets REJECT SHUTDOWN for it', { skip }, async (t) => {
  const dir = await tempDir(t, 'tether-stop-');
  const hub = new TetherHub({ workers: { w: SECRET }, keepalive: 1 });
  const address = await hub.listen('tcp://127.0.0.1:0');
  t.teardown(() => hub.close());
  const logs: string[] = [];
  const agent = new Agent({
    name: 'w', secret: SECRET, basedir: dir, commands, masterLabel: 'hub', log: (l) => logs.push(l),
    open: () => connect({ kind: 'tcp', host: '127.0.0.1', port: address.port }),
  });
  const stopped = agent.run();
  const remote = await hub.waitForAgent('w', 5000);
  // TERM is ignored and there is no sigtermTime: only the agent's KILL ends it
  const first = remote.run('shell', { ...shellArgs('trap "" TERM; echo $$ > leader.pid; sleep 30'), interruptSignal: 'TERM' }, {});
  const leader = await readPid(path.join(dir, 'leader.pid'));
  t.teardown(() => {
    if (groupMembers(leader).length > 0) process.kill(-leader, 'SIGKILL');
  });
  agent.stop();
  const late = await remote.run('shell', shellArgs('echo never'), {}).result;
  t.same(late, { failure: { code: 'SHUTDOWN', message: 'the agent is stopping: it starts no more commands' } }, 'refused');
  t.ok(groupMembers(leader).length > 0, 'the first command still runs: its grace is not over');
  agent.stop(true);
  await withTimeout(stopped, STOP_BOUND_MS, 'the agent to stop');
  t.same(await first.result, { failure: null }, 'the first command completed');
  t.same(groupMembers(leader), [], 'its group is gone');
  t.ok(logs.some((l) => l.startsWith(`SIGKILL to process group ${leader} `)), 'the KILL is logged');
});

t.test('the systemd unit gives the agent more than twice its bound to stop, and signals it alone', async (t) => {
  const unit = fs.readFileSync(path.join(REPO_ROOT, 'agent', 'tether-agent.service'), 'utf8');
  const timeout = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1]);
  t.ok(timeout * 1000 > 2 * STOP_BOUND_MS, `TimeoutStopSec=${timeout}, the agent's bound ${STOP_BOUND_MS / 1000} s`);
  t.match(unit, /^KillMode=mixed$/m, 'SIGTERM to the agent, SIGKILL to what is left after it');
});
