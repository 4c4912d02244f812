/**
 * The agent's memory (VmRSS of the agent process, its children not counted):
 * idle, and at its highest while streaming 100 MB of output to an in-process
 * hub, for the Node-run agent (node bin/tether-agent.js) and the single
 * binary (dist/tether-agent-linux-<arch>, when built). Then the memory a
 * paused session holds: the link is cut (a relay that drops every connection
 * and refuses new ones; the hub's grace is long) while a command writes
 * 64 MiB; RSS before and after, and whether every byte arrives once the
 * link is back.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { runShell } from '../master-plugin/run-shell';
import {
  AGENT_BINARY, type BenchOptions, type HubAndAgent, MB, MiB, RssSampler, hubAndAgent, round, settledMemory, since, textProducer, textProducerHash,
} from './lib';
import { sleep, withTimeout } from '../test/helpers/support';

export interface AgentMemory {
  variant: string;
  /** VmRSS in MB, settled, after connecting. */
  idleMB: number;
  /** Highest VmRSS while streaming. */
  streamingMB: number;
  /** The same, private memory only (USS: not the executable's pages, which every process running it shares). */
  idleUssMB: number;
  streamingUssMB: number;
  streamedBytes: number;
  streamMBps: number;
}

export interface BacklogMemory {
  variant: string;
  backlogBytes: number;
  /** VmRSS before the command and once its backlog is held; USS the same. */
  beforeMB: number;
  afterMB: number;
  beforeUssMB: number;
  afterUssMB: number;
  peakMB: number;
  /** afterMB − beforeMB */
  heldMB: number;
  /** Every byte of the backlog arrived, in order, after the link came back. */
  exact: boolean;
  /** From restoring the link to the command's result (includes the agent's reconnect backoff). */
  resumeMs: number;
}

export interface MemoryResults {
  agents: AgentMemory[];
  binary: { path: string; present: boolean };
  backlog: BacklogMemory[];
}

async function streamingMemory(pair: HubAndAgent, variant: string, bytes: number, opts: BenchOptions): Promise<AgentMemory> {
  const pid = pair.agent.pid!;
  await sleep(opts.quick ? 300 : 1500);
  const idle = await settledMemory(pid, opts.quick ? 400 : 1500);
  const sampler = new RssSampler(pid, 10);
  let got = 0;
  const start = performance.now();
  const result = await withTimeout(
    runShell(pair.remote, textProducer(bytes), { onOutput: (c) => void (got += c.data.length) }).result, 300_000, 'streaming',
  );
  const ms = since(start);
  const peak = sampler.stop();
  if (result.rc !== 0 || got !== bytes) throw new Error(`streaming: rc ${result.rc}, ${got} of ${bytes} bytes`);
  const out: AgentMemory = {
    variant,
    idleMB: round(idle.rss, 1),
    streamingMB: round(peak.max, 1),
    idleUssMB: round(idle.uss, 1),
    streamingUssMB: round(peak.maxUss, 1),
    streamedBytes: bytes,
    streamMBps: round(bytes / MB / (ms / 1000), 1),
  };
  opts.log(`memory ${variant}: idle ${out.idleMB} MB (USS ${out.idleUssMB}), streaming ${out.streamingMB} MB (USS ${out.streamingUssMB}) at ${out.streamMBps} MB/s`);
  return out;
}

async function backlogMemory(variant: string, binary: string | undefined, bytes: number, opts: BenchOptions): Promise<BacklogMemory> {
  const pair = await hubAndAgent({ binary, relay: true, grace: 3600 });
  try {
    const pid = pair.agent.pid!;
    const relay = pair.relay!;
    await sleep(opts.quick ? 300 : 1500);
    const before = await settledMemory(pid, opts.quick ? 400 : 1000);
    const marker = path.join(pair.agent.dir, 'backlog-written');
    let headerSeen!: () => void;
    const header = new Promise<void>((resolve) => (headerSeen = resolve));
    const hash = createHash('sha256');
    let got = 0;
    // The command waits before writing: the link is cut by then.
    const shell = runShell(pair.remote, `sleep ${opts.quick ? 0.5 : 1}; ${textProducer(bytes, 'backlog')}; touch '${marker}'`, {
      onHeader: () => headerSeen(),
      onOutput: (c) => {
        got += c.data.length;
        hash.update(c.data);
      },
    });
    await withTimeout(header, 30_000, 'the command header');
    await relay.cut();
    const sampler = new RssSampler(pid, 10);
    const deadline = performance.now() + 120_000;
    while (!fs.existsSync(marker)) {
      if (performance.now() > deadline) throw new Error('the backlog command did not finish within 120 s');
      await sleep(50);
    }
    await sleep(500); // the agent reads what is left in the pipe
    const after = await settledMemory(pid, opts.quick ? 400 : 1000);
    const peak = sampler.stop();
    const cutBytes = got;
    const restored = performance.now();
    await relay.restore();
    const result = await withTimeout(shell.result, 180_000, 'the backlogged command');
    const resumeMs = since(restored);
    const expected = textProducerHash(bytes, 'backlog');
    const exact = result.rc === 0 && got === bytes && hash.digest('hex') === expected;
    const out: BacklogMemory = {
      variant,
      backlogBytes: bytes,
      beforeMB: round(before.rss, 1),
      afterMB: round(after.rss, 1),
      beforeUssMB: round(before.uss, 1),
      afterUssMB: round(after.uss, 1),
      peakMB: round(peak.max, 1),
      heldMB: round(after.rss - before.rss, 1),
      exact,
      resumeMs: Math.round(resumeMs),
    };
    opts.log(
      `backlog ${variant}: ${bytes / MiB} MiB while cut (${cutBytes} bytes had arrived before): RSS ${out.beforeMB} → ${out.afterMB} MB ` +
        `(peak ${out.peakMB}), exact after resume: ${exact}, ${out.resumeMs} ms`,
    );
    return out;
  } finally {
    await pair.close();
  }
}

export async function runMemory(opts: BenchOptions): Promise<MemoryResults> {
  const bytes = (opts.quick ? 10 : 100) * MB;
  const backlog = (opts.quick ? 8 : 64) * MiB;
  const present = fs.existsSync(AGENT_BINARY);
  const variants: Array<[string, string | undefined]> = [['node bin/tether-agent.js', undefined]];
  if (present) variants.push([`single binary (${path.relative(process.cwd(), AGENT_BINARY)})`, AGENT_BINARY]);
  else opts.log(`memory: ${AGENT_BINARY} is not built (npm run build:binary): single binary not measured`);
  const agents: AgentMemory[] = [];
  for (const [variant, binary] of variants) {
    const pair = await hubAndAgent({ binary });
    try {
      agents.push(await streamingMemory(pair, variant, bytes, opts));
    } finally {
      await pair.close();
    }
  }
  const backlogs: BacklogMemory[] = [];
  // A quick run measures the paused session of the Node-run agent only.
  for (const [variant, binary] of opts.quick ? variants.slice(0, 1) : variants) backlogs.push(await backlogMemory(variant, binary, backlog, opts));
  return { agents, binary: { path: AGENT_BINARY, present }, backlog: backlogs };
}
