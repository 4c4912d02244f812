/**
 * Profiles of the hot paths, for goals the benchmarks miss:
 * `npm run bench -- --profile` (the missed goals') or
 * `--profile=throughput,roundtrip,memory,serial`. The agent child runs under
 * --cpu-prof; the hub, in this process, under the inspector's profiler; the
 * top frames by self time of each side are printed. 'throughput' adds the
 * cost of each codec stage; 'memory' shows where an idle agent's RSS is and
 * how the spool fills while it streams; 'serial' follows the sequence
 * numbers on the line to tell frames sent again from new ones.
 */
import * as fs from 'node:fs';
import { Session } from 'node:inspector';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { TetherHub } from '../master-plugin/hub';
import type { RemoteAgent } from '../master-plugin/remote';
import { runShell } from '../master-plugin/run-shell';
import { cobsDecodeInPlace, cobsEncodeInto, cobsMaxEncodedLength } from '../wire/cobs';
import { CRC32C_IMPLEMENTATION, crc32c } from '../wire/crc32c';
import { FrameReader, authenticatedParts, isSequencedBody } from '../wire/framing';
import { nearestNumber } from '../wire/frame-auth';
import { MsgType, encodeOutput } from '../wire/messages';
import { AGENT_BIN, TetherProcess } from '../test/helpers/tether-procs';
import {
  benchFrame, MB, RssSampler, hubAndAgent, readMemory, round, settledMemory, textProducer, textProducerBytes, waitForAgentOrExit,
} from './lib';
import { catTime, compilerLog, serialPair } from './serial';
import { TetherWireTap } from './wiretap';
import { makeTempDir, sleep, withTimeout } from '../test/helpers/support';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface Frame {
  frame: string;
  selfMs: number;
  selfPct: number;
  /** Time in this function and everything it called (inclusive). */
  totalMs: number;
}

/** The top frames of a profile by self time, with their inclusive time. */
export function summarise(profile: CpuProfile, top = 20): { totalMs: number; frames: Frame[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfById = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    selfById.set(id, (selfById.get(id) ?? 0) + dt);
    total += dt;
  });
  const key = (n: ProfileNode) => {
    const cf = n.callFrame;
    const file = cf.url ? cf.url.replace(/^file:\/\//, '').split('/').slice(-2).join('/') : '';
    return `${cf.functionName || '(anonymous)'}${file ? ` ${file}:${cf.lineNumber + 1}` : ''}`;
  };
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, dt] of selfById) {
    const k = key(byId.get(id)!);
    self.set(k, (self.get(k) ?? 0) + dt);
    // inclusive: each distinct frame on the stack once
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const kk = key(byId.get(at)!);
      if (seen.has(kk)) continue;
      seen.add(kk);
      inclusive.set(kk, (inclusive.get(kk) ?? 0) + dt);
    }
  }
  const frames = [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([frame, us]) => ({
      frame,
      selfMs: Math.round(us / 1000),
      selfPct: Math.round((1000 * us) / total) / 10,
      totalMs: Math.round((inclusive.get(frame) ?? 0) / 1000),
    }));
  return { totalMs: Math.round(total / 1000), frames };
}

/** Profiles this process (the hub) while `work` runs. */
async function profileHere<T>(work: () => Promise<T>): Promise<{ result: T; profile: CpuProfile }> {
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))));
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: 200 });
  await post('Profiler.start');
  try {
    const result = await work();
    const { profile } = (await post('Profiler.stop')) as { profile: CpuProfile };
    return { result, profile };
  } finally {
    session.disconnect();
  }
}

