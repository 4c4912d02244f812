/** The results as Markdown tables: what `npm run bench` prints (docs/performance.md is bench/performance-page.ts's). */
import { MB, MiB, type Cell, round, table } from './lib';
import type { Results } from './run';

const mb = (bytes: number) => Math.round((bytes / MB) * 100) / 100;

export function report(r: Results): string {
  const out: string[] = [];
  const m = r.meta.machine;
  out.push(`# Tether benchmarks${r.meta.quick ? ' (quick)' : ''}\n`);
  out.push(
    `${r.meta.date}, ${r.meta.durationS} s: ${m.cores} cores, ${m.cpu}, ${m.memoryGB} GB, Node ${m.node}, ${m.kernel}; ` +
      `load average ${m.loadBefore.join(' ')} before, ${m.loadAfter.join(' ')} after.\n`,
  );

  const bb = r.buildbot;
  out.push('## Through Buildbot 3.7: Tether (tether-agent + tether-master) against buildbot-worker (msgpack)\n');
  if (!bb) out.push(r.errors.buildbot ? `failed: ${r.errors.buildbot.split('\n')[0]}\n` : 'not run\n');
  else if (!bb.available) out.push(`not available: ${bb.reason}\n`);
  else {
    const rows: Cell[][] = bb.scenarios.map((s) => [
      s.name, s.tetherS, s.buildbotS, s.ratio, s.name === 'empty build' ? '-' : s.netRatio, s.tetherBytes, s.buildbotBytes, s.byteRatio,
    ]);
    rows.push([`e2e build (${bb.e2e.steps} steps, once)`, bb.e2e.tetherS, bb.e2e.buildbotS, Math.round((bb.e2e.tetherS / bb.e2e.buildbotS) * 1000) / 1000, '-', bb.e2e.tetherBytes, bb.e2e.buildbotBytes, bb.e2e.byteRatio]);
    out.push(table(['build', 'Tether s', 'buildbot-worker s', 'time ratio', 'net ratio', 'Tether wire bytes', 'msgpack wire bytes', 'byte ratio'], rows));
    out.push(
      `\nMedians of ${bb.scenarios[0]?.reps ?? 0} builds each, after a first build each that they leave out, in pairs taking turns at going first; time ratio = median of each pair's ratio; net = less each worker's empty build. ` +
        "Wire bytes: both directions of the agent ↔ tether-master link, and of the buildbot-worker ↔ master link.\n",
    );
    const perMB = (x: (typeof bb.scenarios)[number]) => (x.payloadMB ? `${x.tetherMasterCpuSPerMB} / ${x.buildbotMasterCpuSPerMB}` : '-');
    const sent = (l: (typeof bb.scenarios)[number]['tetherMasterLink']) => `${l.workerMessages} × ${Math.round(l.workerBytes / Math.max(1, l.workerMessages))}`;
    out.push(table(
      ['build: CPU ms (median)', 'master (Tether)', 'tether-master', 'tether-agent', 'master (buildbot-worker)', 'buildbot-worker', "master's CPU s per MB: Tether / buildbot-worker",
        "master's msgpack port: Tether msgs / bytes", 'buildbot-worker msgs / bytes', 'sent to the master: Tether msgs × mean bytes', 'buildbot-worker'],
      bb.scenarios.map((x) => [
        x.name, x.tetherCpu.master, x.tetherCpu.bridge, x.tetherCpu.worker, x.buildbotCpu.master, x.buildbotCpu.worker, perMB(x),
        `${x.tetherMasterLink.messages} / ${x.tetherMasterLink.bytes}`, `${x.buildbotMasterLink.messages} / ${x.buildbotMasterLink.bytes}`,
        sent(x.tetherMasterLink), sent(x.buildbotMasterLink),
      ]),
    ));
    out.push(
      '\nCPU time (user + system, /proc/PID/stat) each process used during the build; the master\'s includes its REST API answering the polls. ' +
        "The master's msgpack port: WebSocket messages (both ways) and bytes Buildbot exchanged with tether-master, and with buildbot-worker; " +
        'sent to the master: the messages from the worker side (nearly all of them updates or file writes) and their mean size.\n',
    );
    const e = bb.e2e;
    out.push(`Where the e2e build's ${e.tetherBytes} bytes on Tether's link go (decoded from the relay):\n`);
    out.push(table(['message', 'frames', 'wire bytes', 'payload bytes'], Object.entries(e.tetherWire.byType).map(([type, t]) => [type, t.frames, t.bytes, t.payload])));
    out.push(
      `\nPayload (output, file data) ${e.tetherWire.payload} bytes, the same on both links; the rest: Tether ${e.tetherOverhead}, ` +
        `msgpack ${e.buildbotOverhead} (${e.overheadRatio}×). With \`tether-master --compress always\` (the same bodies through ` +
        `wire/compression.ts at the level used on TCP) Tether's link carries ${e.tetherWithDeflate} bytes, ${e.byteRatioWithDeflate}× msgpack's.\n`,
    );
  }

  const p = r.protocol;
  out.push('## The protocol without Buildbot (in-process hub, tether-agent child process, loopback)\n');
  if (!p) out.push(r.errors.protocol ? `failed: ${r.errors.protocol.split('\n')[0]}\n` : 'not run\n');
  else {
    const t = p.throughput;
    out.push(table(
      ['agent → hub, a command writing to stdout', 'Tether MB/s', 'cat MB/s', 'ratio', 'socat relay MB/s', 'ratio', 'Node relay MB/s', 'with HMAC', 'in Tether frames', 'CPU ms/MB agent', 'hub'],
      [[
        `${mb(t.bytes)} MB of 64-byte lines (median of ${t.reps})`, t.tetherMBps, t.catMBps, t.ratio, t.relayMBps ?? '-', t.relayRatio ?? '-',
        t.nodeRelayMBps ?? '-', t.nodeHmacRelayMBps ?? '-', t.nodeFramedRelayMBps ?? '-', t.agentCpuMsPerMB ?? '-', t.hubCpuMsPerMB ?? '-',
      ]],
    ));
    out.push('');
    out.push(table(['round trip', 'runs', 'median ms', 'p99 ms', 'mean ms'], p.roundTrip.map((x) => [x.command, x.runs, x.medianMs, x.p99Ms, x.meanMs])));
    out.push('');
    out.push(table(['message', 'payload', 'body bytes', 'frame bytes', 'frame − payload'], p.messages.map((x) => [x.message, x.payload, x.body, x.frame, x.overhead])));
    out.push(
      '\nThe socat relay carries the same bytes through a path of Tether\'s shape: the command → one relay process → TCP → one process → /dev/null ' +
        '(`cmd | socat -u STDIN TCP:...` into `socat -u TCP-LISTEN:... OPEN:/dev/null`). The Node relay is the same path in Node ' +
        '(bench/node-relay.ts), timed from its first byte: plain, with HMAC-SHA256 over every chunk at both ends, and with every chunk ' +
        'one authenticated Tether frame through Tether\'s own framing code: what any Node design costs at the least, with every byte ' +
        'authenticated, and in Tether\'s wire format.\n',
    );
    out.push('\nFrame = body + 2-byte number + 8-byte tag + CRC-32C, COBS-encoded, + the 0x00 delimiter (handshake frames: body + CRC); sequenced frames at sequence number 1000.\n');
  }

  const mem = r.memory;
  out.push('## Memory (VmRSS of the agent process)\n');
  if (!mem && !(bb && bb.available)) out.push(r.errors.memory ? `failed: ${r.errors.memory.split('\n')[0]}\n` : 'not run\n');
  else {
    const rows: Cell[][] = (mem?.agents ?? []).map((a) => [
      `${a.variant}, in-process hub`, a.idleMB, a.idleUssMB, a.streamingMB, a.streamingUssMB, `${mb(a.streamedBytes)} MB at ${a.streamMBps} MB/s`,
    ]);
    if (mem && !mem.binary.present) rows.push([`single binary: ${mem.binary.path} not built (npm run build:binary)`, null, null, null, null, '']);
    if (bb && bb.available) {
      const bm = bb.memory;
      rows.push([`tether-agent (node), through Buildbot`, bm.tetherIdleMB, bm.tetherIdleUssMB, bm.tetherStreamingMB, bm.tetherStreamingUssMB, `${mb(bm.streamedBytes)} MB log`]);
      rows.push([`buildbot-worker, through Buildbot`, bm.buildbotIdleMB, bm.buildbotIdleUssMB, bm.buildbotStreamingMB, bm.buildbotStreamingUssMB, `${mb(bm.streamedBytes)} MB log`]);
      rows.push([`(tether-master, on the master's side)`, bm.bridgeIdleMB, null, bm.bridgeStreamingMB, null, `${mb(bm.streamedBytes)} MB log`]);
    }
    out.push(table(['process', 'idle RSS MB', 'idle USS MB', 'streaming RSS MB (peak)', 'streaming USS MB (peak)', 'streamed'], rows));
    out.push('\nRSS = VmRSS; USS = private memory (smaps_rollup Private_*), without the pages of the executable and libraries that every process running them shares.\n');
    if (mem) {
      out.push(table(
        ['paused session (link cut, hub grace long)', 'backlog', 'RSS before MB', 'RSS after MB', 'held MB', 'USS before → after MB', 'all bytes after resume', 'resume ms'],
        mem.backlog.map((b) => [
          b.variant, `${b.backlogBytes / MiB} MiB`, b.beforeMB, b.afterMB, b.heldMB, `${b.beforeUssMB} → ${b.afterUssMB}`, b.exact ? 'yes, exact' : 'NO', b.resumeMs,
        ]),
      ));
      out.push('\nresume ms: from the relay listening again to the result, including the agent\'s reconnect backoff.');
    }
    out.push('');
  }

  const s = r.scale;
  out.push('## Scale: one hub (own process), agents in-process over loopback, all streaming at once\n');
  if (!s) out.push(r.errors.scale ? `failed: ${r.errors.scale.split('\n')[0]}\n` : 'not run\n');
  else {
    out.push(table(
      ['agents', 'log each', 'hub RSS connected MB', 'hub RSS peak MB', 'hub CPU ms (user+sys)', 'wall ms', 'aggregate MB/s', 'exact logs'],
      [[s.agents, `${s.bytesPerAgent / MiB} MiB`, s.connectedRssMB, s.streamingRssPeakMB, `${s.streamCpuMs} (${s.streamUserMs}+${s.streamSystemMs})`, s.streamWallMs, s.aggregateMBps, `${s.exact}/${s.agents}`]],
    ));
    out.push('');
  }

  const SERIAL_MODE_NAMES = {
    raw: 'random bytes, deflate', 'raw-plain': 'random bytes, no compression', text: 'build log, deflate', 'text-plain': 'build log, no compression',
  } as const;
  const se = r.serial;
  out.push('## Serial goodput (line simulator, socat ptys, no noise)\n');
  if (!se) out.push(r.errors.serial ? `failed: ${r.errors.serial.split('\n')[0]}\n` : 'not run\n');
  else if (!se.available) out.push(`serial: not available (${se.reason})\n`);
  else {
    out.push(table(
      ['baud', 'line B/s', 'payload', 'goodput B/s', '× line rate', 'with command overhead B/s', 'bytes', 'deflate alone', 'line bytes / payload byte', 'line busy', 'frames dropped / taken'],
      se.rows.map((x) => [
        x.baud, x.lineBytesPerSecond, SERIAL_MODE_NAMES[x.mode],
        x.goodput, x.ofLine, x.withOverhead, x.bytes, `${x.deflateRatio}×`, x.wirePerPayload, x.lineBusy, `${x.framesDropped} / ${x.framesIn}`,
      ]),
    ));
    out.push(
      '\nGoodput = (S − s) / (T − t) for `cat` of a big and a 16-byte file: the steady rate without the per-command cost. ' +
        'Line bytes / payload byte: what went agent → master on the line during the big file; line busy: that against what the line could carry in the time; ' +
          'frames dropped: by the hub as out of sequence, which on this noise-free line means frames the agent sent again.\n',
    );
    out.push('Latency of a short line (a shell printing `date +%s%N` every 0.2 s), from its printing to the hub:\n');
    out.push(table(
      ['baud', 'lines', 'median ms', 'worst ms', 'frame bytes', 'frame line time ms'],
      se.latency.map((l) => [l.baud, l.lines, l.medianMs, l.maxMs, l.frameBytes, l.lineMs]),
    ));
  }
  const n = r.noise;
  out.push('## Serial lines with noise (line simulator, 115200 baud, both directions)\n');
  if (!n) out.push(r.errors.noise ? `failed: ${r.errors.noise.split('\n')[0]}\n` : 'not run\n');
  else {
    out.push(table(
      ['bit-error rate', 'bytes dropped', 'line', 'upload goodput B/s', '× line rate', 'bound: best fixed frame', 'seconds', 'frames held', 'byte-exact'],
      n.rows.map((x) => [
        x.bitErrorRate, x.dropRate, x.unlimited ? 'no rate limit' : '115200', x.goodput, x.ofLine,
        `${x.bound} (${x.boundFrame}-byte frames)`, x.seconds, x.held, x.exact ? 'yes' : 'NO',
      ]),
    ));
    out.push(
      '\nAn upload_file of random bytes, agent → hub. × line rate: payload against 11 520 B/s. Bound: the share of frames of the best ' +
        'fixed size that survive the noise, times their payload share (no retransmission cost, no ACKs): what a sender that knew the noise could reach.\n',
    );
    if (n.builds.length > 0) {
      out.push(table(
        ['a build of ordinary steps over a line', 'seconds', 'of clean', 'result', 'byte-exact'],
        n.builds.map((b) => [b.line, b.seconds, round(b.seconds / n.builds[0].seconds, 2), b.result, b.exact ? 'yes' : 'NO']),
      ));
    }
  }
  out.push('## Hostile peers (authenticated, against real tether-master processes)\n');
  if (!r.hostile) out.push(r.errors.hostile ? `failed: ${r.errors.hostile.split('\n')[0]}\n` : 'not run\n');
  else {
    out.push(table(
      ['attack', 'sent MiB', 'hub RSS before MB', 'peak MB', 'after MB', 'heap in use after, MB', 'seconds', 'outcome'],
      r.hostile.map((x) => [x.attack, x.sentMiB, x.rssBeforeMB, x.rssPeakMB, x.rssAfterMB, x.heapAfterMB, x.seconds, x.outcome]),
    ));
  }
  for (const [section, error] of Object.entries(r.errors)) out.push(`**${section} failed**: ${error.split('\n')[0]}\n`);
  return out.join('\n');
}
