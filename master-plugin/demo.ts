/**
 * `npm start`: Tether without Buildbot, root or configuration. Starts a hub in
 * this process on loopback with a random secret, a tether-agent child process
 * over TCP (and a second one over a socat pty pair, when socat is installed), runs a small build of ordinary steps on them through the
 * library API, prints a summary table, stops everything it started and
 * removes its temporary directory.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { logLine, runMain } from '../wire/cli-support';
import { awaitAgent } from './await-agent';
import { getFile, listDir, putFile } from './files';
import { TetherHub } from './hub';
import { agentFacingUrl, listenAll } from './listeners';
import type { RemoteAgent } from './remote';
import { describeResult, runShell } from './run-shell';

/** The checkout: build/master-plugin/demo.js or master-plugin/demo.ts, both find bin/ from here. */
const ROOT =
  [path.resolve(__dirname, '..'), path.resolve(__dirname, '..', '..')].find((d) => fs.existsSync(path.join(d, 'bin', 'tether-agent.js'))) ??
  path.resolve(__dirname, '..', '..');
const AGENT_BIN = path.join(ROOT, 'bin', 'tether-agent.js');

const say = (line = '') => process.stdout.write(`${line}\n`);

// ---------------------------------------------------------------- agents

interface DemoAgent {
  name: string;
  transport: string;
  pid: number;
  remote: RemoteAgent;
  /** Its log (the agent's stderr), for when something goes wrong. */
  log(): string;
  stop(): Promise<void>;
}

function which(program: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, program);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

