/**
 * The Python side of the master plugin (master-plugin/buildbot/tether_buildbot):
 * TetherService run by a real Buildbot master, with a stand-in for
 * tether-master (test/buildbot/standin-tether-master) that records how it was
 * started; and the msgpack fixes.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { alive } from './helpers/processes';
import {
  BUILDBOT_TEST_DIR, buildbotEnv, createMaster, type MasterOptions, PLUGIN_DIR, PYTHON, pyValue, teardownBuildbot, tetherServiceConfig,
} from './helpers/buildbot';
import { REPO_ROOT, freePort, makeTempDir, sleep, waitFor } from './helpers/support';
import { MAX_GRACE_SECONDS, MAX_KEEPALIVE_SECONDS } from '../wire/handshake';

const STANDIN = path.join(BUILDBOT_TEST_DIR, 'standin-tether-master');

interface Rec {
  event: 'start' | 'sigterm';
  pid: number;
  argv?: string[];
  stdin?: string;
  cwd?: string;
}

function records(file: string): Rec[] {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l) as Rec);
}

const WORKERS = [
  { name: 'dev-a', password: 'secret-alpha-1234' },
  { name: 'dev-b', password: 'secret-beta-5678' },
];
const BUILDERS = [{ name: 'noop', steps: ["steps.ShellCommand(command=['true'])"] }];

t.test('config errors are reported by buildbot checkconfig', async (t) => {
  const master = await createMaster({
    workers: WORKERS, builders: BUILDERS,
    // the protocol is removed AFTER the service line: the check sees the whole config
    extraConfig: tetherServiceConfig("listen=['tcp://127.0.0.1:1']") + "\nc['protocols'] = {}",
  });
  teardownBuildbot(t, master);
  const r = await master.checkConfig();
  t.notOk(r.ok, 'checkconfig fails without the msgpack protocol');
  t.match(r.output, /TetherService needs Buildbot's msgpack worker protocol/);
  t.match(r.output, /msgpack_experimental_v7/);

  await master.writeConfig({ ...master.config, extraConfig: tetherServiceConfig("listen='tcp://127.0.0.1:1'") });
  const r2 = await master.checkConfig();
  t.notOk(r2.ok, 'checkconfig fails with a bad listen');
  t.match(r2.output, /TetherService: listen must be a non-empty list of URLs/);

  await master.writeConfig({ ...master.config, extraConfig: tetherServiceConfig("listen=['tcp://127.0.0.1:1'], cert='c.pem'") });
  const r3 = await master.checkConfig();
  t.notOk(r3.ok, 'cert without key');
  t.match(r3.output, /cert and key go together/);

  // tether-master's bounds, at config time: beyond them it would not start.
  for (const [option, most] of [['keepalive', MAX_KEEPALIVE_SECONDS], ['grace', MAX_GRACE_SECONDS]] as const) {
    await master.writeConfig({ ...master.config, extraConfig: tetherServiceConfig(`listen=['tcp://127.0.0.1:1'], ${option}=${most + 1}`) });
    const r = await master.checkConfig();
    t.notOk(r.ok, `${option} beyond ${most} s`);
    t.match(r.output, new RegExp(`TetherService: ${option} must be a whole number of seconds from 1 to ${most}`));
  }

  await master.writeConfig({ ...master.config, extraConfig: tetherServiceConfig(`listen=['tcp://127.0.0.1:1'], keepalive=${MAX_KEEPALIVE_SECONDS}, grace=${MAX_GRACE_SECONDS}`) });
  const r4 = await master.checkConfig();
  t.ok(r4.ok, `a good config passes (${r4.output.trim()})`);
});

t.test('TetherService runs, restarts, reconfigures and stops tether-master', async (t) => {
  const dir = await makeTempDir('tether-plugin-');
  const recordFile = path.join(dir, 'records.jsonl');
  const listenPort = await freePort();
  const listen = [`tcp://127.0.0.1:${listenPort}`, `tls://127.0.0.1:${listenPort + 1}`];
  const serviceKwargs = (extra: string[] = []) => [
    `listen=${pyValue(listen)}`,
    `command=${pyValue([process.execPath, STANDIN, '--record', recordFile, ...extra])}`,
    "cert='/etc/tether/cert.pem'", "key='/etc/tether/key.pem'", 'keepalive=30', 'grace=120', 'stop_timeout=2',
  ].join(', ');
  const options: MasterOptions = { workers: WORKERS, builders: BUILDERS, extraConfig: tetherServiceConfig(serviceKwargs()) };
  const master = await createMaster(options);
  t.teardown(() => {
    // never leave a stand-in behind
    for (const r of records(recordFile)) if (r.event === 'start' && alive(r.pid)) process.kill(r.pid, 'SIGKILL');
  });
  teardownBuildbot(t, master, dir);

  await master.start();
  const starts = () => records(recordFile).filter((r) => r.event === 'start');
  const first = await waitFor('tether-master to start', () => starts()[0]);

  t.same(first.argv, [
    '--record', recordFile,
    '--buildbot', `ws://127.0.0.1:${master.msgpackPort}`,
    '--listen', listen[0], '--listen', listen[1],
    '--workers-file', '-',
    '--cert', '/etc/tether/cert.pem', '--key', '/etc/tether/key.pem',
    '--keepalive', '30', '--grace', '120',
  ], 'command line');
  t.same(JSON.parse(first.stdin!), {
    workers: [{ name: 'dev-a', secret: 'secret-alpha-1234' }, { name: 'dev-b', secret: 'secret-beta-5678' }],
  }, 'workers JSON on stdin');
  for (const w of WORKERS) t.notOk(first.argv!.some((a) => a.includes(w.password)), `no secret of ${w.name} in argv`);
  t.equal(fs.realpathSync(first.cwd!), fs.realpathSync(master.dir), 'runs in the master directory');

  await waitFor('the stand-in output in twistd.log', () => master.logFrom(0).includes('stand-in leaking the secret'));
  const log1 = master.logFrom(0);
  t.match(log1, `tether: stand-in tether-master pid=${first.pid} started`, 'stdout lines logged with tether: prefix');
  t.match(log1, 'tether: (stderr) stand-in stderr line', 'stderr lines logged');
  t.match(log1, 'tether: (stderr) stand-in leaking the secret: <secret hidden>', 'a secret printed by the child is masked');
  for (const w of WORKERS) t.notMatch(log1, w.password, `twistd.log never shows ${w.name}'s secret`);

  // the child dies: restarted after 1 s
  const killedAt = Date.now();
  process.kill(first.pid, 'SIGKILL');
  const second = await waitFor('a restart', () => starts().find((r) => r.pid !== first.pid), { timeoutMs: 15_000 });
  const delay = Date.now() - killedAt;
  t.ok(delay >= 900, `restart waited for the backoff (${delay} ms)`);
  t.same(second.argv, first.argv, 'restarted with the same arguments');
  t.equal(second.stdin, first.stdin, 'and the same workers');
  t.notOk(alive(first.pid), 'the killed child is gone');
  t.match(master.logFrom(0), /tether: tether-master \(pid \d+\) ended unexpectedly \(signal 9\); restarting in 1s/);

  // a second quick death doubles the backoff
  process.kill(second.pid, 'SIGKILL');
  const third = await waitFor('a second restart', () => starts().find((r) => r.pid !== first.pid && r.pid !== second.pid),
    { timeoutMs: 15_000 });
  t.match(master.logFrom(0), /restarting in 2s/, 'backoff doubled');

  // reconfig with nothing changed: no restart
  let count = starts().length;
  await master.reconfig();
  await sleep(1500);
  t.equal(starts().length, count, 'an unchanged reconfig does not restart tether-master');
  t.ok(alive(third.pid), 'still the same child');

  // reconfig with a new worker and a changed password: restart with the new list
  const workers2 = [
    { name: 'dev-a', password: 'secret-alpha-changed' },
    WORKERS[1]!,
    { name: 'dev-c', password: 'secret-gamma-9012' },
  ];
  await master.writeConfig({ ...options, workers: workers2 });
  await master.reconfig();
  const fourth = await waitFor('a restart after the workers changed', () => starts().find((r) => r.pid !== first.pid &&
    r.pid !== second.pid && r.pid !== third.pid), { timeoutMs: 15_000 });
  t.ok(records(recordFile).some((r) => r.event === 'sigterm' && r.pid === third.pid), 'the old child got SIGTERM');
  await waitFor('the old child to exit', () => !alive(third.pid), { timeoutMs: 5000 });
  t.same(JSON.parse(fourth.stdin!).workers, workers2.map((w) => ({ name: w.name, secret: w.password })),
    'the new workers are on stdin');
  count = starts().length;

  // reconfig with the service's own arguments changed (and a child that ignores SIGTERM)
  await master.writeConfig({ ...options, workers: workers2, extraConfig: tetherServiceConfig(serviceKwargs(['--ignore-term'])) });
  await master.reconfig();
  const fifth = await waitFor('a restart after the arguments changed', () => starts().slice(count)[0], { timeoutMs: 15_000 });
  t.ok(fifth.argv!.includes('--ignore-term'), 'started with the new command');
  t.notOk(alive(fourth.pid), 'the previous child is gone');

  // master stop: SIGTERM, ignored, then SIGKILL after stop_timeout
  await master.stop();
  t.ok(records(recordFile).some((r) => r.event === 'sigterm' && r.pid === fifth.pid), 'the child got SIGTERM at master stop');
  t.notOk(alive(fifth.pid), 'and is gone once the master has stopped');
  t.match(master.logFrom(0), /ignored SIGTERM; killing it/, 'it was killed after stop_timeout');
  t.equal(starts().length, count + 1, 'no restart while stopping');
});

t.test('TetherService masks every secret it could log, however short, a longer one whole', async (t) => {
  const dir = await makeTempDir('tether-plugin-mask-');
  const recordFile = path.join(dir, 'records.jsonl');
  // 'Q7' is inside the longer one: masking the short one first would leave '<secret hidden>-longer-secret'
  const workers = [{ name: 'w1', password: 'Q7' }, { name: 'w2', password: 'Q7-longer-secret' }, { name: 'w3', password: 'J' }];
  const master = await createMaster({
    workers, builders: BUILDERS,
    extraConfig: tetherServiceConfig([
      `listen=['tcp://127.0.0.1:${await freePort()}']`,
      `command=${pyValue([process.execPath, STANDIN, '--record', recordFile])}`,
      // an admin's extra_args may hold a secret too: the command line is logged
      "extra_args=['--worker', 'w1:Q7']",
    ].join(', ')),
  });
  t.teardown(() => {
    for (const r of records(recordFile)) if (r.event === 'start' && alive(r.pid)) process.kill(r.pid, 'SIGKILL');
  });
  teardownBuildbot(t, master, dir);
  await master.start();
  await waitFor('every secret in twistd.log', () => master.logFrom(0).includes('stand-in leaking every secret'));
  const lines = master.logFrom(0).split('\n').filter((l) => / tether: /.test(l));
  const leak = lines.find((l) => l.includes('stand-in leaking every secret'));
  t.match(leak, /tether: \(stderr\) stand-in leaking every secret: <secret hidden> <secret hidden> <secret hidden>$/, 'all three hidden');
  const started = lines.find((l) => l.includes('started tether-master'));
  t.match(started, / --worker w1:<secret hidden>$/, 'the command line too');
  for (const w of workers) {
    t.notOk(lines.some((l) => l.replace(/<secret hidden>/g, '').includes(w.password)), `${w.name}'s secret is in no tether line`);
  }
});

t.test('default command: node from PATH running bin/tether-master.js', async (t) => {
  const dir = await makeTempDir('tether-plugin-node-');
  const recordFile = path.join(dir, 'records.jsonl');
  // a "node" that is really the stand-in, found on PATH by the service
  const fakeNode = path.join(dir, 'tether-fake-node');
  fs.writeFileSync(fakeNode, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(STANDIN)} ` +
    `--record ${JSON.stringify(recordFile)} "$@"\n`, { mode: 0o755 });
  const master = await createMaster({
    workers: WORKERS.slice(0, 1), builders: BUILDERS,
    env: { PATH: `${dir}${path.delimiter}${process.env.PATH ?? ''}` },
    extraConfig: tetherServiceConfig("listen=['tcp://127.0.0.1:9'], node='tether-fake-node'"),
  });
  teardownBuildbot(t, master, dir);
  await master.start();
  const rec = await waitFor('tether-master to start', () => records(recordFile).find((r) => r.event === 'start'));
  t.same(rec.argv, [
    '--record', recordFile, path.join(REPO_ROOT, 'bin', 'tether-master.js'),
    '--buildbot', `ws://127.0.0.1:${master.msgpackPort}`, '--listen', 'tcp://127.0.0.1:9', '--workers-file', '-',
  ], 'node <checkout>/bin/tether-master.js <args>');
  t.match(master.logFrom(0), `tether: started tether-master (pid ${rec.pid}): ${fakeNode} ${path.join(REPO_ROOT, 'bin', 'tether-master.js')}`);
  await master.stop();
  t.notOk(alive(rec.pid), 'stopped with the master');
});

t.test('msgpack fixes: patch once, recognise a fixed handler', async (t) => {
  const script = `
import json, sys
sys.path.insert(0, ${JSON.stringify(PLUGIN_DIR)})
from tether_buildbot import msgpack_fix as m
from buildbot.worker.protocols.manager.msgpack import BuildbotWebSocketServerProtocol as P
# importing the package applied the fixes already
out = {'again': m.fix_msgpack(), 'read_file': m.fix_msgpack_read_file()}
# the patched handlers behave like fixed upstream ones
out['classify'] = [m._classify_read_file(P.call_update_read_file), m._classify_upload_file_utime(P.call_update_upload_file_utime)]
# a real protocol object answers update_read_file with the data
class Reader:
    def remote_read(self, n): return b'abc'[:n]
p = P.__new__(P)
p.command_id_to_reader_map = {'7': Reader()}
sent = []
p.send_response_msg = lambda msg, result, exc: sent.append([result.decode() if isinstance(result, bytes) else result, exc])
P.call_update_read_file(p, {'op': 'update_read_file', 'seq_number': 1, 'command_id': '7', 'length': 2})
out['response'] = sent
print(json.dumps(out))
`;
  const out = await new Promise<string>((resolve, reject) => {
    execFile(PYTHON, ['-c', script], { env: buildbotEnv() }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(String(stdout));
    });
  });
  t.same(JSON.parse(out), {
    again: { call_update_read_file: 'already-patched', call_update_upload_file_utime: 'already-patched' },
    read_file: 'already-patched',
    classify: ['upstream-fixed', 'upstream-fixed'],
    response: [['ab', false]],
  });
});
