/**
 * Cut links through a real Buildbot master: a fault-injecting proxy between
 * tether-agent and tether-master resets or silently drops the connection at
 * seeded moments. Buildbot never notices: the build succeeds, the log holds
 * every line once and in order, and 20 MB files cross byte-exact. Past the
 * grace period, the build fails as with a lost worker and the agent's process
 * tree is gone.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type BuildbotMaster, createMaster, teardownBuildbot } from './helpers/buildbot';
import { FaultProxy } from './helpers/fault-proxy';
import { prng } from './helpers/line-sim';
import { alive } from './helpers/processes';
import { tetherAgent, tetherMaster } from './helpers/tether-procs';
import { freePort, makeTempDir, sleep, waitFor } from './helpers/support';

const LINES = 6000;
const BIG = 20_000_000;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Starts `master`, a tether-master for it (keepalive 1 s, and `masterArgs`)
 * and a tether-agent `worker` that reaches it through a FaultProxy; resolves
 * once Buildbot sees the worker.
 */
async function startThroughProxy(t: Test, master: BuildbotMaster, dir: string, worker: string, secret: string, masterArgs: string[]) {
  const listenPort = await freePort();
  const bridge = await tetherMaster({ buildbotPort: master.msgpackPort, listenPort, workers: { [worker]: secret }, extraArgs: ['--keepalive', '1', ...masterArgs] });
  const proxy = new FaultProxy(listenPort);
  await proxy.start();
  t.teardown(() => proxy.close());
  const agent = await tetherAgent({ port: proxy.port, name: worker, secret });
  teardownBuildbot(t, master, bridge, agent, dir);
  await master.start();
  await bridge.start();
  await agent.start();
  await master.waitForWorker(worker);
  return { bridge, agent, proxy };
}

t.test('a build survives ten cuts in a 60-second step and six during 20 MB transfers', async (t) => {
  const dir = await makeTempDir('tether-resume-bb-');
  const downloadSrc = path.join(dir, 'down-src.bin');
  const downloadData = randomBytes(BIG);
  fs.writeFileSync(downloadSrc, downloadData);
  const secret = 'resume-secret';
  const master = await createMaster({
    workers: [{ name: 'flaky', password: secret }],
    builders: [{
      name: 'cut',
      steps: [
        `steps.ShellCommand(name='numbers', command=['python3', '-u', '-c', 'import time\\nfor i in range(${LINES}):\\n print("line %d" % i, flush=True)\\n time.sleep(0.01)'])`,
        `steps.ShellCommand(name='make-big', command='head -c ${BIG} /dev/urandom > big.bin && sha256sum big.bin')`,
        `steps.FileUpload(name='upload', workersrc='big.bin', masterdest=${JSON.stringify(path.join(dir, 'up.bin'))})`,
        `steps.FileDownload(name='download', mastersrc=${JSON.stringify(downloadSrc)}, workerdest='down.bin')`,
        `steps.ShellCommand(name='check', command='sha256sum down.bin')`,
      ],
    }],
    fixMsgpack: true,
  });
  const { bridge, proxy } = await startThroughProxy(t, master, dir, 'flaky', secret, []);

  const brid = await master.forceBuild('cut');
  const buildid = await master.waitForBuildOfRequest(brid);
  await master.waitForStep(buildid, 'numbers');
  // Ten cuts at seeded moments of the 60-second step: resets and silent drops in turn.
  const random = prng(2026);
  const moments = Array.from({ length: 10 }, () => 3000 + random() * 50_000).sort((a, b) => a - b);
  const started = Date.now();
  const resumes = () => bridge.output.match(/resumed its session/g)?.length ?? 0;
  for (const [i, at] of moments.entries()) {
    await sleep(Math.max(0, at - (Date.now() - started)));
    const before = resumes();
    if (i % 2 === 0) proxy.reset();
    else proxy.silence();
    // Each cut is its own: the next comes once the session is resumed. (A new TCP connection is
    // not enough: a cut in its handshake kills it before it resumes, and the agent tries again.)
    await waitFor('the agent to resume its session', () => resumes() > before, { timeoutMs: 20_000, intervalMs: 20 });
  }
  // Six more while the 20 MB files cross: by bytes relayed, so they land mid-transfer.
  await master.waitForStep(buildid, 'upload');
  const base = proxy.relayed;
  proxy.cutAtBytes([5e6, 10e6, 15e6, 25e6, 30e6, 35e6].map((n) => base + n));
  const build = await master.waitForBuild(buildid, { timeoutMs: 400_000 });
  const result = await master.getBuildResult(buildid);
  t.equal(result.result, 'success', `the build succeeds (${result.state_string})`);
  t.ok(resumes() >= 16, `the session was resumed after every cut (${resumes()} resumes, ${proxy.connections} connections)`);
  t.equal(bridge.output.match(/worker 'flaky' connected from/g)?.length, 1, 'and never started again: one session all along');
  const numbers = result.step('numbers')!.log('stdio')!.stdio!.stdout.trimEnd().split('\n');
  t.equal(numbers.length, LINES, 'no line lost or doubled');
  t.ok(numbers.every((l, i) => l === `line ${i}`), 'every line in order');
  const agentSha = result.step('make-big')!.log('stdio')!.stdio!.stdout.split(' ')[0];
  t.equal(sha(fs.readFileSync(path.join(dir, 'up.bin'))), agentSha, 'the 20 MB upload arrives byte-exact');
  t.equal(result.step('check')!.log('stdio')!.stdio!.stdout.split(' ')[0], sha(downloadData), 'the 20 MB download arrives byte-exact');
  t.ok(build.complete);
});

t.test('past the grace period the build fails as with a lost worker, and the tree is gone', async (t) => {
  const dir = await makeTempDir('tether-grace-bb-');
  const pidFile = path.join(dir, 'pid');
  const secret = 'grace-secret';
  const master = await createMaster({
    workers: [{ name: 'gone', password: secret }],
    builders: [{ name: 'long', steps: [`steps.ShellCommand(name='sleeper', command="sh -c 'echo $$ > ${pidFile}; exec sleep 300' & wait")`] }],
  });
  const { agent, proxy } = await startThroughProxy(t, master, dir, 'gone', secret, ['--grace', '2']);
  const buildid = await master.waitForBuildOfRequest(await master.forceBuild('long'));
  await waitFor('the step to start', () => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() !== '', { timeoutMs: 30_000 });
  const pid = Number(fs.readFileSync(pidFile, 'utf8'));
  proxy.refusing = true;
  proxy.reset();
  const build = await master.waitForBuild(buildid, { timeoutMs: 60_000 });
  t.ok(build.results === 4 || build.results === 5, `the build ends as RETRY or EXCEPTION, as for a lost worker (results ${build.results}, ${build.state_string})`);
  proxy.refusing = false;
  await waitFor('the orphaned command to be killed', () => !alive(pid), { timeoutMs: 30_000 });
  t.notOk(alive(pid), `the process tree (pid ${pid}) is gone`);
  t.match(agent.output, /no longer knows this agent's session/);
});
