/**
 * The hub of the scale benchmark, in a process of its own so that its
 * memory and CPU time are its own (bench/scale.ts forks it over IPC).
 *
 *   parent → {type: 'start', agents, bytes}
 *   hub    → {type: 'listening', port}
 *   hub    → {type: 'connected', ...}       once every agent is in
 *   parent → {type: 'go'}
 *   hub    → {type: 'done', ...}            every agent's log, hashed
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { TetherHub } from '../master-plugin/hub';
import type { RemoteAgent } from '../master-plugin/remote';
import { runShell } from '../master-plugin/run-shell';
import { agentName, textProducer, textProducerHash } from './lib';

export type ScaleRequest = { type: 'start'; agents: number; bytes: number; secret: string } | { type: 'go' };

export type ScaleReport =
  | { type: 'listening'; port: number }
  | { type: 'connected'; rssMB: number; heapMB: number; connectCpuMs: number; connectMs: number }
  | {
      type: 'done';
      wallMs: number;
      cpuMs: number;
      userMs: number;
      systemMs: number;
      rssPeakMB: number;
      rssAfterMB: number;
      maxRssMB: number;
      exact: number;
      failures: string[];
    }
  | { type: 'error'; message: string };

const MB = 1e6;
const send = (m: ScaleReport) => process.send!(m);
const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

function main(): void {
  let hub: TetherHub;
  let agents = 0;
  let bytes = 0;
  const connectStart = { cpu: process.cpuUsage(), at: performance.now() };
  process.on('message', (m: ScaleRequest) => {
    if (m.type === 'start') {
      agents = m.agents;
      bytes = m.bytes;
      const workers: Record<string, string> = {};
      for (let i = 0; i < agents; i++) workers[agentName(i)] = m.secret;
      hub = new TetherHub({ workers });
      let connected = 0;
      hub.on('agent', () => {
        if (++connected !== agents) return;
        const mem = process.memoryUsage();
        send({
          type: 'connected',
          rssMB: mem.rss / MB,
          heapMB: mem.heapUsed / MB,
          connectCpuMs: cpuMs(process.cpuUsage(connectStart.cpu)),
          connectMs: performance.now() - connectStart.at,
        });
      });
      hub.listen('tcp://127.0.0.1:0').then(
        (address) => {
          connectStart.cpu = process.cpuUsage();
          connectStart.at = performance.now();
          send({ type: 'listening', port: address.port });
        },
        (error: Error) => send({ type: 'error', message: error.message }),
      );
    } else if (m.type === 'go') {
      stream(hub, agents, bytes).then(
        (report) => send(report),
        (error: Error) => send({ type: 'error', message: error.stack ?? error.message }),
      );
    }
  });
}

async function stream(hub: TetherHub, count: number, bytes: number): Promise<ScaleReport> {
  const remotes = new Map<string, RemoteAgent>(hub.connected().map((a) => [a.name, a]));
  let peak = process.memoryUsage.rss();
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
  const cpu = process.cpuUsage();
  const start = performance.now();
  const hashes = new Map<string, { hash: ReturnType<typeof createHash>; got: number }>();
  const failures: string[] = [];
  await Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const name = agentName(i);
      const remote = remotes.get(name);
      if (!remote) {
        failures.push(`${name}: not connected`);
        return;
      }
      const h = { hash: createHash('sha256'), got: 0 };
      hashes.set(name, h);
      try {
        const result = await runShell(remote, textProducer(bytes, name), {
          onOutput: (c) => {
            h.got += c.data.length;
            h.hash.update(c.data);
          },
        }).result;
        if (result.rc !== 0) failures.push(`${name}: rc ${result.rc}`);
      } catch (error) {
        failures.push(`${name}: ${(error as Error).message}`);
      }
    }),
  );
  const wallMs = performance.now() - start;
  const used = process.cpuUsage(cpu);
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage.rss());
  const rssAfter = process.memoryUsage.rss();
  // Only now, outside the measurement: what each agent should have sent.
  let exact = 0;
  for (const [name, h] of hashes) {
    const expected = textProducerHash(bytes, name);
    if (h.got === bytes && h.hash.digest('hex') === expected) exact++;
    else failures.push(`${name}: ${h.got} of ${bytes} bytes, or a wrong hash`);
  }
  return {
    type: 'done',
    wallMs,
    cpuMs: cpuMs(used),
    userMs: used.user / 1000,
    systemMs: used.system / 1000,
    rssPeakMB: peak / MB,
    rssAfterMB: rssAfter / MB,
    maxRssMB: (process.resourceUsage().maxRSS * 1024) / MB,
    exact,
    failures: failures.slice(0, 20),
  };
}

if (process.env.TETHER_BENCH_SCALE_HUB === '1' && process.send) main();
