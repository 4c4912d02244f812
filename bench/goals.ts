/** The goals of the benchmark issue, checked against a run's results. */
import type { Results } from './run';
import { round } from './lib';
import { NOISY } from './noise';

export interface Goal {
  goal: string;
  target: string;
  measured: string;
  value: number | null;
  /** null: not measured in this run. */
  met: boolean | null;
  /** The profile scenario (bench/profile.ts) that explains a miss, if there is one. */
  profile?: string;
}

const fmt = (x: number, digits = 2) => (Number.isFinite(x) ? String(Math.round(x * 10 ** digits) / 10 ** digits) : String(x));

function goal(name: string, target: string, value: number | undefined, ok: (v: number) => boolean, unit = '', profile?: string): Goal {
  if (value === undefined || !Number.isFinite(value)) return { goal: name, target, measured: 'not measured', value: null, met: null, profile };
  return { goal: name, target, measured: `${fmt(value)}${unit}`, value, met: ok(value), profile };
}

export function evaluateGoals(r: Results): Goal[] {
  const goals: Goal[] = [];
  const bb = r.buildbot && r.buildbot.available ? r.buildbot : undefined;
  const scenario = (prefix: RegExp) => bb?.scenarios.find((s) => prefix.test(s.name));
  for (const [label, re] of [
    ['trivial steps', /trivial steps$/],
    ['log', /MB log$/],
    ['FileUpload', /FileUpload$/],
    ['FileDownload', /FileDownload$/],
  ] as const) {
    const s = scenario(re);
    // what the master spends on the same bytes from each side, beside the time
    const cpu = s?.payloadMB ? `× (master CPU ${s.tetherMasterCpuSPerMB} / ${s.buildbotMasterCpuSPerMB} s per MB)` : '×';
    goals.push(goal(`Buildbot time ratio, ${s?.name ?? label} (Tether / buildbot-worker${s ? `, median of ${s.reps} alternating` : ''})`, '≤ 1.0', s?.ratio, (v) => v <= 1.0, cpu));
  }
  // Beside it, how much of it is output and file data, which both carry as they are, and what the rest comes to.
  const e2e = bb?.e2e;
  const share = e2e ? `× (output and file data ${Math.round((e2e.tetherWire.payload / e2e.tetherBytes) * 100)} % of it; the rest ${e2e.overheadRatio}× msgpack's)` : '×';
  goals.push(goal('wire bytes of the e2e build, Tether / msgpack', '≤ 0.60', e2e?.byteRatio, (v) => v <= 0.6, share));
  goals.push(goal('wire bytes of the e2e build with --compress always, Tether / msgpack', '≤ 0.60', bb?.e2e.byteRatioWithDeflate, (v) => v <= 0.6, '×'));
  const p = r.protocol;
  goals.push(goal('agent → plugin throughput, Tether / cat', '≥ 0.80', p?.throughput.ratio, (v) => v >= 0.8, '×', 'throughput'));
  // Beside it, what authenticating every byte allows in Node at all, before any framing (bench/node-relay.ts 'hmac').
  const hmac = p?.throughput.nodeHmacRelayMBps ? `× (HMAC-SHA256 alone, in Node: ${round(p.throughput.nodeHmacRelayMBps / p.throughput.relayMBps)}×)` : '×';
  goals.push(goal('agent → plugin throughput, Tether / a socat relay of the same shape', '≥ 0.80', p?.throughput.relayRatio, (v) => v >= 0.8, hmac, 'throughput'));
  const stat = p?.roundTrip.find((x) => x.command.startsWith('stat'));
  goals.push(goal('trivial command round trip (stat), median', '≤ 2 ms', stat?.medianMs, (v) => v <= 2, ' ms', 'roundtrip'));
  for (const a of r.memory?.agents ?? []) {
    goals.push(goal(`agent RSS idle, ${a.variant}`, '≤ 45 MB', a.idleMB, (v) => v <= 45, ' MB', 'memory'));
    goals.push(goal(`agent RSS streaming ${a.streamedBytes / 1e6} MB, ${a.variant}`, '≤ 80 MB', a.streamingMB, (v) => v <= 80, ' MB', 'memory'));
  }
  if (!r.memory) {
    goals.push(goal('agent RSS idle', '≤ 45 MB', undefined, () => false));
    goals.push(goal('agent RSS streaming', '≤ 80 MB', undefined, () => false));
  }
  const noise = r.noise;
  const noisy = noise?.rows.find((x) => !x.unlimited && x.bitErrorRate === NOISY.bitErrorRate && x.dropRate === NOISY.dropRate);
  const unlimited = noise?.rows.find((x) => x.unlimited && x.bitErrorRate === NOISY.bitErrorRate && x.dropRate === NOISY.dropRate);
  goals.push(goal('serial upload at 115200 baud, bit-error rate 1e-5, 0.1 % bytes dropped, of line rate', '≥ 0.60', noisy?.ofLine, (v) => v >= 0.6, '×'));
  goals.push(goal('the same noise on a line with no rate limit: upload time, of 115200\'s', '≤ 1.0', unlimited && noisy ? unlimited.seconds / noisy.seconds : undefined, (v) => v <= 1, '×'));
  const build = (line: string) => noise?.builds.find((b) => b.line === line);
  const clean = build('clean');
  const noisyBuild = build('noisy');
  const fastBuild = build('noisy, no rate limit');
  goals.push(goal('a build of ordinary steps over a noisy 115200 line, of the clean line\'s time (byte-exact)', '≤ 1.6',
    clean && noisyBuild && noisyBuild.exact ? noisyBuild.seconds / clean.seconds : undefined, (v) => v <= 1.6, '×'));
  goals.push(goal('the same build with no rate limit, of the noisy 115200 line\'s time (byte-exact)', '≤ 1.0',
    noisyBuild && fastBuild && fastBuild.exact ? fastBuild.seconds / noisyBuild.seconds : undefined, (v) => v <= 1, '×'));
  const s = r.scale;
  goals.push(goal(`${s?.agents ?? 200} agents streaming at once: hub RSS (peak)`, '≤ 400 MB', s?.streamingRssPeakMB, (v) => v <= 400, ' MB'));
  goals.push(goal(`${s?.agents ?? 200} agents: every log exact`, 'all', s ? s.exact : undefined, (v) => v === s?.agents && !!s?.allExact, ` of ${s?.agents ?? 200}`));
  const serial = r.serial && r.serial.available ? r.serial.rows : undefined;
  const raw = serial?.find((x) => x.baud === 115200 && x.mode === 'raw');
  goals.push(goal('serial raw goodput at 115200 baud, of line rate', '≥ 0.95', raw?.ofLine, (v) => v >= 0.95, '×'));
  const text = serial?.filter((x) => x.mode === 'text');
  const worst = text && text.length > 0 ? text.reduce((a, b) => (b.ofLine < a.ofLine ? b : a)) : undefined;
  goals.push(goal(`serial compressed text goodput, of line rate (lowest: ${worst ? `${worst.baud} baud` : '-'})`, '≥ 3', worst?.ofLine, (v) => v >= 3, '×', 'serial'));
  // Incompressible output with deflate on against the same with it off, at the baud rate where it does worst.
  const vsPlain = (serial ?? []).filter((x) => x.mode === 'raw').map((x) => {
    const plain = serial!.find((y) => y.baud === x.baud && y.mode === 'raw-plain');
    return { baud: x.baud, ratio: plain ? x.goodput / plain.goodput : NaN };
  });
  const slowest = vsPlain.length > 0 ? vsPlain.reduce((a, b) => (b.ratio < a.ratio ? b : a)) : undefined;
  goals.push(goal(
    `serial random bytes with deflate on, of with it off (lowest: ${slowest ? `${slowest.baud} baud` : '-'})`,
    '≥ 0.98', slowest?.ratio, (v) => v >= 0.98, '×',
  ));
  const latency = r.serial && r.serial.available ? r.serial.latency.find((x) => x.baud === 115200) : undefined;
  goals.push(goal(
    `serial: a short line reaches the master at 115200 baud, worst of ${latency?.lines ?? 20}, less its ${latency?.lineMs ?? '-'} ms on the line`,
    '≤ 50 ms', latency ? latency.maxMs - latency.lineMs : undefined, (v) => v <= 50, ' ms',
  ));
  return goals;
}
