/**
 * Serial goodput: an in-process hub and a tether-agent child process on the
 * two ends of a simulated serial line (test/helpers/line-sim.ts: two socat
 * pty pairs with the line simulator between them, baud/10 bytes per second
 * in each direction, no noise); the agent opens its pty with its serial
 * transport (wire/serial-line.ts), the hub its own with the same code. A
 * shell command on the agent `cat`s a file; goodput is the payload per
 * second through the line.
 *
 *   raw         random bytes (incompressible: deflate sends them as they are)
 *   text        a compiler-like build log, deflate on (as on every serial line)
 *   text-plain  the same log with compression off (the hub offers no deflate)
 *   raw-plain   random bytes with compression off: deflate must cost them nothing
 *
 * Goodput = (S_big - S_small) / (T_big - T_small): the same command with a
 * file of one second's worth of line and with a tiny one, so the fixed cost
 * of a command (START, headers, rc, COMPLETE; the process start) cancels and
 * what is left is the steady rate. `withOverhead` is S_big / T_big.
 *
 * Without socat (the pty pairs) the section reports "not available".
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { deflateRawSync } from 'node:zlib';
import type { AgentConnection } from '../master-plugin/agent-connection';
import { TetherHub } from '../master-plugin/hub';
import type { RemoteAgent } from '../master-plugin/remote';
import { runShell } from '../master-plugin/run-shell';
import { openSerialLine } from '../wire/serial-line';
import { simulatedLine } from '../test/helpers/line-sim';
import { serialTetherAgent } from '../test/helpers/serial-procs';
import { encodeMessage } from '../wire/messages';
import { type BenchOptions, benchFrame, median, round, since, waitForAgentOrExit } from './lib';
import { withTimeout } from '../test/helpers/support';

export const BAUDS = [9600, 115200, 921600] as const;
export type SerialMode = 'raw' | 'text' | 'text-plain' | 'raw-plain';

export interface SerialRow {
  baud: number;
  mode: SerialMode;
  /** baud / 10: what the line carries, in bytes per second. */
  lineBytesPerSecond: number;
  bytes: number;
  seconds: number;
  /** Steady goodput, payload bytes per second. */
  goodput: number;
  /** goodput / line rate (above 1: compression). */
  ofLine: number;
  /** S_big / T_big: with the per-command cost. */
  withOverhead: number;
  /** deflate's ratio on the file on its own, for reference. */
  deflateRatio: number;
  /** Bytes the line carried agent → master during the big transfer, per payload byte, and its share of the line's capacity then. */
  wirePerPayload: number;
  lineBusy: number;
  /** Frames the hub took during the big file, and those it dropped (on this noise-free line: duplicates of frames sent again). */
  framesIn: number;
  framesDropped: number;
}

/** Interactive latency: a short line printed on the agent, from the child's write to the hub's callback. */
export interface SerialLatency {
  baud: number;
  lines: number;
  medianMs: number;
  maxMs: number;
  /** The line's frame on the wire, and its transmission time at this rate. */
  frameBytes: number;
  lineMs: number;
}

export type SerialResults =
  | { available: true; transport: string; rows: SerialRow[]; latency: SerialLatency[] }
  | { available: false; reason: string };

/** The wall clock in ms with sub-ms digits, comparable with `date +%s%N` in another process. */
const wallMs = () => performance.timeOrigin + performance.now();

/**
 * `lines` short lines printed by a shell on the agent 0.2 s apart, each
 * holding the wall-clock time of its printing (`date +%s%N`); the delay of
 * each is the hub's wall clock when its output callback runs, less that.
 */
async function lineLatency(remote: RemoteAgent, baud: number, lines: number): Promise<SerialLatency> {
  const script = `i=0; while [ $i -lt ${lines} ]; do sleep 0.2; date +%s%N; i=$((i+1)); done`;
  const delays: number[] = [];
  let partial = '';
  const result = await withTimeout(
    runShell(remote, ['sh', '-c', script], {
      onOutput: (c) => {
        const now = wallMs();
        partial += c.data.toString();
        const complete = partial.split('\n');
        partial = complete.pop()!;
        for (const line of complete) if (/^\d{19}$/.test(line)) delays.push(now - Number(BigInt(line) / 1000n) / 1000);
      },
    }).result,
    60_000,
    'the latency lines',
  );
  if (result.rc !== 0 || delays.length !== lines) throw new Error(`latency at ${baud} baud: rc ${result.rc}, ${delays.length} of ${lines} lines`);
  const frameBytes = benchFrame(encodeMessage({ type: 'output', stream: 1, channel: 0, data: Buffer.alloc(20, 0x31) }), 1000).length;
  return {
    baud,
    lines,
    medianMs: round(median(delays), 2),
    maxMs: round(Math.max(...delays), 2),
    frameBytes,
    lineMs: round((frameBytes * 1000) / (baud / 10), 2),
  };
}

