/**
 * The real-Buildbot harness itself: a master (REST API through the www
 * stand-in) and the reference buildbot-worker over msgpack run a build.
 */
import t from 'tap';
import {
  createMaster, createWorker, normaliseBuild, RESULTS, teardownBuildbot,
} from './helpers/buildbot';

t.test('master + buildbot-worker (msgpack) run echo hello', async (t) => {
  const master = await createMaster({
    workers: [{ name: 'w1', password: 'pw-harness-1' }],
    builders: [
      { name: 'hello', steps: ["steps.ShellCommand(name='hello', command=['echo', 'hello'])"] },
      {
        // Documents the upstream bug tether_buildbot.fix_msgpack_read_file()
        // fixes: without it a StringDownload to a msgpack worker is empty.
        name: 'download-unfixed',
        steps: [
          "steps.StringDownload('some text\\n', workerdest='s.txt', name='download')",
          "steps.ShellCommand(name='cat', command=['sh', '-c', 'wc -c < s.txt'])",
        ],
      },
    ],
  });
  const worker = await createWorker({ master, name: 'w1', password: 'pw-harness-1' });
  teardownBuildbot(t, master, worker);

  await master.start();
  const builders = await master.get<{ builders: Array<{ name: string }> }>('/builders');
  t.same(builders.builders.map((b) => b.name).sort(), ['download-unfixed', 'hello'], 'REST API lists the builders');

  await worker.start();
  await master.waitForWorker('w1');
  const info = await master.worker('w1');
  t.ok(info?.workerinfo.version, 'worker info reported');

  const build = await master.runBuild('hello');
  t.equal(build.result, 'success');
  t.equal(build.results, RESULTS.SUCCESS);
  const step = build.step('hello');
  t.ok(step, 'step exists');
  t.equal(step!.results, RESULTS.SUCCESS);
  t.equal(step!.state_string, "'echo hello'");
  const stdio = step!.log('stdio')?.stdio;
  t.equal(stdio?.stdout, 'hello\n', 'stdout is hello');
  t.equal(stdio?.stderr, '', 'no stderr');
  t.match(stdio?.header, /^echo hello\n/, 'header starts with the command');
  t.match(stdio?.header, /program finished with exit code 0\n/);
  t.match(stdio?.header, /elapsedTime=/);
  t.equal(build.properties.buildername?.value, 'hello');
  t.equal(build.properties.workername?.value, 'w1');

  const rec = normaliseBuild(build, { replace: [[worker.dir, '<WORKER>']] });
  t.same(rec, {
    result: 'success',
    state_string: 'build successful',
    steps: [{
      name: 'hello', result: 'success', state_string: "'echo hello'",
      logs: { stdio: { stdout: ['hello'], stderr: [], header: ['program finished with exit code 0', 'elapsedTime=<T>'] } },
    }],
    properties: {
      branch: '', buildername: 'hello', codebase: '', owner: '', owners: [''], project: '',
      reason: 'tether test', repository: '', revision: '', scheduler: 'force-hello',
    },
  }, 'comparison record');

  const unfixed = await master.runBuild('download-unfixed');
  t.equal(unfixed.step('download')?.result, 'success', 'download "succeeds"');
  t.equal(unfixed.step('cat')?.log()?.stdio?.stdout.trim(), '0',
    'but without the msgpack fix the downloaded file is empty (upstream bug)');
});
