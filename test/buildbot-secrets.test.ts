/**
 * The worker's secret appears nowhere in what a real Buildbot master stores.
 * The master runs tether-master through TetherService (the README's
 * quickstart); one agent reads its secret from a file (--secret-file, the
 * README's way), another from TETHER_SECRET. Each runs a build whose steps
 * print the agent's environment: a ShellCommand running `env` (whose header
 * lists the environment, as Buildbot logs it by default) and a
 * SetPropertyFromCommand that keeps it in a build property. Neither secret
 * may be in any log of the builds, the properties, the worker info, the
 * master's twistd.log, or any file in the master's directory (logs stored
 * uncompressed, so the database can be searched too).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { createMaster, teardownBuildbot, tetherServiceConfig } from './helpers/buildbot';
import { tetherAgent } from './helpers/tether-procs';
import { freePort } from './helpers/support';

const WORKERS = [
  { name: 'by-file', password: `file-secret-${randomBytes(12).toString('hex')}`, secretInEnvironment: false },
  { name: 'by-env', password: `env-secret-${randomBytes(12).toString('hex')}`, secretInEnvironment: true },
];
/** In each agent's environment: it must show up where the secret must not, or the test proves nothing. */
const MARKER = 'TETHER_TEST_MARKER=visible';

/** Files under `dir` (master.cfg aside: the admin's own, it holds the passwords) whose bytes contain `text`. */
function filesHolding(dir: string, text: string): string[] {
  const needle = Buffer.from(text);
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((rel) => rel !== 'master.cfg')
    .filter((rel) => {
      const file = path.join(dir, rel);
      return fs.statSync(file).isFile() && fs.readFileSync(file).includes(needle);
    });
}

t.test('no secret in anything Buildbot stores, whether the agent read it from a file or from TETHER_SECRET', async (t) => {
  const listenPort = await freePort();
  const master = await createMaster({
    workers: WORKERS.map(({ name, password }) => ({ name, password })),
    builders: WORKERS.map(({ name }) => ({
      name: `env-${name}`,
      workernames: [name],
      steps: [
        // ${VAR} in a step's env is expanded from the agent's environment
        "steps.ShellCommand(name='env', command=['env'], env={'FROM_AGENT': '${TETHER_SECRET}'})",
        "steps.SetPropertyFromCommand(name='env-property', command='env', property='agent_env')",
      ],
    })),
    extraConfig: [
      "c['logCompressionMethod'] = 'raw'",
      tetherServiceConfig(`listen=['tcp://127.0.0.1:${listenPort}']`),
    ].join('\n'),
  });
  const agents = await Promise.all(WORKERS.map((w) => tetherAgent({
    port: listenPort, name: w.name, secret: w.password, secretInEnvironment: w.secretInEnvironment,
    env: { TETHER_TEST_MARKER: 'visible' },
  })));
  teardownBuildbot(t, master, ...agents);
  await master.start();
  for (const agent of agents) await agent.start();
  for (const w of WORKERS) await master.waitForWorker(w.name);

  /** Whose secret, for the assertions' names. */
  const secrets = WORKERS.map((w) => [w.password, `${w.name}'s secret`] as const);
  for (const w of WORKERS) {
    const build = await master.runBuild(`env-${w.name}`);
    t.equal(build.result, 'success', `${w.name}: the build succeeded`);
    const stdio = build.step('env')?.log()?.stdio;
    t.match(stdio?.header, /^ environment:$/m, `${w.name}: the step's header lists the environment`);
    t.match(stdio?.header, `  ${MARKER}\n`, `${w.name}: with the agent's variables`);
    t.match(stdio?.stdout, `${MARKER}\n`, `${w.name}: env printed them`);
    t.match(build.properties.agent_env?.value, MARKER, `${w.name}: the property holds them`);
    const stored = JSON.stringify(build); // every log of every step, and the properties
    for (const [secret, whose] of secrets) t.notMatch(stored, secret, `${w.name}: ${whose} is not in the build's logs and properties`);
    const info = await master.worker(w.name);
    t.ok(info?.workerinfo.version, `${w.name}: Buildbot keeps the worker's info`);
    for (const [secret, whose] of secrets) t.notMatch(JSON.stringify(info), secret, `${w.name}: ${whose} is not in the worker info`);
  }
  t.ok(agents.every((a) => /TETHER_SECRET/.test(a.output) === false), 'the agents do not even name TETHER_SECRET in their logs');

  await master.stop(); // twistd.log and the database complete
  const twistdLog = master.logFrom(0);
  t.match(twistdLog, /tether: .*worker 'by-env' attached to Buildbot/, 'twistd.log has tether-master\'s lines');
  for (const [secret, whose] of secrets) {
    t.notMatch(twistdLog, secret, `${whose} is not in twistd.log`);
    t.same(filesHolding(master.dir, secret), [], `no file of the master holds ${whose}`);
  }
  t.ok(fs.readFileSync(path.join(master.dir, 'state.sqlite')).includes(Buffer.from(MARKER)),
    'the database holds the logs in clear (so searching it means something)');
});
