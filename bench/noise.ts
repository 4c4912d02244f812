/**
 * Serial lines with noise: the line simulator (test/helpers/line-sim.ts)
 * between two socat pty pairs flips bits and drops bytes, both ways, from a
 * fixed seed. Two measurements:
 *
 *   grid    an upload (upload_file of random bytes, agent → hub) at 115200
 *           baud for every bit-error rate 0, 1e-6, 1e-5, 1e-4 with every drop
 *           rate 0, 1e-4, 1e-3, and once on a line with no rate limit (a pty,
 *           a USB gadget: faster than its nominal 115200) at 1e-5 and 1e-3.
 *           Beside each goodput: the bound for the best fixed frame size at
 *           that noise, the share of frames that survive times the payload
 *           share of a frame, maximised over the frame size.
 *   build   Tether's end-to-end Buildbot build (shell steps, a 4 MiB log,
 *           uploads, a directory upload, downloads, git) through
 *           tether-master and tether-agent over the line: clean at 115200,
 *           noisy at 115200, noisy with no rate limit; the noisy builds'
 *           records must equal the clean one's (byte-exact).
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { AgentConnection } from '../master-plugin/agent-connection';
import { getFile } from '../master-plugin/files';
import { TetherHub } from '../master-plugin/hub';
import { cobsMaxEncodedLength } from '../wire/cobs';
import { TRAILER_BYTES } from '../wire/framing';
import { openSerialLine } from '../wire/serial-line';
import { createMaster } from '../test/helpers/buildbot';
import { e2eMasterOptions, e2eRecords, prepareE2E, runE2E } from '../test/helpers/buildbot-e2e';
import { type NoiseOptions, simulatedLine } from '../test/helpers/line-sim';
import { serialTetherAgent, serialTetherMaster } from '../test/helpers/serial-procs';
import { type BenchOptions, round, since, waitForAgentOrExit } from './lib';
import { withTimeout } from '../test/helpers/support';

const BAUD = 115200;
const RATE = BAUD / 10;
const SEED = 20261203;
export const NOISY = { bitErrorRate: 1e-5, dropRate: 1e-3 } as const;

export interface NoiseRow {
  bitErrorRate: number;
  dropRate: number;
  /** The line carried bytes as fast as they came (a pty), its nominal rate still 115200 baud. */
  unlimited: boolean;
  bytes: number;
  seconds: number;
  /** Payload bytes per second, and that against 11 520 B/s (115200 baud 8N1). */
  goodput: number;
  ofLine: number;
  /** The best fixed frame size's share of the line at this noise, and that size. */
  bound: number;
  boundFrame: number;
  exact: boolean;
  /** What the hub saw: frames held out of order, and frames it took. */
  held: number;
  framesIn: number;
}

export interface NoiseBuild {
  line: 'clean' | 'noisy' | 'noisy, no rate limit';
  seconds: number;
  result: string;
  /** Its record equals the clean build's. */
  sameAsClean: boolean | null;
}

export interface NoiseResults {
  rows: NoiseRow[];
  builds: NoiseBuild[];
}

/**
 * The best a fixed frame size can do at this noise: frames of body `s` are
 * `w = cobs_max(s + 14) + 1` bytes on the line, survive with probability
 * (1 − ber)^(8w) × (1 − drop)^w, and carry s − 4 bytes of payload (DATA's
 * head); maximised over s from 64 to 512.
 */