/** Ends a child we started: SIGTERM, SIGKILL after five seconds; resolves once it is gone. */
function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Starts `node bin/tether-agent.js` for `name` (secret in a 0600 file) and waits until the hub has it. */
async function startAgentProcess(hub: TetherHub, tmp: string, name: string, secret: string, master: string, transport: string): Promise<DemoAgent> {
  const dir = path.join(tmp, `agent-${name}`);
  fs.mkdirSync(dir, { recursive: true });
  const secretFile = path.join(dir, 'secret');
  fs.writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
  const basedir = path.join(dir, 'basedir');
  const child = spawn(process.execPath, [AGENT_BIN, '--master', master, '--name', name, '--secret-file', secretFile, '--basedir', basedir], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr?.on('data', (d: Buffer) => {
    log = (log + d.toString()).slice(-20_000);
  });
  const stop = () => stopChild(child);
  if (child.pid === undefined) throw new Error(`could not start ${AGENT_BIN}`);
  say(`agent '${name}': started, pid ${child.pid}, ${transport} to ${master}, basedir ${basedir}`);
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) => reject(new Error(`agent '${name}' exited (${signal ?? `code ${code}`}):\n${log}`))),
  );
  exited.catch(() => undefined);
  try {
    const remote = await Promise.race([awaitAgent(hub, name, { timeoutMs: 20_000, masterUrl: master }), exited]);
    say(`agent '${name}': connected (${String(remote.info.os)}/${String(remote.info.arch)}, ${(remote.info.commands as string[]).length} commands)`);
    return { name, transport, pid: child.pid, remote, log: () => log, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** An agent over a socat pty pair, or null (with the reason printed) when that cannot be done here. */
async function startSerialAgent(hub: TetherHub, tmp: string, secret: string): Promise<DemoAgent | null> {
  const socat = which('socat');
  if (!socat) {
    say('serial agent: skipped (socat not found: install socat, e.g. apt-get install socat, for an agent over a pty pair)');
    return null;
  }
  const hubEnd = path.join(tmp, 'tty-hub');
  const agentEnd = path.join(tmp, 'tty-agent');
  const pair = spawn(socat, [`pty,raw,echo=0,link=${hubEnd}`, `pty,raw,echo=0,link=${agentEnd}`], { stdio: 'ignore' });
  say(`serial line: socat pty pair, pid ${String(pair.pid)}: ${hubEnd} <-> ${agentEnd}`);
  try {
    for (let i = 0; !(fs.existsSync(hubEnd) && fs.existsSync(agentEnd)); i++) {
      if (i > 100 || pair.exitCode !== null) throw new Error('socat did not create the pty pair');
      await new Promise((r) => setTimeout(r, 50));
    }
    await listenAll(hub, [`serial:${hubEnd}?baud=115200&worker=serial`]);
    const agent = await startAgentProcess(hub, tmp, 'serial', secret, `serial:${agentEnd}?baud=115200`, 'serial');
    return { ...agent, stop: () => agent.stop().then(() => stopChild(pair)) };
  } catch (error) {
    await stopChild(pair);
    throw error;
  }
}

// ---------------------------------------------------------------- steps

interface StepOutcome {
  ok: boolean;
  result: string;
  bytes: number | null;
}

interface Step {
  name: string;
  /** The demo fails when a step does not end this way (the 'test' step is meant to fail). */
  expect: 'success' | 'failure';
  run(agent: DemoAgent, ctx: { tmp: string }): Promise<StepOutcome>;
}

/** Prints each line of a stream as it comes, prefixed; holds a partial line until it is complete. */
function linePrinter(prefix: string): { write(data: Buffer): void; flush(): void } {
  let partial = '';
  return {
    write(data) {
      const lines = (partial + data.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) say(`${prefix}${line}`);
    },
    flush() {
      if (partial) say(`${prefix}${partial}`);
      partial = '';
    },
  };
}

async function shellStep(label: string, agent: DemoAgent, command: string): Promise<StepOutcome> {
  const out = linePrinter(`  [${label}@${agent.name}] `);
  const err = linePrinter(`  [${label}@${agent.name}] (stderr) `);
  const run = runShell(agent.remote, command, { workdir: 'build', maxTime: 60 });
  let bytes = 0;
  for await (const { stream, data } of run.output) {
    bytes += data.length;
    (stream === 'stdout' ? out : err).write(data);
  }
  out.flush();
  err.flush();
  const result = await run.result;
  const ok = !result.failure && result.rc === 0;
  return { ok, result: ok ? 'success' : `failure (${describeResult(result)})`, bytes };
}

const FIRMWARE_BYTES = 192 * 1024;

const STEPS: Step[] = [
  {
    name: 'compile',
    expect: 'success',
    run: (agent) =>
      shellStep(
        'compile',
        agent,
        [
          'set -e',
          'mkdir -p out',
          'for part in boot.c uart.c main.c; do echo "compiling $part"; sleep 0.3; done',
          'echo "warning: this build is only a demo" >&2',
          `head -c ${FIRMWARE_BYTES} /dev/urandom > out/firmware.bin`,
          'echo "linked out/firmware.bin ($(wc -c < out/firmware.bin) bytes)"',
        ].join('\n'),
      ),
  },
  {
    name: 'upload',
    expect: 'success',
    async run(agent, { tmp }) {
      const local = path.join(tmp, 'artifacts', agent.name, 'firmware.bin');
      fs.mkdirSync(path.dirname(local), { recursive: true });
      const { bytes } = await getFile(agent.remote, 'build/out/firmware.bin', local);
      say(`  [upload@${agent.name}] build/out/firmware.bin -> ${local} (${bytes} bytes)`);
      const ok = fs.statSync(local).size === FIRMWARE_BYTES;
      return { ok, result: ok ? 'success' : 'failure (wrong size)', bytes };
    },
  },
  {
    name: 'download',
    expect: 'success',
    async run(agent, { tmp }) {
      const local = path.join(tmp, `config-${agent.name}.txt`);
      fs.writeFileSync(local, `board=${agent.name}\nbaud=115200\nbuilt-by=tether demo\n`);
      const { bytes } = await putFile(agent.remote, local, 'build/config.txt');
      say(`  [download@${agent.name}] ${local} -> build/config.txt (${bytes} bytes)`);
      return { ok: true, result: 'success', bytes };
    },
  },
  {
    name: 'listdir',
    expect: 'success',
    async run(agent) {
      const names = await listDir(agent.remote, 'build');
      say(`  [listdir@${agent.name}] build: ${[...names].sort().join(' ')}`);
      const ok = names.includes('config.txt') && names.includes('out');
      return { ok, result: ok ? `success (${names.length} entries)` : 'failure (missing entries)', bytes: null };
    },
  },
  {
    name: 'test',
    expect: 'failure',
    run: (agent) =>
      shellStep(
        'test',
        agent,
        [
          'echo "running 3 tests"',
          'echo "test_boot ... ok"',
          'echo "test_config ... ok"',
          'echo "test_uart ... FAILED: no loopback on this board" >&2',
          'exit 3',
        ].join('\n'),
      ),
  },
];

// ---------------------------------------------------------------- main

interface Row {
  step: string;
  agent: string;
  result: string;
  duration: string;
  bytes: string;
  asExpected: boolean;
}

function table(rows: Row[]): string[] {
  const head = { step: 'step', agent: 'agent', result: 'result', duration: 'duration', bytes: 'bytes' };
  const cols = ['step', 'agent', 'result', 'duration', 'bytes'] as const;
  const width = Object.fromEntries(cols.map((c) => [c, Math.max(head[c].length, ...rows.map((r) => r[c].length))])) as Record<(typeof cols)[number], number>;
  const line = (r: Record<(typeof cols)[number], string>) =>
    cols.map((c) => (c === 'duration' || c === 'bytes' ? r[c].padStart(width[c]) : r[c].padEnd(width[c]))).join('  ').trimEnd();
  return [line(head), cols.map((c) => '-'.repeat(width[c])).join('  '), ...rows.map(line)];
}

export async function main(argv: string[] = []): Promise<number> {
  const verbose = argv.includes('--verbose');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tether-demo-'));
  const secret = randomBytes(24).toString('base64url');
  const agents: DemoAgent[] = [];
  const hub = new TetherHub({ workers: { local: secret, serial: secret }, log: verbose ? logLine('hub') : undefined });

  let cleaned: Promise<void> | null = null;
  const cleanup = () =>
    (cleaned ??= (async () => {
      say();
      for (const agent of agents) {
        await agent.stop();
        say(`cleanup: stopped agent '${agent.name}' (pid ${agent.pid})`);
      }
      await hub.close();
      say('cleanup: hub closed');
      fs.rmSync(tmp, { recursive: true, force: true });
      say(`cleanup: removed ${tmp}`);
    })());
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`tether demo: ${signal}: cleaning up\n`);
    void cleanup().finally(() => process.exit(128 + (os.constants.signals[signal] ?? 1)));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    say('Tether demo: a hub, agents as child processes and a small build. No Buildbot, no root, no configuration.');
    say(`temporary directory: ${tmp}`);
    const [listening] = await listenAll(hub, ['tcp://127.0.0.1:0']);
    const master = agentFacingUrl(listening);
    say(`hub: listening on ${master} (in this process; random secret)`);
    agents.push(await startAgentProcess(hub, tmp, 'local', secret, master, 'tcp'));
    const serial = await startSerialAgent(hub, tmp, secret);
    if (serial) agents.push(serial);

    const rows: Row[] = [];
    for (const step of STEPS) {
      for (const agent of agents) {
        say();
        say(`== ${step.name} on '${agent.name}'`);
        const started = performance.now();
        let outcome: StepOutcome;
        try {
          outcome = await step.run(agent, { tmp });
        } catch (error) {
          outcome = { ok: false, result: `exception (${(error as Error).message})`, bytes: null };
          say(`  [${step.name}@${agent.name}] ${(error as Error).message}`);
        }
        const seconds = (performance.now() - started) / 1000;
        const asExpected = outcome.ok === (step.expect === 'success');
        say(`== ${step.name} on '${agent.name}': ${outcome.result}${asExpected ? '' : ' (NOT EXPECTED)'}`);
        rows.push({
          step: step.name,
          agent: agent.name,
          result: outcome.result,
          duration: `${seconds.toFixed(2)} s`,
          bytes: outcome.bytes === null ? '-' : String(outcome.bytes),
          asExpected,
        });
      }
    }

    say();
    say('summary:');
    for (const line of table(rows)) say(`  ${line}`);
    const unexpected = rows.filter((r) => !r.asExpected);
    say();
    if (unexpected.length) {
      say(`${unexpected.length} step(s) did not end as expected: ${unexpected.map((r) => `${r.step}@${r.agent}`).join(', ')}`);
      for (const agent of agents) say(`agent '${agent.name}' log:\n${agent.log()}`);
    } else {
      say(`all ${rows.length} steps ended as expected (the 'test' step is meant to fail, to show its exit code)`);
    }
    return unexpected.length ? 1 : 0;
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

if (require.main === module) runMain('tether demo', () => main(process.argv.slice(2)), process.argv.includes('--verbose'));