/**
 * A deterministic build log: compiler command lines, warnings with source
 * excerpts, linker and test lines, over a source tree of a few hundred files
 * with made-up names. deflate packs it about as well as a real build log of
 * a C project (5 to 8 times; a log this regular is on the easy side).
 */
export function compilerLog(bytes: number, seed = 1): Buffer {
  let state = seed >>> 0;
  const rnd = (n: number) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state >>> 8) % n;
  };
  const syllables = ['ac', 'ble', 'cor', 'dat', 'en', 'fra', 'gen', 'hal', 'io', 'ker', 'lo', 'mux', 'net', 'op', 'pro', 'qu',
    're', 'sig', 'tim', 'ul', 'ver', 'wr', 'xt', 'ys', 'zo', 'buf', 'cfg', 'dev', 'irq', 'dma', 'spi', 'usb'];
  const ident = (parts: number) => Array.from({ length: parts }, () => syllables[rnd(syllables.length)]).join(rnd(3) === 0 ? '_' : '');
  const dirs = Array.from({ length: 24 }, () => `${['src', 'drivers', 'lib', 'arch/arm', 'net', 'fs'][rnd(6)]}/${ident(2)}`);
  const files = Array.from({ length: 300 }, () => `${dirs[rnd(dirs.length)]}/${ident(2 + rnd(2))}`);
  const types = ['int', 'size_t', 'uint32_t', 'struct dev *', 'const char *', 'unsigned long'];
  const lines: string[] = [];
  let size = 0;
  while (size < bytes) {
    const f = files[rnd(files.length)];
    const v = ident(1 + rnd(2));
    const at = `${f}.c:${1 + rnd(3000)}:${1 + rnd(70)}`;
    const kind = rnd(10);
    if (kind < 4) {
      lines.push(`arm-none-eabi-gcc -O2 -g -Wall -Wextra -mcpu=cortex-m4 -mthumb -Iinclude -I${dirs[rnd(dirs.length)]} -DBOARD_REV=${rnd(9)} -c ${f}.c -o build/${f}.o`);
    } else if (kind < 6) {
      lines.push(`${at}: warning: unused variable '${v}' [-Wunused-variable]`);
      lines.push(`  ${1 + rnd(3000)} |     ${types[rnd(types.length)]} ${v} = ${ident(2)}(${ident(1)}, ${rnd(4096)});`);
      lines.push(`      |     ${' '.repeat(rnd(12))}^~~~`);
    } else if (kind < 7) {
      lines.push(`${at}: warning: comparison of integer expressions of different signedness: '${types[rnd(types.length)]}' and '${types[rnd(types.length)]}' [-Wsign-compare]`);
    } else if (kind < 9) {
      lines.push(`  CC      build/${f}.o`);
    } else {
      lines.push(`test_${ident(2)} ... ok (${rnd(900)} ms)`);
    }
    size += lines[lines.length - 1].length + 1;
  }
  return Buffer.from(lines.join('\n') + '\n').subarray(0, bytes);
}

