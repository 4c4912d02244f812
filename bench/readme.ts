/**
 * The condensed tables of a run for README.md's "## Performance" section:
 * npm run bench writes them to bench/results.md.
 */
import { type Cell, MB, MiB, table } from './lib';
import type { Results } from './run';

const yesNo = (met: boolean | null) => (met === null ? 'n/a' : met ? 'yes' : '**no**');

function duration(seconds: number): string {
  return seconds < 90 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

export function performanceSection(r: Results): string {
  const out: string[] = [];
  const m = r.meta.machine;
  out.push(
    `Measured ${r.meta.date.slice(0, 10)} with \`${r.meta.command}\` (${duration(r.meta.durationS)}) on ${m.cores} cores ` +
      `(${m.cpu}), ${m.memoryGB} GB, Node ${m.node}, ${m.kernel} ` +
      `(load average ${m.loadBefore[0]} before, ${m.loadAfter[0]} after): ratios, each from one run with A and B alternating, ` +
      `say more than the absolute figures.\n`,
  );
  const bb = r.buildbot && r.buildbot.available ? r.buildbot : undefined;
  if (bb) {
    out.push(`Through a real Buildbot 3.7 master, Tether (tether-agent → tether-master) against buildbot-worker (msgpack), median of ${bb.scenarios[0]?.reps} builds each:\n`);
    const rows: Cell[][] = bb.scenarios.map((s) => [s.name, s.tetherS, s.buildbotS, s.ratio, s.tetherBytes, s.buildbotBytes, s.byteRatio]);
    rows.push([`e2e build (${bb.e2e.steps} ordinary steps)`, bb.e2e.tetherS, bb.e2e.buildbotS, Math.round((bb.e2e.tetherS / bb.e2e.buildbotS) * 100) / 100, bb.e2e.tetherBytes, bb.e2e.buildbotBytes, bb.e2e.byteRatio]);
    out.push(table(['build', 'Tether s', 'buildbot-worker s', 'time ratio', 'Tether bytes', 'msgpack bytes', 'byte ratio'], rows));
    out.push(
      `\nBytes: both directions of the agent ↔ tether-master link and of the buildbot-worker ↔ master link. Of the e2e build's bytes, ` +
        `${bb.e2e.tetherWire.payload} are output and file data on both; the rest is ${bb.e2e.tetherOverhead} bytes for Tether and ` +
        `${bb.e2e.buildbotOverhead} for msgpack (${bb.e2e.overheadRatio}×). With \`tether-master --compress always\` (deflate on TCP too; ` +
        `by default only on serial lines) the same frames come to ${bb.e2e.tetherWithDeflate} bytes (${bb.e2e.byteRatioWithDeflate}× msgpack's).\n`,
    );
  }
  const p = r.protocol;
  if (p) {
    const stat = p.roundTrip.find((x) => x.command.startsWith('stat'));
    const sh = p.roundTrip.find((x) => x.command.startsWith('shell'));
    const local = p.roundTrip.find((x) => x.command.startsWith('local'));
    out.push('Without Buildbot (a hub in-process, tether-agent as a child process, loopback):\n');
    const rows: Cell[][] = [
      [`output agent → hub (${p.throughput.bytes / MB} MB to stdout)`, `${p.throughput.tetherMBps} MB/s`, `the same piped into \`cat > /dev/null\`: ${p.throughput.catMBps} MB/s (Tether ${p.throughput.ratio}×)`],
    ];
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
  const mem = r.memory;
  if (mem || bb) {
    out.push('Memory of the agent process, VmRSS (USS, its private memory, in brackets; VmRSS counts the ~39 MB of the `node` executable every Node process maps):\n');
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
  const s = r.scale;
  if (s) {
    out.push(
      `Scale: one hub with ${s.agents} agents connected over loopback, each streaming ${s.bytesPerAgent / MiB} MiB at once: hub RSS ` +
        `${s.connectedRssMB} MB connected, ${s.streamingRssPeakMB} MB at its peak; ${s.streamCpuMs} ms of hub CPU for ` +
        `${Math.round((s.agents * s.bytesPerAgent) / MB)} MB in ${s.streamWallMs} ms; ${s.exact} of ${s.agents} logs exact.\n`,
    );
  }
  const se = r.serial;
  if (se && se.available) {
    out.push('Serial goodput through the line simulator (socat ptys, no noise), payload bytes per second and × the line rate (baud / 10):\n');
    const bauds = [...new Set(se.rows.map((x) => x.baud))];
    const cell = (baud: number, mode: string) => {
      const x = se.rows.find((y) => y.baud === baud && y.mode === mode);
      return x ? `${x.goodput} (${x.ofLine}×)` : '-';
    };
    out.push(table(
      ['baud', 'line B/s', 'random bytes, deflate', 'random bytes, no compression', 'build log, deflate', 'build log, no compression'],
      bauds.map((b) => [b, b / 10, cell(b, 'raw'), cell(b, 'raw-plain'), cell(b, 'text'), cell(b, 'text-plain')]),
    ));
    out.push('');
    out.push('A short line printed on the agent (a shell printing `date +%s%N` every 0.2 s), from its printing to the hub:\n');
    out.push(table(
      ['baud', 'lines', 'median ms', 'worst ms', 'its frame on the line'],
      se.latency.map((l) => [l.baud, l.lines, l.medianMs, l.maxMs, `${l.frameBytes} bytes, ${l.lineMs} ms`]),
    ));
    out.push('');
  } else if (se) out.push(`Serial: not available (${se.reason}).\n`);
  out.push('Goals:\n');
  out.push(table(['goal', 'target', 'measured', 'met'], r.goals.map((g) => [g.goal, g.target, g.measured, yesNo(g.met)])));
  return `${out.join('\n')}\n`;
}
