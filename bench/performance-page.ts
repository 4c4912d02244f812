/**
 * docs/performance.md: how to run the bench, what each section measures, then
 * a run's condensed tables and its goals. `npm run bench` writes it (see
 * writeSection in run.ts); the page is never edited by hand.
 */
import * as path from 'node:path';
import { REPO_ROOT } from '../test/helpers/support';
import { type Cell, MB, MiB, round, table } from './lib';
import type { Results, Section } from './run';

export const PERFORMANCE_PAGE = path.join(REPO_ROOT, 'docs', 'performance.md');

const yesNo = (met: boolean | null) => (met === null ? 'n/a' : met ? 'yes' : '**no**');

function duration(seconds: number): string {
  return seconds < 90 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

const INTRO = `# Performance

This page is written by \`npm run bench\` (bench/performance-page.ts) from the
run it describes: to change the text, change that file; to change the
figures, run the bench again.

## Running the bench

\`npm run bench\` measures Tether against buildbot-worker through a real
Buildbot master, and the protocol on its own; a full run takes several
minutes. The Buildbot comparison and the builds over noisy lines need what
\`npm test\` needs (Debian's \`buildbot\` and \`buildbot-worker\`; \`socat\`
for the serial sections); the single binary's rows need \`npm run
build:binary\`. It prints its tables and the goals, writes every figure to
\`bench/results.json\` and this page, and profiles the goals it misses.

- \`npm run bench -- --quick\`: small sizes and few repetitions (about a
  minute); its figures are smaller than the goals name.
- \`--skip-buildbot\`, \`--only=protocol,buildbot,memory,scale,serial,noise,hostile\`:
  which sections run.
- \`--profile=throughput,roundtrip,memory,serial\`, \`--no-profile\`: which
  profiles run after the goals (a full run profiles the missed goals).
- \`--out=FILE\`: the results go to FILE, and the page beside it (FILE.md),
  not here. \`--from=FILE\` prints an earlier run again and rewrites its page
  (this one for \`--from=bench/results.json\`).

\`test/bench-smoke.test.ts\` runs the quick mode without Buildbot in \`npm
test\` and checks only that every section has its figures, never how fast
they are.

The sections, in the order they run (the protocol section first, while its in-process hub is in a fresh process):

| section | what it measures |
| --- | --- |
| protocol | an in-process hub and a tether-agent child process on loopback: output throughput beside \`cat\` and a socat relay of the same shape, round trips, the wire bytes of each message |
| buildbot | builds through a real Buildbot 3.7 master, Tether (tether-agent → tether-master) against buildbot-worker (msgpack), alternating: time, wire bytes, memory of both workers |
| memory | the agent's VmRSS idle and streaming, for \`node bin/tether-agent.js\` and the single binary, and what a paused session holds while the link is cut |
| scale | one hub (its own process) with many agents streaming at once: its memory and CPU, and whether every log arrives exact |
| serial | goodput and the latency of a short line through the line simulator (socat ptys at baud / 10 bytes per second, no noise) |
| noise | an upload over a simulated line with bit errors and dropped bytes, beside the best fixed frame size's bound; a full run also builds over clean and noisy lines |
| hostile | authenticated peers that flood a hub in its own process: its memory, and why it dropped them |
`;

/** What the run was, and how far its figures go. */
function runNote(r: Results, skipped: Section[]): string {
  const m = r.meta.machine;
  const lines = [
    '## This run\n',
    `Measured ${r.meta.date.slice(0, 10)} with \`${r.meta.command}\` (${duration(r.meta.durationS)}) on ${m.cores} cores ` +
      `(${m.cpu}), ${m.memoryGB} GB, Node ${m.node}, ${m.kernel} ` +
      `(load average ${m.loadBefore[0]} before, ${m.loadAfter[0]} after). Ratios, each from one run with A and B alternating, ` +
      'say more than the absolute figures.',
  ];
  if (r.meta.quick) {
    lines.push(
      '\n**These are quick-run figures** (`--quick`: small sizes, few repetitions, on a shared machine): they show the ' +
        'shape, not the goals\' sizes. A full `npm run bench` replaces this page.',
    );
  }
  if (skipped.length > 0) lines.push(`\nNot run: ${skipped.join(', ')}.`);
  const failed = Object.keys(r.errors);
  if (failed.length > 0) lines.push(`\nFailed: ${failed.join(', ')} (the errors are in the results file).`);
  return `${lines.join('\n')}\n`;
}

function buildbotTables(r: Results, out: string[]): void {
  const bb = r.buildbot;
  if (!bb) return;
  out.push('## Through Buildbot\n');
  if (!bb.available) {
    out.push(`Not available: ${bb.reason}.\n`);
    return;
  }
  out.push(
    'Through a real Buildbot 3.7 master, Tether (tether-agent → tether-master) against buildbot-worker (msgpack). ' +
      'Each build first runs once on each worker, and the medians leave that run out: it pays what only a first run pays, for Tether ' +
      `V8 compiling the code the build runs for the first time (its times are in the last column). Then ${bb.scenarios[0]?.reps} pairs, taking turns at going first; ` +
      "the time ratio is the median of each pair's:\n",
  );
  const first = (s: (typeof bb.scenarios)[number]) => (s.tetherFirstS === undefined ? '-' : `${s.tetherFirstS} / ${s.buildbotFirstS}`);
  const rows: Cell[][] = bb.scenarios.map((s) => [s.name, s.tetherS, s.buildbotS, s.ratio, s.tetherBytes, s.buildbotBytes, s.byteRatio, first(s)]);
  rows.push([`e2e build (${bb.e2e.steps} ordinary steps, once)`, bb.e2e.tetherS, bb.e2e.buildbotS, Math.round((bb.e2e.tetherS / bb.e2e.buildbotS) * 100) / 100, bb.e2e.tetherBytes, bb.e2e.buildbotBytes, bb.e2e.byteRatio, '-']);
  out.push(table(['build', 'Tether s', 'buildbot-worker s', 'time ratio', 'Tether bytes', 'msgpack bytes', 'byte ratio', 'first build, left out: Tether / buildbot-worker s'], rows));
  out.push(
    `\nBytes: both directions of the agent ↔ tether-master link and of the buildbot-worker ↔ master link. Of the e2e build's bytes, ` +
      `${bb.e2e.tetherWire.payload} are output and file data on both; the rest is ${bb.e2e.tetherOverhead} bytes for Tether and ` +
      `${bb.e2e.buildbotOverhead} for msgpack (${bb.e2e.overheadRatio}×). With \`tether-master --compress always\` (deflate on TCP too; ` +
      `by default only on serial lines) the same frames come to ${bb.e2e.tetherWithDeflate} bytes (${bb.e2e.byteRatioWithDeflate}× msgpack's).\n`,
  );
}

function protocolTable(r: Results, out: string[]): void {
  const p = r.protocol;
  if (!p) return;
  const t = p.throughput;
  const stat = p.roundTrip.find((x) => x.command.startsWith('stat'));
  const sh = p.roundTrip.find((x) => x.command.startsWith('shell'));
  const local = p.roundTrip.find((x) => x.command.startsWith('local'));
  out.push('## The protocol without Buildbot\n');
  out.push('A hub in-process, tether-agent as a child process, loopback:\n');
  const rows: Cell[][] = [
    [`output agent → hub (${t.bytes / MB} MB to stdout)`, `${t.tetherMBps} MB/s`, `the same piped into \`cat > /dev/null\`: ${t.catMBps} MB/s (Tether ${t.ratio}×)`],
  ];
  if (t.relayMBps !== undefined) {
    rows.push(['the same bytes through a relay of that shape', '', `command → \`socat\` → TCP → \`socat\` → /dev/null: ${t.relayMBps} MB/s (Tether ${t.relayRatio}×)`]);
  }
  if (t.nodeHmacRelayMBps !== undefined) {
    rows.push([
      'the same relay in Node (bench/node-relay.ts), from its first byte',
      `${t.nodeRelayMBps} MB/s; ${t.nodeHmacRelayMBps} MB/s with HMAC-SHA256 over every byte at both ends`,
      `of the socat relay: ${round(t.nodeRelayMBps / t.relayMBps)}× and ${round(t.nodeHmacRelayMBps / t.relayMBps)}×, a bound on any design in Node, without and with every byte authenticated`,
    ]);
  }
  if (t.nodeFramedRelayMBps !== undefined) {
    rows.push([
      'the same Node relay in Tether frames of 64 KiB',
      `${t.nodeFramedRelayMBps} MB/s: tag, CRC-32C and COBS by Tether's framing code, read back and checked`,
      `of the socat relay: ${round(t.nodeFramedRelayMBps / t.relayMBps)}×: the framing without the rest of the protocol, a reference, not a bound (Tether ${round(t.tetherMBps / t.nodeFramedRelayMBps)}× of it)`,
    ]);
  }
  if (t.agentCpuMsPerMB !== undefined) {
    rows.push(['CPU (user + system) per MB of that output', `agent ${t.agentCpuMsPerMB} ms, hub ${t.hubCpuMsPerMB} ms`, 'they share the cores with the command: their sum bounds the rate']);
  }
  if (stat) rows.push([`round trip of \`stat\` (${stat.runs} runs)`, `median ${stat.medianMs} ms, p99 ${stat.p99Ms} ms`, '']);
  if (sh && local) rows.push([`round trip of shell \`true\` (${sh.runs} runs)`, `median ${sh.medianMs} ms, p99 ${sh.p99Ms} ms`, `spawning \`true\` here: median ${local.medianMs} ms`]);
  const out80 = p.messages.find((x) => x.message.startsWith('output 80'));
  const ack = p.messages.find((x) => x.message === 'ACK');
  const start = p.messages.find((x) => x.message.startsWith('START'));
  if (out80 && ack && start) {
    rows.push(['wire bytes per message', `an 80-byte output line: ${out80.frame}; ACK: ${ack.frame}; ShellCommand START: ${start.frame}`, 'all types: bench/results.json']);
  }
  out.push(table(['', 'Tether', 'beside it'], rows));
  out.push('');
}

function memoryTables(r: Results, out: string[]): void {
  const mem = r.memory;
  const bb = r.buildbot && r.buildbot.available ? r.buildbot : undefined;
  if (!mem && !bb) return;
  out.push('## Memory\n');
  out.push('Of the agent process, VmRSS (USS, its private memory, in brackets; VmRSS counts the ~39 MB of the `node` executable every Node process maps):\n');
  const rows: Cell[][] = (mem?.agents ?? []).map((a) => [a.variant, `${a.idleMB} (${a.idleUssMB})`, `${a.streamingMB} (${a.streamingUssMB})`]);
  if (mem && !mem.binary.present) rows.push(['single binary', 'not built', '']);
  if (bb) {
    rows.push(['tether-agent under Buildbot', `${bb.memory.tetherIdleMB} (${bb.memory.tetherIdleUssMB})`, `${bb.memory.tetherStreamingMB} (${bb.memory.tetherStreamingUssMB})`]);
    rows.push(['buildbot-worker under Buildbot', `${bb.memory.buildbotIdleMB} (${bb.memory.buildbotIdleUssMB})`, `${bb.memory.buildbotStreamingMB} (${bb.memory.buildbotStreamingUssMB})`]);
  }
  const streamed = mem?.agents[0]?.streamedBytes ?? bb?.memory.streamedBytes ?? 0;
  out.push(table(['agent', 'idle MB', `streaming ${streamed / MB} MB, peak MB`], rows));
  for (const b of mem?.backlog ?? []) {
    out.push(
      `\nA paused session, ${b.variant}: the link cut while a command wrote ${b.backlogBytes / MiB} MiB, ${b.beforeMB} → ${b.afterMB} MB ` +
        `(${b.heldMB} MB held); every byte arrived after the link came back: ${b.exact ? 'yes' : 'NO'}.`,
    );
  }
  out.push('');
}

function scaleNote(r: Results, out: string[]): void {
  const s = r.scale;
  if (!s) return;
  out.push('## Scale\n');
  out.push(
    `One hub with ${s.agents} agents connected over loopback, each streaming ${s.bytesPerAgent / MiB} MiB at once: hub RSS ` +
      `${s.connectedRssMB} MB connected, ${s.streamingRssPeakMB} MB at its peak; ${s.streamCpuMs} ms of hub CPU for ` +
      `${Math.round((s.agents * s.bytesPerAgent) / MB)} MB in ${s.streamWallMs} ms; ${s.exact} of ${s.agents} logs exact.\n`,
  );
}

function serialTables(r: Results, out: string[]): void {
  const se = r.serial;
  if (!se) return;
  out.push('## Serial lines\n');
  if (!se.available) {
    out.push(`Not available (${se.reason}).\n`);
    return;
  }
  out.push('Goodput through the line simulator (socat ptys, no noise), payload bytes per second and × the line rate (baud / 10):\n');
  const bauds = [...new Set(se.rows.map((x) => x.baud))];
  const cell = (baud: number, mode: string) => {
    const x = se.rows.find((y) => y.baud === baud && y.mode === mode);
    return x ? `${x.goodput} (${x.ofLine}×)` : '-';
  };
  out.push(table(
    ['baud', 'line B/s', 'random bytes, deflate', 'random bytes, no compression', 'build log, deflate', 'build log, no compression'],
    bauds.map((b) => [b, b / 10, cell(b, 'raw'), cell(b, 'raw-plain'), cell(b, 'text'), cell(b, 'text-plain')]),
  ));
  out.push('\nA short line printed on the agent (a shell printing `date +%s%N` every 0.2 s), from its printing to the hub:\n');
  out.push(table(
    ['baud', 'lines', 'median ms', 'worst ms', 'its frame on the line'],
    se.latency.map((l) => [l.baud, l.lines, l.medianMs, l.maxMs, `${l.frameBytes} bytes, ${l.lineMs} ms`]),
  ));
  out.push('');
}

function noiseTables(r: Results, out: string[]): void {
  const n = r.noise;
  if (!n) return;
  out.push('## Serial lines with noise\n');
  out.push(
    'An upload (agent → hub) of random bytes over the line simulator at 115200 baud, bit errors and dropped bytes both ways; ' +
      'beside it, the bound of the best fixed frame size (the frames that survive the noise times their payload share, ' +
      'with no cost for sending again): what a sender that knew the noise could reach. Details: [serial.md](serial.md#noise).\n',
  );
  out.push(table(
    ['bit-error rate', 'bytes dropped', 'line', 'goodput B/s', '× line rate', 'bound: best fixed frame', 'byte-exact'],
    n.rows.map((x) => [
      x.bitErrorRate === 0 ? '0' : x.bitErrorRate.toExponential(), `${x.dropRate * 100} %`, x.unlimited ? 'no rate limit' : '115200 baud', x.goodput, x.ofLine,
      `${x.bound}× (${x.boundFrame}-byte frames)`, x.exact ? 'yes' : 'NO',
    ]),
  ));
  if (n.builds.length > 0) {
    out.push('\nA Buildbot build of ordinary steps (git, shell, a 4 MiB log, a 300 KB upload, a directory upload, a download) over the line:\n');
    out.push(table(
      ['line', 'seconds', 'of clean', 'result', 'byte-exact'],
      n.builds.map((b) => [b.line, b.seconds, Math.round((b.seconds / n.builds[0].seconds) * 100) / 100, b.result, b.exact ? 'yes' : 'NO']),
    ));
  }
  out.push('');
}

function hostileTable(r: Results, out: string[]): void {
  if (!r.hostile) return;
  out.push('## Hostile peers\n');
  out.push('Authenticated agents that flood a hub in its own process over loopback; its RSS before, at the peak and after, and why it dropped them:\n');
  out.push(table(
    ['attack', 'sent MiB', 'hub RSS before MB', 'peak MB', 'after MB', 'heap in use after, MB', 'dropped because'],
    r.hostile.map((x) => [x.attack, x.sentMiB, x.rssBeforeMB, x.rssPeakMB, x.rssAfterMB, x.heapAfterMB, x.outcome]),
  ));
  out.push('');
}

/** The whole page for a run; `sections` are all the bench has, to name those the run left out. */
export function performancePage(r: Results, sections: readonly Section[]): string {
  const skipped = sections.filter((s) => !r.meta.sections.includes(s));
  const out: string[] = [INTRO, runNote(r, skipped)];
  for (const tables of [buildbotTables, protocolTable, memoryTables, scaleNote, serialTables, noiseTables, hostileTable]) tables(r, out);
  out.push(`## Goals${r.meta.quick ? ' (quick run: smaller sizes than the goals name)' : ''}\n`);
  out.push(table(['goal', 'target', 'measured', 'met'], r.goals.map((g) => [g.goal, g.target, g.measured, yesNo(g.met)])));
  return `${out.join('\n')}\n`;
}