/** A hub here and a Node-run agent child, under --cpu-prof unless `profile` is false, with `agentArgs` added. */
async function profiledPair(
  agentArgs: string[] = [],
  profile = true,
): Promise<{ hub: TetherHub; remote: RemoteAgent; agent: TetherProcess; profDir: string; dir: string; basedir: string }> {
  const dir = await makeTempDir('tether-bench-prof-');
  const profDir = path.join(dir, 'prof');
  fs.mkdirSync(profDir);
  const secret = 'bench-secret';
  fs.writeFileSync(path.join(dir, 'secret'), `${secret}\n`, { mode: 0o600 });
  const hub = new TetherHub({ workers: { bench: secret } });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const basedir = path.join(dir, 'basedir');
  const agent = new TetherProcess('tether-agent (profiled)', dir, [
    ...(profile ? ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-interval', '200'] : []), AGENT_BIN,
    '--master', `tcp://127.0.0.1:${address.port}`, '--name', 'bench', '--secret-file', path.join(dir, 'secret'),
    '--basedir', basedir, ...agentArgs,
  ]);
  await agent.start();
  const remote = await waitForAgentOrExit(hub, 'bench', agent, 30_000);
  return { hub, remote, agent, profDir, dir, basedir };
}

export interface ProfileReport {
  scenario: string;
  hub: { totalMs: number; frames: Frame[] } | null;
  agent: { totalMs: number; frames: Frame[] } | null;
  note: string;
  /** Measurements that go with the profile (stage costs, memory maps). */
  details?: Array<[string, string | number]>;
}

// ------------------------------------------------------------ codec stages

/** MB/s of each stage a 64 KiB output chunk goes through, on this machine, in this process. */
export function codecCosts(): Array<[string, string | number]> {
  const data = textProducerBytes(65520);
  const runs = 1500;
  const rate = (f: () => void) => {
    for (let i = 0; i < 100; i++) f();
    const start = performance.now();
    for (let i = 0; i < runs; i++) f();
    return round((runs * data.length) / MB / ((performance.now() - start) / 1000), 0);
  };
  const dst = Buffer.allocUnsafe(cobsMaxEncodedLength(data.length + 4));
  const encoded = Buffer.from(dst.subarray(0, cobsEncodeInto(data, dst, 0)));
  const work = Buffer.allocUnsafe(encoded.length);
  const frame = benchFrame(encodeOutput(0, 0, data), 7);
  const reader = new FrameReader(65536);
  let body: Buffer = Buffer.alloc(0);
  reader.on('frame', (f: Buffer) => (body = f));
  reader.feed(frame);
  return [
    ['stage (64 KiB of text), MB/s', 'in this process'],
    ['encodeOutput (message head + Buffer.concat)', rate(() => encodeOutput(0, 0, data))],
    [`crc32c (${CRC32C_IMPLEMENTATION})`, rate(() => crc32c(data))],
    ['cobsEncodeInto', rate(() => cobsEncodeInto(data, dst, 0))],
    ['a frame: tag (HMAC-SHA256) + CRC + COBS from parts, agent side', rate(() => benchFrame(data, 7))],
    ['FrameReader.feed (copy + cobsDecodeInPlace), hub side', rate(() => reader.feed(frame))],
    ['authenticatedParts (CRC), hub side', rate(() => authenticatedParts(body))],
    ['cobsDecodeInPlace', rate(() => { encoded.copy(work); cobsDecodeInPlace(work, encoded.length); })],
  ];
}

// ------------------------------------------------------------ memory

/** Resident memory of a process by mapping (the executable, anonymous memory, ...), MB. */
function mappings(pid: number): Array<[string, number]> {
  const by = new Map<string, number>();
  let current = '';
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      current = head[1] || '[anonymous]';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) by.set(current, (by.get(current) ?? 0) + Number(rss[1]) / 1000);
  }
  return [...by].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, v]) => [k, round(v, 1)]);
}

/** Streams `bytes` of text from the agent while sampling its memory and the size of its spool directory. */
async function measureStreaming(remote: RemoteAgent, pid: number, spoolDir: string, bytes: number, onOutput: () => void | Promise<void>) {
  let spilled = 0;
  const poll = setInterval(() => {
    let size = 0;
    try {
      for (const f of fs.readdirSync(spoolDir)) size += fs.statSync(path.join(spoolDir, f)).size;
    } catch {
      // no spool file yet
    }
    spilled = Math.max(spilled, size);
  }, 10);
  const sampler = new RssSampler(pid, 10);
  const start = performance.now();
  try {
    await withTimeout(runShell(remote, textProducer(bytes), { onOutput }).result, 300_000, 'streaming');
  } finally {
    clearInterval(poll);
  }
  const ms = performance.now() - start;
  return { MBps: round(bytes / MB / (ms / 1000), 1), peak: sampler.stop(), spilledMB: round(spilled / MB, 1) };
}

