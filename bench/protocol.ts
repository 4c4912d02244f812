/**
 * The protocol's own numbers, without Buildbot: an in-process TetherHub and
 * a tether-agent child process on loopback.
 *
 *   throughput   a command writing N MB to stdout, agent → hub, against the
 *                same command piped into cat > /dev/null on this machine
 *   roundTrip    a trivial command (stat, and shell `true`): median and p99
 *   messages     the wire bytes of each message type (body, and frame with
 *                CRC, COBS and delimiter)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { shellQuote } from '../agent/commands/pyrepr';
import type { RemoteAgent } from '../master-plugin/remote';
import { runShell, shellArgs } from '../master-plugin/run-shell';
import { Channel, MsgType, type OutgoingMessage, encodeMessage } from '../wire/messages';
import {
  type BenchOptions, MB, benchFrame, cpuMsOf, hubAndAgent, median, percentile, round, since, textProducer, timeLocal,
} from './lib';
import { freePort, listening, waitFor, withTimeout } from '../test/helpers/support';
import type { RelayMode } from './node-relay';

export interface ThroughputResult {
  bytes: number;
  reps: number;
  tetherMBps: number;
  catMBps: number;
  /** Median over the pairs of (Tether MB/s) / (cat MB/s). */
  ratio: number;
  tetherMs: number[];
  catMs: number[];
  /**
   * The same bytes through a relay of Tether's shape, two socats: the command
   * → one relay process → TCP → one process → /dev/null. Median over the
   * pairs of (Tether MB/s) / (relay MB/s): what the shape itself costs is out.
   */
  relayMBps: number;
  relayRatio: number;
  relayMs: number[];
  /**
   * The same relay written in Node (bench/node-relay.ts), timed from its
   * first byte: plain; with HMAC-SHA256 over every byte at both ends; and
   * in authenticated Tether frames of 64 KiB, through Tether's own framing
   * code (tag, CRC-32C, COBS; FrameReader and checks). The first two are what
   * a Node process costs on this path at the least: the second bounds any
   * Node design that tags every byte. The third is a reference, not a bound:
   * Tether, which does more, has measured as fast.
   */
  nodeRelayMBps: number;
  nodeHmacRelayMBps: number;
  nodeFramedRelayMBps: number;
  /**
   * CPU time (user + system) per MB of output during Tether's runs: the agent
   * process's (/proc/PID/stat) and the hub's (this process). With two cores
   * for the command, the agent and the hub, their sum is what bounds the rate.
   */
  agentCpuMsPerMB: number;
  hubCpuMsPerMB: number;
}

