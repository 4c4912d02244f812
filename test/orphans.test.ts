/**
 * A SIGKILLed agent cannot stop the build processes it started; the next
 * agent on the same basedir finds them through BASEDIR/.tether-run and kills
 * their process groups before it connects, and nothing else: not a process
 * that got a recorded pid later, not one from before a reboot, not one of an
 * agent that still runs. Real agent processes and real process trees.
 * (Run `npx tsc -p tsconfig.json` first: the agent runs from build/.)
 */
import t from 'tap';
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ProcessGroupRecords, RUN_RECORD_DIR } from '../agent/orphans';
import { commands } from '../agent/commands/registry';
import { TetherHub } from '../master-plugin/hub';
import { FakeIO } from './helpers/fake-io';
import { alive, readPid } from './helpers/processes';
import { AGENT_BIN, TetherProcess, tetherAgent } from './helpers/tether-procs';
import { freePort, sleep, tempDir, waitFor } from './helpers/support';

const HAVE_PROC = fs.existsSync('/proc/self/stat') && fs.existsSync('/proc/sys/kernel/random/boot_id');
const skip = HAVE_PROC ? false : 'needs Linux /proc';

/** Field 22 of /proc/PID/stat (written out here again, not taken from agent/orphans.ts). */
function startTimeOf(pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

function bootId(): string {
  return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}

/** A `sleep 600` that leads its own process group, as the agent's commands do. */
function groupLeader(started: ChildProcess[]): number {
  const child = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
  started.push(child);
  return child.pid!;
}

t.test('the process groups of a SIGKILLed agent are killed by the next agent on its basedir, and only they', { skip }, async (t) => {
  const secret = 'orphan-secret';
  const hub = new TetherHub({ workers: { rig: secret }, keepalive: 1 });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const first = await tetherAgent({ port: address.port, name: 'rig', secret });
  const runDir = path.join(first.basedir, RUN_RECORD_DIR);
  // the next agent's master is not there: the orphans must go all the same
  const deadPort = await freePort();
  const second = new TetherProcess('tether-agent (after the restart)', first.dir, [
    AGENT_BIN, '--master', `tcp://127.0.0.1:${deadPort}`, '--name', 'rig',
    '--secret-file', path.join(first.dir, 'secret'), '--basedir', first.basedir,
  ]);
  const testChildren: ChildProcess[] = [];
  const agentChildren: number[] = [];
  let leaderOfOrphans = 0;
  t.teardown(async () => {
    await second.stop();
    await first.stop();
    // should the agent have left the command running: its group, with the shell's foreground sleep
    if (leaderOfOrphans && alive(leaderOfOrphans)) process.kill(-leaderOfOrphans, 'SIGKILL');
    for (const pid of agentChildren) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    for (const child of testChildren) child.kill('SIGKILL');
    await hub.close();
    fs.rmSync(first.dir, { recursive: true, force: true });
  });

  await first.start();
  const remote = await hub.waitForAgent('rig', 10_000);
  const script = 'sleep 600 & echo $! > grandchild.pid; echo $$ > leader.pid; sleep 600';
  const cmd = remote.run('shell', {
    command: ['sh', '-c', script], workdir: '.', env: {}, want_stdout: true, want_stderr: true,
    timeout: null, maxTime: null, usePTY: false, logEnviron: false, logfiles: {},
  }, {});
  cmd.result.catch(() => undefined); // the session is lost with the agent
  const grandchild = await readPid(path.join(first.basedir, 'grandchild.pid'));
  const leader = await readPid(path.join(first.basedir, 'leader.pid'));
  agentChildren.push(grandchild, leader);
  leaderOfOrphans = leader;

  const recordFile = path.join(runDir, String(leader));
  // The agent writes the record right after spawn() returns; the child may run first (CI-style run: it did).
  await waitFor('the record of the running command', () => fs.existsSync(recordFile), { timeoutMs: 5000, intervalMs: 10 }).catch(() => undefined);
  t.ok(fs.existsSync(recordFile), 'the running command has a record named after its process group');
  t.equal(fs.statSync(recordFile).mode & 0o777, 0o600, 'readable by the agent alone');
  t.match(JSON.parse(fs.readFileSync(recordFile, 'utf8')), {
    pid: leader, startTime: startTimeOf(leader), bootId: bootId(), agentPid: first.pid, agentStartTime: startTimeOf(first.pid!),
    command: `sh -c '${script}'`,
  }, 'the record identifies the leader and the agent by pid, start time and boot');

  const firstPid = first.pid!;
  process.kill(firstPid, 'SIGKILL');
  await waitFor('the first agent to die', () => !alive(firstPid), { timeoutMs: 10_000, intervalMs: 20 });
  await sleep(300);
  t.ok(alive(grandchild) && alive(leader), 'with the agent killed, its command and the grandchild run on (the orphans)');

  // Records that must not kill anything, each naming a live group leader:
  const reusedPid = groupLeader(testChildren);
  const rebootedPid = groupLeader(testChildren);
  const ownedPid = groupLeader(testChildren);
  const write = (pid: number, fields: Record<string, unknown>) => fs.writeFileSync(path.join(runDir, String(pid)), JSON.stringify({
    pid, startTime: startTimeOf(pid), bootId: bootId(), agentPid: firstPid, agentStartTime: '1', command: `sleep 600 #${pid}`, ...fields,
  }), { mode: 0o600 });
  // ... its pid now belongs to a process that started at another time,
  write(reusedPid, { startTime: String(Number(startTimeOf(reusedPid)) + 1) });
  // ... written before a reboot,
  write(rebootedPid, { bootId: '00000000-0000-0000-0000-000000000000' });
  // ... of an agent that still runs on this basedir (this test process plays it),
  write(ownedPid, { agentPid: process.pid, agentStartTime: startTimeOf(process.pid) });
  // ... and one that is not a record at all.
  fs.writeFileSync(path.join(runDir, 'garbage'), '{"pid": 1');

  await second.start();
  await second.waitForOutput(/reconnecting in/, 20_000); // killOrphans() ran before the first attempt
  await waitFor('the orphaned group to be killed', () => !alive(grandchild) && !alive(leader), { timeoutMs: 10_000, intervalMs: 20 })
    .catch(() => undefined);
  t.notOk(alive(leader), 'the orphaned command is killed');
  t.notOk(alive(grandchild), 'its grandchild (same process group) is killed');
  const lines = second.output.split('\n').filter((l) => /process group/.test(l));
  t.ok(lines.some((l) => l.endsWith(`tether-agent: killed orphaned process group ${leader} (sh -c '${script}') left by an earlier agent (pid ${firstPid})`)),
    'the new agent logs what it killed');
  t.equal(lines.filter((l) => /killed orphaned/.test(l)).length, 1, 'one group killed, one line');
  t.notOk(fs.existsSync(recordFile), 'its record is gone');

  t.ok(alive(reusedPid), 'a recorded pid with another start time is not killed');
  t.notOk(fs.existsSync(path.join(runDir, String(reusedPid))), '... and its record is removed');
  t.ok(alive(rebootedPid), 'a record from another boot kills nothing');
  t.notOk(fs.existsSync(path.join(runDir, String(rebootedPid))), '... and is removed');
  t.notOk(fs.existsSync(path.join(runDir, 'garbage')), 'an unreadable record is removed');
  t.ok(alive(ownedPid), 'the group of an agent that still runs is left alone');
  t.ok(fs.existsSync(path.join(runDir, String(ownedPid))), '... with its record');
  t.ok(lines.some((l) => l.includes(`process group ${ownedPid} (sleep 600 #${ownedPid}) belongs to agent pid ${process.pid}, which still runs`)),
    '... and a warning');
});

t.test('a command is recorded while its process runs, and the directory goes with the last record', { skip }, async (t) => {
  const base = await tempDir(t, 'tether-orphans-');
  const logs: string[] = [];
  const records = new ProcessGroupRecords(base, (l) => logs.push(l));
  const io = new FakeIO({ basedir: base, processGroups: records });
  const pidFile = path.join(base, 'wd', 'leader.pid');
  const run = commands.shell({ workdir: 'wd', command: ['sh', '-c', 'echo $$ > leader.pid; sleep 0.5'], logEnviron: false }, io);
  const leader = await readPid(pidFile);
  const record = path.join(base, RUN_RECORD_DIR, String(leader));
  t.ok(fs.existsSync(record), 'recorded while it runs');
  await run;
  t.equal(io.rc, 0);
  await waitFor('the record to go', () => !fs.existsSync(record), { timeoutMs: 5000, intervalMs: 10 }).catch(() => undefined);
  t.notOk(fs.existsSync(record), 'the record is removed once the process has exited');
  t.notOk(fs.existsSync(path.join(base, RUN_RECORD_DIR)), 'and the empty directory');
  t.same(logs, []);
});

t.test('a basedir where records cannot be written does not stop commands', { skip }, async (t) => {
  const base = await tempDir(t, 'tether-orphans-');
  const logs: string[] = [];
  const records = new ProcessGroupRecords(base, (l) => logs.push(l));
  // a file where the directory should be: mkdir fails even for root
  fs.writeFileSync(path.join(base, RUN_RECORD_DIR), 'in the way');
  const io = new FakeIO({ basedir: base, processGroups: records });
  await commands.shell({ workdir: 'wd', command: ['echo', 'still runs'], logEnviron: false }, io);
  t.equal(io.rc, 0);
  t.equal(io.bytes('stdout').toString(), 'still runs\n');
  t.match(logs, [/^cannot record process group \d+ in .*\.tether-run \(.*\): if this agent is killed, the next one will not stop it$/]);
  records.killOrphans();
  t.match(logs[1], /^cannot look for orphaned process groups in .*\.tether-run: /, 'the startup sweep logs and goes on');
});