/** Where an idle agent's RSS is, and what fills it while it streams (the spool). */
async function memoryProfile(quick: boolean): Promise<ProfileReport> {
  const details: Array<[string, string | number]> = [];
  const bytes = (quick ? 20 : 100) * MB;
  const pair = await hubAndAgent();
  try {
    const pid = pair.agent.pid!;
    await sleep(1000);
    const idle = await settledMemory(pid, 500);
    details.push(['idle agent: VmRSS / USS / PSS MB', `${round(idle.rss, 1)} / ${round(idle.uss, 1)} / ${round(idle.pss, 1)}`]);
    for (const [name, mb] of mappings(pid)) details.push([`idle agent: resident in ${name}`, `${mb} MB`]);
    const spoolDir = path.join(pair.agent.basedir, '.tether-spool');
    for (const slow of [false, true]) {
      const onOutput = slow ? () => new Promise<void>((resolve) => setTimeout(resolve, 1)) : () => undefined;
      const m = await measureStreaming(pair.remote, pid, spoolDir, bytes, onOutput);
      details.push([
        `streaming ${bytes / MB} MB to a ${slow ? 'slower (1 ms per chunk)' : 'fast'} consumer, ${m.MBps} MB/s`,
        `peak VmRSS ${round(m.peak.max, 1)} MB, USS ${round(m.peak.maxUss, 1)} MB; spilled to ${path.basename(spoolDir)}: up to ${m.spilledMB} MB`,
      ]);
      await sleep(500);
    }
    const after = readMemory(pid);
    if (after) details.push(['agent after streaming: VmRSS / USS MB', `${round(after.rss, 1)} / ${round(after.uss, 1)}`]);
  } finally {
    await pair.close();
  }
  // The same agent with the smallest in-memory spool its command line allows: what the spool holds.
  const small = await profiledPair(['--spool-memory', '1'], false);
  try {
    const pid = small.agent.pid!;
    const spoolDir = path.join(small.basedir, '.tether-spool');
    const m = await measureStreaming(small.remote, pid, spoolDir, bytes, () => undefined);
    details.push([
      `with --spool-memory 1: streaming ${bytes / MB} MB to a fast consumer, ${m.MBps} MB/s`,
      `peak VmRSS ${round(m.peak.max, 1)} MB, USS ${round(m.peak.maxUss, 1)} MB; spilled to disk: up to ${m.spilledMB} MB`,
    ]);
  } finally {
    await small.agent.stop();
    await small.hub.close();
    fs.rmSync(small.dir, { recursive: true, force: true });
  }
  return { scenario: 'memory', hub: null, agent: null, note: 'agent memory: where it is idle, and the spool while streaming', details };
}

/** Runs one scenario with both sides profiled; returns the top frames of each. */
/**
 * Follows the sequence numbers on a serial line the way the hub does: each
 * agent → hub frame is new (its CRC holds for the sequence number expected
 * next), a duplicate (it holds for an earlier one: a frame sent again) or
 * corrupt; and when the hub's ACKs and NAKs came back.
 */
class SequenceWatch {
  private readonly up = new FrameReader(1 << 16);
  private readonly down = new FrameReader(1 << 16);
  private readonly start = performance.now();
  fresh = 0;
  duplicates = 0;
  corrupt = 0;
  firstDuplicateAt: number | null = null;
  naks = 0;
  naksBeforeFirstDuplicate = 0;
  acksBeforeFirstDuplicate = 0;
  firstAckAt: number | null = null;

  constructor(private expected: number) {
    this.up.on('frame', (frame: Buffer) => this.onUp(frame));
    this.down.on('frame', (frame: Buffer) => this.onDown(frame));
  }

  feed(direction: 'ab' | 'ba', bytes: Buffer): void {
    (direction === 'ab' ? this.up : this.down).feed(bytes);
  }

  /** The line is watched, not a party to it: frames are placed by their number, their tags are not checked. */
  private onUp(frame: Buffer): void {
    const parts = authenticatedParts(frame);
    if (!parts) {
      this.corrupt++;
      return;
    }
    if (!isSequencedBody(parts.body)) return; // the agent's own ACKs and pings
    const number = nearestNumber(parts.low, this.expected);
    if (number >= this.expected) {
      this.expected = number + 1;
      this.fresh++;
      return;
    }
    this.duplicates++;
    this.firstDuplicateAt ??= performance.now() - this.start;
  }

  private onDown(frame: Buffer): void {
    const parts = authenticatedParts(frame);
    if (!parts || isSequencedBody(parts.body)) return;
    const type = parts.body[0];
    const now = performance.now();
    if (type === MsgType.ACK) {
      this.firstAckAt ??= now - this.start;
      if (this.firstDuplicateAt === null) this.acksBeforeFirstDuplicate++;
    } else if (type === MsgType.NAK) {
      this.naks++;
      if (this.firstDuplicateAt === null) this.naksBeforeFirstDuplicate++;
    }
  }

  report(): Array<[string, string | number]> {
    return [
      ['agent → hub sequenced frames: new / sent again (duplicates) / corrupt', `${this.fresh} / ${this.duplicates} / ${this.corrupt}`],
      ['first duplicate after', this.firstDuplicateAt === null ? 'none' : `${Math.round(this.firstDuplicateAt)} ms`],
      ['NAKs from the hub: in all / before the first duplicate', `${this.naks} / ${this.naksBeforeFirstDuplicate}`],
      ['ACKs from the hub that left the line before the first duplicate', this.acksBeforeFirstDuplicate],
      ['the first ACK from the hub left the line after', this.firstAckAt === null ? 'none' : `${Math.round(this.firstAckAt)} ms`],
    ];
  }
}

