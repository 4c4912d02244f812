/**
 * The end-to-end build (test/buildbot/e2e-steps.py) on a real master with the
 * reference buildbot-worker over msgpack: what every step must produce, and
 * the normalised record a run through Tether is compared with.
 *
 * The master loads tether_buildbot's msgpack fixes (fixMsgpack): without them
 * Buildbot's msgpack master sends no data for downloads and fails keepstamp
 * uploads.
 */
import t from 'tap';
import { createMaster, createWorker, normaliseBuild, teardownBuildbot } from './helpers/buildbot';
import { checkE2E, e2eMasterOptions, e2eRecords, prepareE2E, runE2E, E2E_MAIN_STEPS } from './helpers/buildbot-e2e';

t.test('e2e build through buildbot-worker (msgpack)', async (t) => {
  const fx = await prepareE2E();
  const master = await createMaster(e2eMasterOptions(fx, [{ name: 'ref-worker', password: 'ref-secret-1' }]));
  const worker = await createWorker({ master, name: 'ref-worker', password: 'ref-secret-1' });
  teardownBuildbot(t, master, worker, fx.root);

  await master.start();
  t.match(master.logFrom(0), /tether: patched buildbot msgpack BuildbotWebSocketServerProtocol\.call_update_read_file/,
    'the read_file fix is loaded');
  await worker.start();
  await master.waitForWorker('ref-worker');

  const res = await runE2E(master, fx);
  checkE2E(t, fx, res);

  // the comparison record: stable parts spelled out here
  const rec = e2eRecords(res, fx, worker.dir);
  t.same(rec.main.steps.map((s) => [s.name, s.result]), E2E_MAIN_STEPS.filter(([n]) => n !== 'worker_preparation'));
  const step = (name: string) => rec.main.steps.find((s) => s.name === name)!;
  t.same(step('timeout').logs.stdio, {
    stdout: ['before the silence'], stderr: [],
    header: [
      'command timed out: 2 seconds without output running <COMMAND>, attempting to kill',
      'process killed by signal 9', 'program finished with exit code -1', 'elapsedTime=<T>',
    ],
  }, 'record: timeout step');
  t.same(step('utf8').logs.stdio, {
    stdout: ['grüße ✓ 日本'], stderr: ['stderr: grüße ✓ 日本'],
    header: ['program finished with exit code 0', 'elapsedTime=<T>'],
  }, 'record: utf8 step');
  t.same(step('file-download').logs, { stdio: { stdout: [], stderr: [], header: ['program finished with exit code 0'] } },
    'record: download step');
  const stdio = (name: string) => step(name).logs.stdio as { stdout: string[]; stderr: string[]; header: string[] };
  const bigOut = stdio('big-log').stdout;
  t.equal(bigOut.length, 7, 'record: big log summarised');
  t.match(bigOut[3], /^<\.\.\. 65536 lines, sha256 [0-9a-f]{64} \.\.\.>$/);
  t.same(stdio('git').stderr, ["Cloning into '.'..."], 'record: git progress dropped');
  t.same(rec.main.properties, {
    branch: '', buildername: 'e2e', codebase: '', from_command: 'value ✓ with spaces',
    got_revision: fx.headRevision, head_revision: fx.headRevision, owner: '', owners: [''],
    project: '', reason: 'tether test', repository: '', revision: '', scheduler: 'force-e2e',
  }, 'record: properties');
  t.same(rec.interrupt.steps, [{
    name: 'sleeper', result: 'cancelled', state_string: "'sh -c ...' (cancelled)",
    logs: {
      stdio: {
        stdout: ['started'], stderr: [],
        header: ['command interrupted, attempting to kill', 'process killed by signal 9',
          'program finished with exit code -1', 'elapsedTime=<T>'],
      },
      cancelled: { text: ['tether e2e stop'] },
    },
  }], 'record: interrupt build');
  const text = JSON.stringify(rec);
  t.notMatch(text, worker.dir, 'record: no worker path');
  t.notMatch(text, fx.root, 'record: no temp path');
  t.notMatch(text, /elapsedTime=\d/, 'record: no elapsed times');

  // normaliseBuild is deterministic
  t.same(normaliseBuild(res.main), normaliseBuild(res.main));
});
