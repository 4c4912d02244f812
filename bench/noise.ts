/**
 * Serial lines with noise: the line simulator (test/helpers/line-sim.ts)
 * between two socat pty pairs flips bits and drops bytes, both ways, from a
 * fixed seed. Two measurements:
 *
 *   grid    an upload (upload_file of random bytes, agent → hub) at 115200
 *           baud for every bit-error rate 0, 1e-6, 1e-5, 1e-4 with every drop
 *           rate 0, 1e-4, 1e-3, and twice on a line with no rate limit (a pty,
 *           a USB gadget: faster than its nominal 115200): at 1e-5 and 1e-3,
 *           and clean.
 *           Beside each goodput: the bound for the best fixed frame size at
 *           that noise, the share of frames that survive times the payload
 *           share of a frame, maximised over the frame size.
 *   build   a Buildbot build of ordinary steps (git, shell, a 4 MiB log, a
 *           300 KB upload, a directory upload, a download) through
 *           tether-master and tether-agent over the line: clean at 115200,
 *           noisy at 115200, noisy with no rate limit; every byte checked.
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
import { prepareE2E } from '../test/helpers/buildbot-e2e';
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
  /** Every log line, uploaded and downloaded byte arrived as sent. */
  exact: boolean;
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

/** The build of ordinary steps the issue measured: shell, a 4 MiB log, git, 300 KB upload, directory upload, download. */
const LOG_LINES = 65536; // 64 bytes each: 4 MiB
const UPLOAD = 300_000;
const DOWNLOAD = 100_000;
const line64 = (i: number) => `${String(i).padStart(7, '0')} ${'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ'.slice(0, 55)}`;

/**
 * The build over a simulated line at 115200 baud (clean, noisy, or noisy with
 * no rate limit): its time, its result, and whether every byte came through
 * (the log's lines, the uploaded file and directory, the downloaded file).
 */
export async function buildOver(kind: NoiseBuild['line']) {
  const fx = await prepareE2E();
  const downloadData = randomBytes(DOWNLOAD);
  fs.writeFileSync(path.join(fx.root, 'down-src.bin'), downloadData);
  const noisy = kind !== 'clean';
  const line = await simulatedLine({
    bytesPerSecond: kind === 'noisy, no rate limit' ? Infinity : RATE,
    noise: noisy ? { seed: SEED, ...NOISY } : undefined,
  });
  const secret = 'noise build secret';
  const at = (name: string) => JSON.stringify(path.join(fx.root, name));
  const master = await createMaster({
    workers: [{ name: 'board', password: secret }],
    fixMsgpack: true,
    builders: [{
      name: 'serial',
      steps: [
        `steps.Git(name='git', repourl=${JSON.stringify(fx.repoUrl)}, mode='full', method='clobber')`,
        `steps.ShellCommand(name='hello', command=['sh', '-c', 'echo hello; uname -a'])`,
        `steps.ShellCommand(name='big-log', command=['python3', '-c', 'import sys\\nfor i in range(${LOG_LINES}): sys.stdout.write("%07d %s\\\\n" % (i, "${line64(0).slice(8)}"))'])`,
        `steps.ShellCommand(name='make-files', command='head -c ${UPLOAD} /dev/urandom > up.bin && mkdir -p dir && for i in 1 2 3 4 5 6 7 8; do head -c 4000 /dev/urandom > dir/f$i; done && sha256sum up.bin dir/*')`,
        `steps.FileUpload(name='upload', workersrc='up.bin', masterdest=${at('up.bin')})`,
        `steps.DirectoryUpload(name='directory-upload', workersrc='dir', masterdest=${at('dir')})`,
        `steps.FileDownload(name='download', mastersrc=${at('down-src.bin')}, workerdest='down.bin')`,
        `steps.ShellCommand(name='check', command='sha256sum down.bin')`,
      ],
    }],
  });
  const bridge = await serialTetherMaster({ buildbotPort: master.msgpackPort, device: line.masterPath, worker: 'board', workers: { board: secret } });
  const agent = await serialTetherAgent({ device: line.agentPath, name: 'board', secret });
  try {
    await master.start();
    await bridge.start();
    await bridge.waitForOutput(/listening on serial:/);
    await agent.start();
    await master.waitForWorker('board');
    const start = performance.now();
    const build = await master.runBuild('serial', { timeoutMs: 1_200_000 });
    const seconds = round(since(start) / 1000, 1);
    const stdout = (name: string) => build.step(name)?.log('stdio')?.stdio?.stdout ?? '';
    const sums = new Map(stdout('make-files').trim().split('\n').map((l) => [l.split(/\s+/)[1], l.split(/\s+/)[0]] as const));
    const logLines = stdout('big-log').split('\n').slice(0, -1);
    const exact =
      logLines.length === LOG_LINES && logLines.every((l, i) => l === line64(i)) &&
      sha(fs.readFileSync(path.join(fx.root, 'up.bin'))) === sums.get('up.bin') &&
      [1, 2, 3, 4, 5, 6, 7, 8].every((i) => sha(fs.readFileSync(path.join(fx.root, 'dir', `f${i}`))) === sums.get(`dir/f${i}`)) &&
      stdout('check').split(' ')[0] === sha(downloadData);
    const steps = (await master.steps(build.buildid))
      .map((s) => `${s.name} ${s.complete_at && s.started_at ? s.complete_at - s.started_at : '?'} s`)
      .join(', ');
    return { seconds, result: build.result, exact, steps };
  } finally {
    await Promise.allSettled([agent.stop(), bridge.stop()]);
    await master.stop().catch(() => undefined);
    await line.close();
    fs.rmSync(fx.root, { recursive: true, force: true });
  }
}

export async function runNoise(opts: BenchOptions): Promise<NoiseResults> {
  // The upload: 300 KB (about 26 s of line at 115200 baud).
  const bytes = opts.quick ? 16 * 1024 : 300_000;
  const grid: Array<{ noise: NoiseOptions; unlimited: boolean }> = [];
  const bers = opts.quick ? [0, 1e-5] : [0, 1e-6, 1e-5, 1e-4];
  const drops = opts.quick ? [0, 1e-3] : [0, 1e-4, 1e-3];
  for (const bitErrorRate of bers) for (const dropRate of drops) grid.push({ noise: { seed: SEED, bitErrorRate, dropRate }, unlimited: false });
  grid.push({ noise: { seed: SEED, ...NOISY }, unlimited: true });
  // The same line clean: what a fast line carries when nothing is lost (the in-flight bound must not hold it to its floor).
  grid.push({ noise: { seed: SEED }, unlimited: true });
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
    for (const kind of ['clean', 'noisy', 'noisy, no rate limit'] as const) {
      try {
        const b = await buildOver(kind);
        builds.push({ line: kind, seconds: b.seconds, result: b.result, exact: b.exact });
        opts.log(`noise build over a ${kind} line: ${b.seconds} s, ${b.result}, byte-exact: ${b.exact}; steps: ${b.steps}`);
      } catch (error) {
        builds.push({ line: kind, seconds: NaN, result: `failed: ${(error as Error).message}`, exact: false });
        opts.log(`noise build over a ${kind} line FAILED: ${(error as Error).message}`);
      }
    }
  }
  return { rows, builds };
}