export function frameBound(bitErrorRate: number, dropRate: number): { share: number; frame: number } {
  let best = { share: 0, frame: 0 };
  for (let s = 64; s <= 512; s += 8) {
    const w = cobsMaxEncodedLength(s + TRAILER_BYTES) + 1;
    const share = ((s - 4) / w) * (1 - bitErrorRate) ** (8 * w) * (1 - dropRate) ** w;
    if (share > best.share) best = { share, frame: s };
  }
  return best;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** One upload through a noisy line: hub here, tether-agent a child process. */
export async function uploadRow(noise: NoiseOptions, unlimited: boolean, bytes: number): Promise<NoiseRow> {
  const line = await simulatedLine({ bytesPerSecond: unlimited ? Infinity : RATE, noise });
  const secret = 'noise-secret';
  const hub = new TetherHub({ workers: { s1: secret }, keepalive: 30 });
  const masterEnd = await openSerialLine(line.masterPath, { baud: BAUD });
  hub.accept(masterEnd, `serial:${line.masterPath}`, { worker: 's1', lossy: true, bytesPerSecond: RATE });
  const agent = await serialTetherAgent({ device: line.agentPath, name: 's1', secret, baud: BAUD });
  try {
    fs.mkdirSync(agent.basedir, { recursive: true });
    const data = randomBytes(bytes);
    fs.writeFileSync(path.join(agent.basedir, 'up.bin'), data);
    fs.writeFileSync(path.join(agent.basedir, 'small.bin'), data.subarray(0, 16));
    await agent.start();
    const remote = await waitForAgentOrExit(hub, 's1', agent, 120_000);
    const local = path.join(agent.dir, 'got.bin');
    await withTimeout(getFile(remote, 'small.bin', local), 120_000, 'the warm-up upload');
    const session = (remote as AgentConnection).session;
    const before = session.stats;
    const start = performance.now();
    await withTimeout(getFile(remote, 'up.bin', local), 1_200_000, 'the upload');
    const seconds = since(start) / 1000;
    const after = session.stats;
    const goodput = bytes / seconds;
    const bound = frameBound(noise.bitErrorRate ?? 0, noise.dropRate ?? 0);
    return {
      bitErrorRate: noise.bitErrorRate ?? 0,
      dropRate: noise.dropRate ?? 0,
      unlimited,
      bytes,
      seconds: round(seconds, 2),
      goodput: Math.round(goodput),
      ofLine: round(goodput / RATE, 3),
      bound: round(bound.share, 3),
      boundFrame: bound.frame,
      exact: sha(fs.readFileSync(local)) === sha(data),
      held: after.held - before.held,
      framesIn: after.framesIn - before.framesIn,
    };
  } finally {
    await agent.stop();
    await hub.close();
    masterEnd.destroy();
    await line.close();
    fs.rmSync(agent.dir, { recursive: true, force: true });
  }
}

/** Tether's e2e build over a simulated line; returns its time and its record. */
async function buildOver(kind: NoiseBuild['line']) {
  const fx = await prepareE2E();
  const noisy = kind !== 'clean';
  const line = await simulatedLine({
    bytesPerSecond: kind === 'noisy, no rate limit' ? Infinity : RATE,
    noise: noisy ? { seed: SEED, ...NOISY } : undefined,
  });
  const secret = 'noise build secret';
  const master = await createMaster(e2eMasterOptions(fx, [{ name: 'board', password: secret }]));
  const bridge = await serialTetherMaster({ buildbotPort: master.msgpackPort, device: line.masterPath, worker: 'board', workers: { board: secret } });
  const agent = await serialTetherAgent({ device: line.agentPath, name: 'board', secret });
  try {
    await master.start();
    await bridge.start();
    await bridge.waitForOutput(/listening on serial:/);
    await agent.start();
    await master.waitForWorker('board');
    const start = performance.now();
    const res = await runE2E(master, fx);
    const seconds = round(since(start) / 1000, 1);
    return { seconds, result: res.main.result, record: JSON.stringify(e2eRecords(res, fx, agent.basedir).main) };
  } finally {
    await Promise.allSettled([agent.stop(), bridge.stop()]);
    await master.stop().catch(() => undefined);
    await line.close();
    fs.rmSync(fx.root, { recursive: true, force: true });
  }
}

export async function runNoise(opts: BenchOptions): Promise<NoiseResults> {
  // The issue's upload: 300 KB (about 26 s of line at 115200 baud).
  const bytes = opts.quick ? 16 * 1024 : 300_000;
  const grid: Array<{ noise: NoiseOptions; unlimited: boolean }> = [];
  const bers = opts.quick ? [0, 1e-5] : [0, 1e-6, 1e-5, 1e-4];
  const drops = opts.quick ? [0, 1e-3] : [0, 1e-4, 1e-3];
  for (const bitErrorRate of bers) for (const dropRate of drops) grid.push({ noise: { seed: SEED, bitErrorRate, dropRate }, unlimited: false });
  grid.push({ noise: { seed: SEED, ...NOISY }, unlimited: true });
  const rows: NoiseRow[] = [];
  for (const { noise, unlimited } of grid) {
    const row = await uploadRow(noise, unlimited, bytes);
    rows.push(row);
    opts.log(
      `noise ber ${row.bitErrorRate} drop ${row.dropRate}${unlimited ? ' (no rate limit)' : ''}: ${row.goodput} B/s, ${row.ofLine}× line ` +
        `(bound ${row.bound} at ${row.boundFrame}-byte frames), ${row.seconds} s, ${row.held} frames held, exact ${row.exact}`,
    );
  }
  const builds: NoiseBuild[] = [];
  if (!opts.quick) {
    const clean = await buildOver('clean');
    builds.push({ line: 'clean', seconds: clean.seconds, result: clean.result, sameAsClean: null });
    for (const kind of ['noisy', 'noisy, no rate limit'] as const) {
      const b = await buildOver(kind);
      builds.push({ line: kind, seconds: b.seconds, result: b.result, sameAsClean: b.record === clean.record });
    }
    for (const b of builds) opts.log(`noise build over a ${b.line} line: ${b.seconds} s, ${b.result}${b.sameAsClean === null ? '' : `, same as clean: ${b.sameAsClean}`}`);
  }
  return { rows, builds };
}