/** What the section needs besides the code: socat for the pty pairs. */
function unavailable(): string | null {
  try {
    execFileSync('socat', ['-V'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'socat is not installed (the line simulator needs it)';
  }
}

/**
 * A hub here and a tether-agent child process over a simulated line at
 * `baud`; deflate only when `deflate`. Files for the agent go in `basedir()`.
 */
export async function serialPair(baud: number, deflate: boolean) {
  const line = await simulatedLine({ baud });
  const secret = 'serial-secret';
  const hub = new TetherHub({ workers: { s1: secret }, keepalive: 30 });
  const masterEnd = await openSerialLine(line.masterPath, { baud });
  // What hub.listen('serial:...') does, but with the lossy flag (which is what
  // offers deflate) off for the plain mode; the rate is the line's either way.
  hub.accept(masterEnd, `serial:${line.masterPath}`, { worker: 's1', lossy: deflate, bytesPerSecond: baud / 10 });
  const agent = await serialTetherAgent({ device: line.agentPath, name: 's1', secret, baud });
  const close = async () => {
    await agent.stop();
    await hub.close();
    masterEnd.destroy();
    await line.close();
    fs.rmSync(agent.dir, { recursive: true, force: true });
  };
  try {
    fs.mkdirSync(agent.basedir, { recursive: true });
    await agent.start();
    const remote = await waitForAgentOrExit(hub, 's1', agent, 60_000);
    const session = (remote as AgentConnection).session;
    return {
      remote,
      basedir: agent.basedir,
      /** Bytes that left the line so far, agent → master ('ab') and back ('ba'). */
      lineBytes: () => ({ ab: line.sim.stats.ab.bytesOut, ba: line.sim.stats.ba.bytesOut }),
      /** Sees the bytes as they leave the line: 'ab' agent → hub, 'ba' hub → agent. */
      onLine: (listener: (direction: 'ab' | 'ba', bytes: Buffer) => void) => line.sim.on('deliver', listener),
      /** The sequence number the hub expects next from the agent. */
      hubNextSeq: () => session.nextRecvSeq,
      /** Frames the hub took, and those it dropped for a CRC or sequence mismatch (on a clean line: frames sent again). */
      hubFrames: () => ({ in: session.stats.framesIn, dropped: session.stats.crcErrors + session.stats.duplicates + session.stats.ahead }),
      close,
    };
  } catch (error) {
    const output = agent.output;
    await close();
    throw new Error(`${(error as Error).message}\n${output}`);
  }
}

export async function catTime(remote: RemoteAgent, file: string, size: number): Promise<number> {
  let got = 0;
  const start = performance.now();
  const result = await withTimeout(runShell(remote, ['cat', file], { onOutput: (c) => void (got += c.data.length) }).result, 600_000, `cat ${file}`);
  const ms = since(start);
  if (result.rc !== 0 || got !== size) throw new Error(`cat ${file}: rc ${result.rc}, ${got} of ${size} bytes`);
  return ms;
}

export async function runSerial(opts: BenchOptions): Promise<SerialResults> {
  const missing = unavailable();
  if (missing) {
    opts.log(`serial: not available (${missing})`);
    return { available: false, reason: missing };
  }
  const seconds = opts.quick ? 1 : 6;
  const rows: SerialRow[] = [];
  const latency: SerialLatency[] = [];
  // A quick run measures 115200 baud only.
  for (const baud of opts.quick ? [115200] : BAUDS) {
    const rate = baud / 10;
    const smallSize = 16;
    const raw = randomBytes(Math.round(rate * seconds));
    // Text: sized for about `seconds` of line time at the compression deflate gets on it.
    const sample = compilerLog(Math.round(rate * seconds * 4), baud);
    const textBig = compilerLog(Math.round(rate * seconds * (sample.length / deflateRawSync(sample).length)), baud);
    const textPlain = compilerLog(Math.round(rate * seconds), baud + 1);
    const ratio = (b: Buffer) => round(b.length / deflateRawSync(b).length, 2);
    const files: Record<SerialMode, { big: Buffer; small: Buffer }> = {
      raw: { big: raw, small: randomBytes(smallSize) },
      text: { big: textBig, small: compilerLog(smallSize, 7) },
      'text-plain': { big: textPlain, small: compilerLog(smallSize, 7) },
      'raw-plain': { big: raw, small: randomBytes(smallSize) },
    };
    for (const deflate of [true, false]) {
      const pair = await serialPair(baud, deflate);
      try {
        for (const mode of (deflate ? ['raw', 'text'] : ['raw-plain', 'text-plain']) as SerialMode[]) {
          const f = files[mode];
          fs.writeFileSync(path.join(pair.basedir, `${mode}-big`), f.big);
          fs.writeFileSync(path.join(pair.basedir, `${mode}-small`), f.small);
          await catTime(pair.remote, `${mode}-small`, smallSize); // warm-up: the first command pays for more
          const tSmall = await catTime(pair.remote, `${mode}-small`, smallSize);
          const lineBefore = pair.lineBytes();
          const framesBefore = pair.hubFrames();
          const tBig = await catTime(pair.remote, `${mode}-big`, f.big.length);
          const carried = pair.lineBytes().ab - lineBefore.ab;
          const framesAfter = pair.hubFrames();
          const goodput = (f.big.length - smallSize) / (Math.max(1, tBig - tSmall) / 1000);
          const row: SerialRow = {
            baud,
            mode,
            lineBytesPerSecond: rate,
            bytes: f.big.length,
            seconds: round(tBig / 1000, 2),
            goodput: Math.round(goodput),
            ofLine: round(goodput / rate, 3),
            withOverhead: Math.round(f.big.length / (tBig / 1000)),
            deflateRatio: ratio(f.big),
            wirePerPayload: round(carried / f.big.length, 3),
            lineBusy: round(carried / (rate * (tBig / 1000)), 3),
            framesIn: framesAfter.in - framesBefore.in,
            framesDropped: framesAfter.dropped - framesBefore.dropped,
          };
          rows.push(row);
          opts.log(
            `serial ${baud} ${mode}: ${row.goodput} B/s of ${rate} (${row.ofLine}×), ${row.bytes} bytes in ${row.seconds} s; ` +
              `${row.wirePerPayload} line bytes per payload byte, line busy ${row.lineBusy}; hub took ${row.framesIn} frames, dropped ${row.framesDropped}`,
          );
        }
        if (deflate) {
          const l = await lineLatency(pair.remote, baud, opts.quick ? 5 : 20);
          latency.push(l);
          opts.log(`serial ${baud} latency of a short line: median ${l.medianMs} ms, max ${l.maxMs} ms (its ${l.frameBytes}-byte frame takes ${l.lineMs} ms on the line)`);
        }
      } finally {
        await pair.close();
      }
    }
  }
  return { available: true, transport: 'tether-agent (wire/serial-line.ts) ↔ socat ptys ↔ test/helpers/line-sim.ts ↔ socat ptys ↔ hub', rows, latency };
}