/** The compressed build log at 921600 baud: the hub (and the line simulator) here, the agent under --cpu-prof. */
async function serialProfile(quick: boolean): Promise<ProfileReport> {
  const baud = 921600;
  const pair = await serialPair(baud, true);
  try {
    const text = compilerLog(Math.round((baud / 10) * (quick ? 1 : 4) * 7), baud);
    fs.writeFileSync(path.join(pair.basedir, 'log.txt'), text);
    let ms = 0;
    const tap = new TetherWireTap();
    const seqs = new SequenceWatch(pair.hubNextSeq());
    pair.onLine((direction, bytes) => {
      tap.feed(direction === 'ab' ? 'up' : 'down', bytes);
      seqs.feed(direction, bytes);
    });
    const lineBefore = pair.lineBytes();
    const framesBefore = pair.hubFrames();
    const { profile } = await profileHere(async () => {
      ms = await catTime(pair.remote, 'log.txt', text.length);
    });
    const carried = pair.lineBytes().ab - lineBefore.ab;
    const frames = pair.hubFrames();
    const goodput = text.length / (ms / 1000);
    const byType = tap.summary().byType;
    const details: Array<[string, string | number]> = [...seqs.report(), ['frames on the line, both directions, by message type', 'frames, bytes']];
    for (const [type, t] of Object.entries(byType)) details.push([`  ${type}`, `${t.frames}, ${t.bytes}`]);
    return {
      scenario: 'serial',
      hub: summarise(profile),
      agent: null,
      details,
      note:
        `${text.length} bytes of build log at ${baud} baud with deflate in ${Math.round(ms)} ms: ${Math.round(goodput)} B/s, ` +
        `${round(goodput / (baud / 10), 2)}× the line; the line carried ${carried} bytes agent → hub (${round(carried / (baud / 10) / (ms / 1000), 2)} of its capacity); ` +
        `the hub took ${frames.in - framesBefore.in} frames and dropped ${frames.dropped - framesBefore.dropped} as out of sequence (frames sent again). ` +
        `'hub' below is this process: the hub and the line simulator`,
    };
  } finally {
    await pair.close();
  }
}

export async function profileScenario(scenario: string, quick: boolean): Promise<ProfileReport> {
  if (scenario === 'memory') return memoryProfile(quick);
  if (scenario === 'serial') return serialProfile(quick);
  const pair = await profiledPair();
  let note = '';
  try {
    const work = async () => {
      if (scenario === 'throughput') {
        const bytes = (quick ? 20 : 200) * MB;
        const start = Date.now();
        let got = 0;
        const r = await withTimeout(runShell(pair.remote, textProducer(bytes), { onOutput: (c) => void (got += c.data.length) }).result, 300_000, 'throughput');
        note = `${bytes / MB} MB in ${Date.now() - start} ms (rc ${r.rc}, ${got} bytes)`;
      } else if (scenario === 'roundtrip') {
        const runs = quick ? 300 : 3000;
        const start = Date.now();
        for (let i = 0; i < runs; i++) await withTimeout(pair.remote.run('stat', { path: '/' }, {}).result, 10_000, 'stat');
        note = `${runs} stat round trips in ${Date.now() - start} ms`;
      } else {
        throw new Error(`no profile scenario '${scenario}' (throughput, roundtrip, memory, serial)`);
      }
    };
    const { profile } = await profileHere(work);
    await pair.agent.stop();
    await pair.hub.close();
    await sleep(200);
    const files = fs.readdirSync(pair.profDir).filter((f) => f.endsWith('.cpuprofile'));
    const agentProfile = files.length > 0 ? (JSON.parse(fs.readFileSync(path.join(pair.profDir, files[0]), 'utf8')) as CpuProfile) : null;
    const details = scenario === 'throughput' ? codecCosts() : undefined;
    return { scenario, hub: summarise(profile), agent: agentProfile ? summarise(agentProfile) : null, note, details };
  } finally {
    await pair.agent.stop();
    await pair.hub.close();
    fs.rmSync(pair.dir, { recursive: true, force: true });
  }
}

export function printProfile(report: ProfileReport, print: (line: string) => void): void {
  print(`profile ${report.scenario}: ${report.note}`);
  for (const [k, v] of report.details ?? []) print(`  ${k}: ${v}`);
  if (!report.hub && !report.agent) return;
  for (const [side, s] of [['hub (this process)', report.hub], ['agent', report.agent]] as const) {
    if (!s) {
      print(`  ${side}: no profile written`);
      continue;
    }
    print(`  ${side}: ${s.totalMs} ms sampled; top frames by self time (self ms, %, inclusive ms):`);
    for (const f of s.frames) print(`    ${String(f.selfMs).padStart(6)} ${String(f.selfPct).padStart(5)}% ${String(f.totalMs).padStart(6)}  ${f.frame}`);
  }
}