/** A relay's receiving end: resolves once it has exited 0, rejects otherwise. */
function receiverExit(receiver: ChildProcess, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    receiver.once('error', reject);
    receiver.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${what}: exit ${String(code)}`))));
  });
}

/**
 * `command | socat -u STDIN TCP:...` into `socat -u TCP-LISTEN:... STDOUT >
 * /dev/null`, timed from the start of the sender to the end of the receiver.
 */
async function timeRelay(command: string): Promise<number> {
  const port = await freePort();
  const receiver = spawn('socat', ['-u', `TCP-LISTEN:${port},reuseaddr,bind=127.0.0.1`, 'OPEN:/dev/null,wronly'], { stdio: 'ignore' });
  const done = receiverExit(receiver, 'the socat receiver');
  await listening(port);
  const start = performance.now();
  await timeLocal(`${command} | socat -u STDIN TCP:127.0.0.1:${port}`);
  await withTimeout(done, 60_000, 'the socat receiver');
  return since(start);
}

/** The Node relay (bench/node-relay.ts) from its first byte to its last, in ms. */
async function timeNodeRelay(command: string, mode: RelayMode): Promise<number> {
  const port = await freePort();
  const script = path.join(__dirname, 'node-relay.js');
  const receiver = spawn(process.execPath, [script, 'receive', String(port), mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  let said = '';
  receiver.stdout.on('data', (chunk: Buffer) => (said += chunk.toString()));
  const done = receiverExit(receiver, 'the node relay receiver');
  await waitFor('the node relay receiver', () => said.startsWith('ready\n'), { timeoutMs: 10_000, intervalMs: 10 });
  await timeLocal(`${command} | ${shellQuote([process.execPath, script, 'send', String(port), mode])}`);
  await withTimeout(done, 60_000, 'the node relay receiver');
  return Number(said.split('\n')[1]);
}

export interface RoundTripResult {
  command: string;
  runs: number;
  medianMs: number;
  p99Ms: number;
  meanMs: number;
}

export interface MessageSize {
  message: string;
  /** Payload bytes carried (output, data, log, stdin), 0 for the rest. */
  payload: number;
  body: number;
  frame: number;
  /** Frame bytes that are not payload. */
  overhead: number;
}

export interface ProtocolResults {
  throughput: ThroughputResult;
  roundTrip: RoundTripResult[];
  messages: MessageSize[];
}

/** Runs `command` on the agent, dropping its output; resolves with the wall time in ms and the bytes seen. */
async function timeShell(remote: RemoteAgent, command: string): Promise<{ ms: number; bytes: number }> {
  let bytes = 0;
  const start = performance.now();
  const shell = runShell(remote, command, { onOutput: (c) => void (bytes += c.data.length) });
  const result = await withTimeout(shell.result, 300_000, command);
  const ms = since(start);
  if (result.rc !== 0) throw new Error(`${command}: rc ${result.rc}`);
  return { ms, bytes };
}

export async function throughput(remote: RemoteAgent, agentPid: number, opts: BenchOptions): Promise<ThroughputResult> {
  const bytes = (opts.quick ? 10 : 200) * MB;
  const reps = opts.quick ? 2 : 5;
  const command = textProducer(bytes);
  await timeShell(remote, command); // warm-up, the whole size: V8 has compiled the hot path by its end
  const tether: number[] = [];
  const cat: number[] = [];
  const relay: number[] = [];
  const nodeRelays: Record<RelayMode, number[]> = { plain: [], hmac: [], framed: [] };
  let agentCpuMs = 0;
  let hubCpuMs = 0;
  for (let i = 0; i < reps; i++) {
    const agentBefore = cpuMsOf(agentPid);
    const hubBefore = process.cpuUsage();
    const { ms, bytes: got } = await timeShell(remote, command);
    const hub = process.cpuUsage(hubBefore);
    agentCpuMs += cpuMsOf(agentPid) - agentBefore;
    hubCpuMs += (hub.user + hub.system) / 1000;
    if (got !== bytes) throw new Error(`throughput: got ${got} of ${bytes} bytes`);
    tether.push(ms);
    cat.push(await timeLocal(`${command} | cat > /dev/null`));
    relay.push(await timeRelay(command));
    for (const [mode, times] of Object.entries(nodeRelays)) times.push(await timeNodeRelay(command, mode as RelayMode));
  }
  const mbps = (ms: number) => round(bytes / MB / (ms / 1000), 1);
  // throughput ratio = time ratio inverted
  const ratioTo = (others: number[]) => round(median(others.map((x, i) => x / tether[i])));
  const result: ThroughputResult = {
    bytes,
    reps,
    tetherMBps: mbps(median(tether)),
    catMBps: mbps(median(cat)),
    ratio: ratioTo(cat),
    tetherMs: tether.map((x) => round(x, 1)),
    catMs: cat.map((x) => round(x, 1)),
    relayMBps: mbps(median(relay)),
    relayRatio: ratioTo(relay),
    relayMs: relay.map((x) => round(x, 1)),
    nodeRelayMBps: mbps(median(nodeRelays.plain)),
    nodeHmacRelayMBps: mbps(median(nodeRelays.hmac)),
    nodeFramedRelayMBps: mbps(median(nodeRelays.framed)),
    agentCpuMsPerMB: round(agentCpuMs / (reps * (bytes / MB)), 2),
    hubCpuMsPerMB: round(hubCpuMs / (reps * (bytes / MB)), 2),
  };
  opts.log(
    `throughput: Tether ${result.tetherMBps} MB/s, cat ${result.catMBps} MB/s (ratio ${result.ratio}), socat relay ${result.relayMBps} MB/s (ratio ${result.relayRatio}); ` +
      `the relay in Node ${result.nodeRelayMBps} MB/s, with HMAC-SHA256 ${result.nodeHmacRelayMBps} MB/s, in Tether frames ${result.nodeFramedRelayMBps} MB/s; ` +
      `CPU per MB: agent ${result.agentCpuMsPerMB} ms, hub ${result.hubCpuMsPerMB} ms`,
  );
  return result;
}

async function roundTrips(name: string, runs: number, once: () => Promise<void>): Promise<RoundTripResult> {
  for (let i = 0; i < Math.min(50, Math.ceil(runs / 10)); i++) await once(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await once();
    times.push(since(start));
  }
  return {
    command: name,
    runs,
    medianMs: round(median(times)),
    p99Ms: round(percentile(times, 99)),
    meanMs: round(times.reduce((a, b) => a + b, 0) / times.length),
  };
}

export async function roundTrip(remote: RemoteAgent, opts: BenchOptions): Promise<RoundTripResult[]> {
  const stat = await roundTrips('stat /', opts.quick ? 200 : 2000, async () => {
    let rc: unknown;
    const command = remote.run('stat', { path: '/' }, { update: (key, value) => void (key === 'rc' && (rc = value)) });
    const result = await withTimeout(command.result, 10_000, 'stat');
    if (result.failure || rc !== 0) throw new Error(`stat failed: ${JSON.stringify(result.failure)} rc ${String(rc)}`);
  });
  opts.log(`round trip stat: median ${stat.medianMs} ms, p99 ${stat.p99Ms} ms`);
  const shellTrue = await roundTrips("shell 'true'", opts.quick ? 10 : 300, async () => {
    const result = await withTimeout(runShell(remote, ['true']).result, 10_000, 'true');
    if (result.rc !== 0) throw new Error(`true: rc ${result.rc}`);
  });
  opts.log(`round trip shell true: median ${shellTrue.medianMs} ms, p99 ${shellTrue.p99Ms} ms`);
  // The same, spawned here without Tether: what the process itself costs.
  const localTrue = await roundTrips("local spawn 'true' (no Tether)", opts.quick ? 10 : 300, async () => {
    await timeLocal('true');
  });
  return [stat, shellTrue, localTrue];
}

/** Every message type, with typical contents. */
export function messageSizes(): MessageSize[] {
  const seq = 1000;
  const payload = (n: number) => Buffer.alloc(n, 0x61);
  const nonce = Buffer.alloc(32, 7);
  const list: Array<[string, OutgoingMessage, number, boolean]> = [
    ['HELLO', { type: MsgType.HELLO, params: { versionMin: 1, versionMax: 1, name: 'board-01', nonce, caps: 3, maxFrame: 65536 } }, 0, false],
    ['CHALLENGE', { type: MsgType.CHALLENGE, paramsBytes: Buffer.alloc(60, 1), proof: nonce }, 0, false],
    ['PROOF', { type: MsgType.PROOF, proof: nonce }, 0, false],
    ['WELCOME', { type: MsgType.WELCOME, session: Buffer.alloc(16, 2), resumed: false, nextSeq: 0 }, 0, false],
    ['ACK', { type: MsgType.ACK, nextSeq: seq }, 0, false],
    ['NAK', { type: MsgType.NAK, nextSeq: seq }, 0, false],
    ['PING', { type: MsgType.PING, token: 17 }, 0, false],
    ['PONG', { type: MsgType.PONG, token: 17 }, 0, false],
    ['ERROR', { type: MsgType.ERROR, code: 4, message: 'the agent is stopping' }, 0, false],
    ['INFO (worker info, no environment)', { type: MsgType.INFO, info: {
      os: 'linux', arch: 'arm', hostname: 'board-01', basedir: '/var/lib/tether', environ: {}, version: '0.1.0',
      admin: '', host: '', numcpus: 4, commands: ['shell', 'upload_file', 'download_file', 'mkdir', 'rmdir', 'stat'],
    } }, 0, true],
    ['START (ShellCommand "make -j4")', { type: MsgType.START, stream: 0, command: 'shell', args: shellArgs('make -j4', { workdir: 'build' }) }, 0, true],
    ['UPDATE rc 0', { type: MsgType.UPDATE, stream: 0, key: 'rc', value: 0 }, 0, true],
    ['UPDATE elapsed', { type: MsgType.UPDATE, stream: 0, key: 'elapsed', value: 1.234567 }, 0, true],
    ['COMPLETE', { type: MsgType.COMPLETE, stream: 0, failure: null }, 0, true],
    ['INTERRUPT', { type: MsgType.INTERRUPT, stream: 0, why: 'stopped' }, 0, true],
    ['CREDIT 64 KiB', { type: MsgType.CREDIT, stream: 0, bytes: 65536 }, 0, true],
    ['EOF', { type: MsgType.EOF, stream: 0, times: null }, 0, true],
    ['HEADER', { type: MsgType.HEADER, stream: 0, text: 'program finished with exit code 0\n' }, 0, true],
    ['PRINT', { type: MsgType.PRINT, text: 'hello' }, 0, true],
    ['SHUTDOWN', { type: MsgType.SHUTDOWN }, 0, true],
    ['REJECT', { type: MsgType.REJECT, stream: 3, code: 12, message: 'no command runs on stream 3' }, 0, true],
    ['FRAGMENT (a 504-byte piece, 512-byte serial frames)', { type: MsgType.FRAGMENT, more: true, data: payload(504) }, 0, true],
    ['output 1 B', { type: 'output', stream: 0, channel: Channel.STDOUT, data: payload(1) }, 1, true],
    ['output 80 B (a line)', { type: 'output', stream: 0, channel: Channel.STDOUT, data: payload(80) }, 80, true],
    ['output 64 KiB - 16', { type: 'output', stream: 0, channel: Channel.STDOUT, data: payload(65520) }, 65520, true],
    ['DATA 64 KiB - 16', { type: MsgType.DATA, stream: 0, data: payload(65520) }, 65520, true],
    ['LOG 80 B ("app")', { type: MsgType.LOG, stream: 0, name: 'app', data: payload(80) }, 80, true],
    ['STDIN 80 B', { type: MsgType.STDIN, stream: 0, data: payload(80) }, 80, true],
  ];
  return list.map(([message, m, carried, sequenced]) => {
    const body = encodeMessage(m);
    const frame = benchFrame(body, sequenced ? seq : 0);
    return { message, payload: carried, body: body.length, frame: frame.length, overhead: frame.length - carried };
  });
}

export async function runProtocol(opts: BenchOptions): Promise<ProtocolResults> {
  const messages = messageSizes();
  const pair = await hubAndAgent();
  try {
    const tp = await throughput(pair.remote, pair.agent.pid!, opts);
    const rt = await roundTrip(pair.remote, opts);
    return { throughput: tp, roundTrip: rt, messages };
  } finally {
    await pair.close();
  }
}
