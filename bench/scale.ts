/**
 * One TetherHub (its own process: bench/scale-hub.ts) with 200 agents
 * connected over real loopback sockets (in-process Agent instances here,
 * with the agent's real commands), all streaming a log at once (a shell
 * command each writing 1 MB of its own text). Reports the hub's RSS and CPU
 * time, and whether every log arrived exact (sha256 of each).
 */
import { type ChildProcess, fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Agent } from '../agent/agent';
import { commands } from '../agent/commands/registry';
import { connect } from '../wire/transport';
import { type BenchOptions, MB, agentName, round } from './lib';
import type { ScaleReport, ScaleRequest } from './scale-hub';
import { makeTempDir, withTimeout } from '../test/helpers/support';

export interface ScaleResults {
  agents: number;
  bytesPerAgent: number;
  /** Hub RSS with every agent connected, before streaming. */
  connectedRssMB: number;
  connectCpuMs: number;
  connectMs: number;
  /** Highest hub RSS while all streamed. */
  streamingRssPeakMB: number;
  /** The kernel's high-water mark of the hub's RSS over its whole life. */
  maxRssMB: number;
  streamWallMs: number;
  streamCpuMs: number;
  streamUserMs: number;
  streamSystemMs: number;
  /** Aggregate MB/s into the hub. */
  aggregateMBps: number;
  exact: number;
  allExact: boolean;
  failures: string[];
}

function nextMessage(child: ChildProcess, type: ScaleReport['type'], timeoutMs: number): Promise<ScaleReport> {
  return withTimeout(
    new Promise<ScaleReport>((resolve, reject) => {
      const onMessage = (m: ScaleReport) => {
        if (m.type === 'error') done(new Error(`scale hub: ${m.message}`));
        else if (m.type === type) done(null, m);
      };
      const onExit = (code: number | null) => done(new Error(`the scale hub exited (${String(code)})`));
      const done = (error: Error | null, m?: ScaleReport) => {
        child.off('message', onMessage);
        child.off('exit', onExit);
        if (error) reject(error);
        else resolve(m!);
      };
      child.on('message', onMessage);
      child.on('exit', onExit);
    }),
    timeoutMs,
    `the scale hub's '${type}'`,
  );
}

export async function runScale(opts: BenchOptions): Promise<ScaleResults> {
  const count = opts.quick ? 20 : 200;
  const bytes = opts.quick ? 256 * 1024 : 1024 * 1024;
  const script = path.join(__dirname, 'scale-hub.js');
  if (!fs.existsSync(script)) throw new Error(`${script} is missing: run the benchmarks with npm run bench`);
  const secret = 'scale-secret';
  const root = await makeTempDir('tether-bench-scale-');
  const child = fork(script, [], { env: { ...process.env, TETHER_BENCH_SCALE_HUB: '1' }, execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const agents: Agent[] = [];
  const running: Array<Promise<void>> = [];
  try {
    const listening = nextMessage(child, 'listening', 30_000);
    child.send({ type: 'start', agents: count, bytes, secret } satisfies ScaleRequest);
    const { port } = (await listening) as Extract<ScaleReport, { type: 'listening' }>;
    const connected = nextMessage(child, 'connected', 180_000);
    for (let i = 0; i < count; i++) {
      const basedir = path.join(root, agentName(i));
      fs.mkdirSync(basedir);
      const agent = new Agent({
        name: agentName(i),
        secret,
        basedir,
        commands,
        masterLabel: 'scale hub',
        open: () => connect({ kind: 'tcp', host: '127.0.0.1', port }),
        maxBackoffMs: 2000,
      });
      agents.push(agent);
      running.push(agent.run());
    }
    const c = (await connected) as Extract<ScaleReport, { type: 'connected' }>;
    opts.log(`scale: ${count} agents connected in ${Math.round(c.connectMs)} ms; hub RSS ${round(c.rssMB, 1)} MB`);
    const done = nextMessage(child, 'done', 600_000);
    child.send({ type: 'go' } satisfies ScaleRequest);
    const d = (await done) as Extract<ScaleReport, { type: 'done' }>;
    const result: ScaleResults = {
      agents: count,
      bytesPerAgent: bytes,
      connectedRssMB: round(c.rssMB, 1),
      connectCpuMs: Math.round(c.connectCpuMs),
      connectMs: Math.round(c.connectMs),
      streamingRssPeakMB: round(d.rssPeakMB, 1),
      maxRssMB: round(d.maxRssMB, 1),
      streamWallMs: Math.round(d.wallMs),
      streamCpuMs: Math.round(d.cpuMs),
      streamUserMs: Math.round(d.userMs),
      streamSystemMs: Math.round(d.systemMs),
      aggregateMBps: round((count * bytes) / MB / (d.wallMs / 1000), 1),
      exact: d.exact,
      allExact: d.exact === count && d.failures.length === 0,
      failures: d.failures,
    };
    opts.log(
      `scale: ${count} × ${bytes} bytes in ${result.streamWallMs} ms; hub CPU ${result.streamCpuMs} ms, RSS peak ${result.streamingRssPeakMB} MB ` +
        `(max ${result.maxRssMB}); exact ${d.exact}/${count}`,
    );
    return result;
  } finally {
    for (const agent of agents) agent.stop();
    await withTimeout(Promise.allSettled(running), 30_000, 'the scale agents to stop').catch(() => undefined);
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await withTimeout(exited, 10_000, 'the scale hub to exit').catch(() => child.kill('SIGKILL'));
    }
    fs.rmSync(root, { recursive: true, force: true });
  }
}
